"""Upstream checkpoint directory <-> standalone checkpoint directory, streaming.

Reads the upstream files directly (JSON + safetensors headers and bytes); never imports
transformers or qwen_tts, never unpickles. Everything that can be checked before writing is
checked first (config, headers, index, tensor accounting, shapes, dtypes). Tensors are then
converted one output tensor at a time: its source tensors are read, combined, cast and appended
to the output file, so peak memory is about three times the largest tensor. The output is
assembled in a temporary directory beside ``dst`` and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from q3tts.standalone.checkpoint import INDEX_NAME, WEIGHTS_NAME
from q3tts.standalone.config import FORMAT_NAME, ConfigError, Qwen3TTSConfig

from q3tts.standalone.codec import load_codec_config
from q3tts.standalone.speech_encoder import load_speech_encoder_config

from .layout import Entry, codec_plan, plan
from .stream_io import DTYPE_NAMES, SafetensorsWriter, StreamError, TensorInfo, plan_shards, read_header, read_tensor

CONVERTER_VERSION = "0.3.0"  # 0.3: the speech-tokenizer encoder is mapped, not carried

# Upstream files the runtime needs besides the weights, copied byte for byte when present.
SIDE_FILES = (
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "tokenizer.json",
    "preprocessor_config.json",
)
CODEC_DIR = "speech_tokenizer"
SIDE_DIRS = (CODEC_DIR,)
UPSTREAM_CONFIG_NAME = "upstream_config.json"
REPORT_NAME = "conversion-report.json"
MANIFEST_NAME = "manifest.json"


class ConversionError(ValueError):
    """Bad input to the converter; the message names the file, tensor or argument."""


@dataclass
class ConversionSummary:
    direction: str
    tensors_in: int
    tensors_out: int
    bytes_in: int
    bytes_out: int
    seconds: float
    dst: Path
    files: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # one line per source tensor (dry runs)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path}: missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return raw


def read_upstream_config(src: Path) -> Qwen3TTSConfig:
    raw = _load_json(src / "config.json")
    if raw.get("format") == FORMAT_NAME:
        raise ConversionError(f"{src} is already a standalone checkpoint (format {FORMAT_NAME}); refusing to convert it again")
    try:
        return Qwen3TTSConfig.from_upstream(raw)
    except (ConfigError, TypeError) as e:
        raise ConversionError(f"{src / 'config.json'}: {e}") from e


def read_standalone_config(src: Path) -> Qwen3TTSConfig:
    raw = _load_json(src / "config.json")
    if raw.get("format") != FORMAT_NAME:
        raise ConversionError(f"{src} is not a standalone checkpoint (config.json has no format {FORMAT_NAME!r})")
    try:
        return Qwen3TTSConfig.from_dict(raw)
    except ConfigError as e:
        raise ConversionError(f"{src / 'config.json'}: {e}") from e


class SourceWeights:
    """The tensors of a checkpoint directory, by name, from their headers; data read on demand."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.infos: dict[str, TensorInfo] = {}
        self.file_of: dict[str, str] = {}
        index = directory / INDEX_NAME
        if index.is_file():
            weight_map = _load_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{index}: no weight_map")
            files = sorted(set(weight_map.values()))
        elif (directory / WEIGHTS_NAME).is_file():
            weight_map, files = None, [WEIGHTS_NAME]
        else:
            pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            if pickles:
                raise ConversionError(
                    f"{directory}: only pickle weights ({', '.join(pickles)}); refused, because unpickling can run "
                    "arbitrary code. Convert them to safetensors with a trusted tool first."
                )
            raise ConversionError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}")
        for file in files:
            path = directory / file
            if not path.is_file():
                raise ConversionError(f"{index}: shard {file} is missing")
            try:
                infos, _ = read_header(path)
            except StreamError as e:
                raise ConversionError(str(e)) from e
            for name, info in infos.items():
                if name in self.infos:
                    raise ConversionError(f"{directory}: duplicate tensor {name} (in {self.file_of[name]} and {file})")
                self.infos[name] = info
                self.file_of[name] = file
        if weight_map is not None:
            for name, file in weight_map.items():
                if self.file_of.get(name) != file:
                    where = self.file_of.get(name, "no shard")
                    raise ConversionError(f"{index}: index puts {name} in {file}, but it is in {where}")
            unindexed = sorted(set(self.infos) - set(weight_map))
            if unindexed:
                raise ConversionError(f"{index}: tensor(s) {unindexed[:5]} are in the shards but not in the index")
        self.files = files
        self._handles: dict[str, object] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self._handles.values():
            h.close()

    def get(self, name: str) -> torch.Tensor:
        file = self.file_of[name]
        if file not in self._handles:
            self._handles[file] = open(self.directory / file, "rb")
        try:
            return read_tensor(self._handles[file], self.infos[name])
        except StreamError as e:
            raise ConversionError(str(e)) from e

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.infos.values())


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    inputs: tuple[str, ...]
    entry: Entry


def _check_accounting(source: SourceWeights, wanted: list[str], what: str) -> None:
    if len(set(wanted)) != len(wanted):
        raise AssertionError("layout plan consumes a source tensor twice")
    present = set(source.infos)
    missing = sorted(set(wanted) - present)
    extra = sorted(present - set(wanted))
    if missing:
        raise ConversionError(f"{source.directory}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        raise ConversionError(
            f"{source.directory}: unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} (not part of {what})"
        )


def plan_outputs(source: SourceWeights, entries: list[Entry], direction: str, dtype: torch.dtype | None,
                 what: str) -> list[OutputTensor]:
    """Validate every source tensor against the layout entries and list the output tensors."""
    outputs: list[OutputTensor] = []
    if direction == "standalone":
        _check_accounting(source, [s for e in entries for s in e.sources], what)
        for e in entries:
            dtypes = set()
            for name, shape in zip(e.sources, e.source_shapes):
                info = source.infos[name]
                if shape is not None and info.shape != shape:
                    raise ConversionError(f"{source.directory}: tensor {name} has shape {list(info.shape)}, the config implies {list(shape)}")
                dtypes.add(info.dtype)
            if len(dtypes) != 1:
                raise ConversionError(f"{source.directory}: tensors {list(e.sources)} mix dtypes {sorted(map(str, dtypes))}")
            target_shape = e.target_shape if e.target_shape is not None else source.infos[e.sources[0]].shape
            outputs.append(OutputTensor(e.target, _cast_dtype(dtypes.pop(), dtype), target_shape, e.sources, e))
    else:
        _check_accounting(source, [e.target for e in entries], what)
        for e in entries:
            info = source.infos[e.target]
            if e.target_shape is not None and info.shape != e.target_shape:
                raise ConversionError(f"{source.directory}: tensor {e.target} has shape {list(info.shape)}, the config implies {list(e.target_shape)}")
            out_dtype = _cast_dtype(info.dtype, dtype)
            for name, shape in zip(e.sources, e.source_shapes):
                outputs.append(OutputTensor(name, out_dtype, shape if shape is not None else info.shape, (e.target,), e))
    return outputs


def _cast_dtype(stored: torch.dtype, requested: torch.dtype | None) -> torch.dtype:
    return requested if requested is not None and stored.is_floating_point else stored


def _produce(outputs: list[OutputTensor], source: SourceWeights, direction: str) -> Iterator[tuple[OutputTensor, torch.Tensor]]:
    """Yield output tensors in order, reading each source tensor once."""
    if direction == "standalone":
        for out in outputs:
            parts = [source.get(n) for n in out.inputs]
            tensor = out.entry.to_standalone(parts).to(out.dtype)
            yield out, tensor
            del parts, tensor  # before the next read: one output tensor in memory at a time
    else:
        cached: dict[str, list[torch.Tensor]] = {}
        for out in outputs:
            key = out.inputs[0]
            if key not in cached:
                cached.clear()  # the previous entry's pieces are all written by now
                cached[key] = out.entry.to_upstream(source.get(key))
            piece = cached[key][out.entry.sources.index(out.name)].to(out.dtype)
            yield out, piece
            del piece


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_weights(tmp: Path, outputs: list[OutputTensor], source: SourceWeights, direction: str,
                   shard_bytes: int | None, progress: bool, hashes: dict[str, str]) -> list[str]:
    """Write the weight file(s); their sha256 (computed while writing) go into ``hashes``."""
    specs = [(o.name, o.dtype, o.shape) for o in outputs]
    shards = plan_shards(specs, shard_bytes)
    names = [WEIGHTS_NAME] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    shard_of = {}
    for file, idx in zip(names, shards):
        for i in idx:
            shard_of[i] = file
    total = sum(torch.empty((), dtype=o.dtype).element_size() * _numel(o.shape) for o in outputs)
    bar = _bar(total, progress)
    writers: dict[str, SafetensorsWriter] = {}
    # Standalone files name their producer (so they are never converted twice); files written
    # back in upstream's layout carry upstream's plain metadata.
    metadata = {"format": "pt"}
    if direction == "standalone":
        metadata["producer"] = f"q3tts.convert {CONVERTER_VERSION}"
    try:
        for file, idx in zip(names, shards):
            writers[file] = SafetensorsWriter(tmp / file, [specs[i] for i in idx], metadata=metadata)
        for i, (out, tensor) in enumerate(_produce(outputs, source, direction)):
            writers[shard_of[i]].write(out.name, tensor)
            bar.update(tensor.numel() * tensor.element_size())
            del tensor
        for w in writers.values():
            w.close()
    finally:
        bar.close()
    hashes.update({file: w.sha256.hexdigest() for file, w in writers.items()})
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": {o.name: shard_of[i] for i, o in enumerate(outputs)}}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return names


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="converting", disable=not enabled, leave=False)


def _copy_hashing(src: Path, dst: Path, chunk: int = 1 << 22) -> str:
    """Copy a file byte for byte and return its sha256, reading it once."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while block := fi.read(chunk):
            fo.write(block)
            h.update(block)
    shutil.copystat(src, dst)
    return h.hexdigest()


def _copy_side_files(src: Path, tmp: Path, hashes: dict[str, str], skip: set[str] = frozenset()) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file():
            hashes[name] = _copy_hashing(src / name, tmp / name)
    for name in SIDE_DIRS:
        if (src / name).is_dir():
            for p in sorted((src / name).rglob("*")):
                rel = p.relative_to(src)
                if rel.as_posix() in skip:
                    continue
                if p.is_dir():
                    (tmp / rel).mkdir(parents=True, exist_ok=True)
                elif p.is_file():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    hashes[rel.as_posix()] = _copy_hashing(p, tmp / rel)


def write_manifest(directory: Path, known: dict[str, str], source_hashes: dict[str, str]) -> None:
    """sha256 + size of every file in ``directory`` (``known`` hashes are reused, the rest are
    computed) and the sha256 of the source files."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"sha256": known.get(rel) or sha256_file(p), "size": p.stat().st_size}
    manifest = {
        "format": FORMAT_NAME,
        "converter_version": CONVERTER_VERSION,
        "upstream_version": upstream_version(),
        "files": files,
        "source_files": source_hashes,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def upstream_version() -> str | None:
    """The installed qwen-tts version, read from package metadata (never imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qwen-tts")
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    force: bool = False,
    shard_size: int | None = None,
    to: str = "standalone",
    dry_run: bool = False,
    progress: bool = False,
) -> ConversionSummary:
    """Convert ``src`` into ``dst``: upstream -> standalone (``to="standalone"``) or back
    (``to="upstream"``). ``dtype=None`` keeps stored dtypes; ``shard_size`` in bytes splits the
    weights into shards with an index. With ``dry_run`` nothing is written and the summary's
    ``plan`` lists every source tensor -> target."""
    t0 = time.perf_counter()
    if to not in ("standalone", "upstream"):
        raise ConversionError(f"--to must be 'standalone' or 'upstream', got {to!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a directory")
    config = read_upstream_config(src) if to == "standalone" else read_standalone_config(src)
    if to == "upstream" and not (src / UPSTREAM_CONFIG_NAME).is_file():
        raise ConversionError(f"{src}: no {UPSTREAM_CONFIG_NAME}, so the upstream config.json cannot be restored")
    if not dry_run:
        if dst.exists() and not force:
            raise ConversionError(f"{dst} already exists (pass --force to replace it)")
        if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
            raise ConversionError(f"{dst}: the destination must not be the source or inside it")

    what = (f"a {config.tts_model_type} model with this config" if to == "standalone"
            else "a standalone checkpoint with this config")
    codec = _codec_job(src, to, dtype)
    with SourceWeights(src) as source:
        outputs = plan_outputs(source, plan(config), to, dtype, what)
        summary = ConversionSummary(
            direction=to, tensors_in=len(source.infos), tensors_out=len(outputs), bytes_in=source.nbytes,
            bytes_out=sum(_numel(o.shape) * torch.empty((), dtype=o.dtype).element_size() for o in outputs),
            seconds=0.0, dst=dst,
        )
        if codec is not None:
            summary.tensors_in += len(codec[0].infos)
            summary.tensors_out += len(codec[1])
            summary.bytes_in += codec[0].nbytes
            summary.bytes_out += sum(_numel(o.shape) * torch.empty((), dtype=o.dtype).element_size() for o in codec[1])
        if dry_run:
            summary.plan = _plan_lines(outputs, source, to)
            if codec is not None:
                summary.plan += [f"speech_tokenizer/ {line}" for line in _plan_lines(codec[1], codec[0], to)]
            summary.seconds = time.perf_counter() - t0
            return summary
        tmp = _make_tmp(dst)
        # The sources are hashed for the manifest on a second thread while the conversion runs
        # (hashlib releases the GIL), instead of in a second pass afterwards.
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            source_hashes = {name: pool.submit(sha256_file, src / name) for name in [*source.files, "config.json"]} \
                if to == "standalone" else {}
            hashes: dict[str, str] = {}
            summary.files = _write_weights(tmp, outputs, source, to, shard_size, progress, hashes)
            if to == "standalone":
                (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
                shutil.copy2(src / "config.json", tmp / UPSTREAM_CONFIG_NAME)
            else:
                shutil.copy2(src / UPSTREAM_CONFIG_NAME, tmp / "config.json")
            _copy_side_files(src, tmp, hashes, skip={f"{CODEC_DIR}/{f}" for f in (codec[0].files if codec else [])})
            if codec is not None:
                codec_hashes: dict[str, str] = {}
                (tmp / CODEC_DIR).mkdir(exist_ok=True)
                with codec[0] as codec_source:
                    summary.files += [f"{CODEC_DIR}/{f}" for f in _write_weights(
                        tmp / CODEC_DIR, codec[1], codec_source, to, None, progress, codec_hashes)]
                hashes.update({f"{CODEC_DIR}/{k}": v for k, v in codec_hashes.items()})
            summary.seconds = time.perf_counter() - t0
            _write_report(tmp, summary, src, [("", outputs)] + ([(f"{CODEC_DIR}/", codec[1])] if codec else []), dtype)
            if to == "standalone":
                write_manifest(tmp, hashes, {k: f.result() for k, f in source_hashes.items()})
            _replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _codec_job(src: Path, direction: str, dtype: torch.dtype | None):
    """(source weights, output tensors) of the speech tokenizer, or None when there is none.
    Its config.json is upstream's in both layouts; the weights follow the codec layout map."""
    directory = src / CODEC_DIR
    if not (directory / "config.json").is_file():
        return None
    try:
        cfg = load_codec_config(directory)
    except (ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"{directory / 'config.json'}: {e}") from e
    has_weights = (directory / WEIGHTS_NAME).is_file() or (directory / INDEX_NAME).is_file()
    if not has_weights:
        return None
    source = SourceWeights(directory)
    marker = _producer(directory)
    if direction == "standalone" and marker:
        raise ConversionError(f"{directory}: already converted by {marker}; refusing to convert it again")
    if direction == "upstream" and not marker:
        raise ConversionError(f"{directory}: not in the standalone layout")
    encoder_cfg = None
    if any(n.startswith("encoder.") for n in source.infos):
        try:
            encoder_cfg = load_speech_encoder_config(directory)
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"{directory / 'config.json'}: {e}") from e
    entries = codec_plan(cfg, encoder_cfg)
    return source, plan_outputs(source, entries, direction, dtype, "the 12 Hz speech tokenizer")


def _producer(directory: Path) -> str | None:
    """The converter that wrote a weight file, from its safetensors metadata (None if upstream's)."""
    from .stream_io import read_header

    for file in sorted(directory.glob("*.safetensors")):
        try:
            _, meta = read_header(file)
        except StreamError as e:
            raise ConversionError(str(e)) from e
        producer = meta.get("producer", "")
        if producer.startswith("q3tts.convert"):
            return producer
    return None


def _plan_lines(outputs: list[OutputTensor], source: SourceWeights, direction: str) -> list[str]:
    lines = []
    for o in outputs:
        srcs = ", ".join(f"{n} {list(source.infos[n].shape)} {DTYPE_NAMES[source.infos[n].dtype]}" for n in o.inputs)
        op = o.entry.op if direction == "standalone" else {"rename": "rename", "concat": "split", "stack": "unstack"}[o.entry.op]
        lines.append(f"{srcs} -> {o.name} {list(o.shape)} {DTYPE_NAMES[o.dtype]} ({op})")
    return lines


def _write_report(tmp: Path, summary: ConversionSummary, src: Path,
                  groups: list[tuple[str, list[OutputTensor]]], dtype) -> None:
    report = {
        "converter_version": CONVERTER_VERSION,
        "direction": summary.direction,
        "source": str(src.resolve()),
        "dtype": "keep" if dtype is None else DTYPE_NAMES[dtype],
        "tensors_in": summary.tensors_in,
        "tensors_out": summary.tensors_out,
        "bytes_in": summary.bytes_in,
        "bytes_out": summary.bytes_out,
        "seconds": round(summary.seconds, 3),
        "weight_files": summary.files,
        "tensors": [{"name": prefix + o.name, "from": list(o.inputs), "op": o.entry.op, "shape": list(o.shape),
                     "dtype": DTYPE_NAMES[o.dtype]} for prefix, group in groups for o in group],
    }
    (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _make_tmp(dst: Path) -> Path:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    except OSError as e:
        raise ConversionError(f"{dst}: cannot write there ({e.strerror or e})") from e


def _replace(tmp: Path, dst: Path) -> None:
    """Move the finished directory into place; an existing dst (with --force) is kept until the
    new one is in place, then removed."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
