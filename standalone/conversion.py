"""Upstream checkpoint directory <-> standalone checkpoint directory, streaming.

Reads the upstream files directly (JSON + safetensors headers and bytes, through the runtime's
one checkpoint reader); never imports transformers or qwen_tts, never unpickles. A checkpoint is
made of parts, each a weight set with its own slice of the layout map: the model (talker, code
predictor, speaker encoder) at the top level, and the speech tokenizer in ``speech_tokenizer/``.
Everything that can be checked before writing is checked first (configs, headers, index, tensor
accounting, shapes, dtypes) for every part. Tensors are then converted one output tensor at a
time: its source tensors are read, combined, cast and appended to the output file, so peak memory
is about three times the largest tensor. The output is assembled in a temporary directory beside
``dst`` and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .checkpoint import (
    INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    CheckpointReader,
    has_weights,
    read_header,
)
from .codec import load_codec_config
from .config import FORMAT_NAME, ConfigError, Qwen3TTSConfig
from .config_shapes import check_codec_shapes, check_encoder_shapes, check_model_shapes, shapes_of
from .dtypes import SAFETENSORS_CODE
from .jsonfile import load_json_text
from .layout import Direction, Entry, codec_plan, plan
from .manifest import MANIFEST_NAME, sha256_file
from .output_dir import OWNER_FILE, OutputDir, OutputError
from .precision import METADATA_KEY, Precision
from .safetensors_writer import SafetensorsWriter, StreamError, plan_shards
from .speech_encoder import load_speech_encoder_config

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
PRODUCER = f"q3tts-convert {CONVERTER_VERSION}"  # safetensors metadata: who wrote the file


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
# Reading and planning
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path}: missing")
    try:
        raw = load_json_text(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return raw


def read_model_config(src: Path, direction: Direction) -> Qwen3TTSConfig:
    """The model config of ``src``: upstream's config.json when converting to the standalone
    layout, the standalone config.json when converting back."""
    raw = _load_json(src / "config.json")
    is_standalone = raw.get("format") == FORMAT_NAME
    if direction is Direction.TO_STANDALONE and is_standalone:
        raise ConversionError(
            f"{src} is already a standalone checkpoint (format {FORMAT_NAME}); refusing to convert it again"
        )
    if direction is Direction.TO_UPSTREAM and not is_standalone:
        raise ConversionError(f"{src} is not a standalone checkpoint (config.json has no format {FORMAT_NAME!r})")
    if direction is Direction.TO_UPSTREAM and not (src / UPSTREAM_CONFIG_NAME).is_file():
        raise ConversionError(f"{src}: no {UPSTREAM_CONFIG_NAME}, so the upstream config.json cannot be restored")
    try:
        return (
            Qwen3TTSConfig.from_upstream(raw) if direction is Direction.TO_STANDALONE else Qwen3TTSConfig.from_dict(raw)
        )
    except (ConfigError, TypeError) as e:
        raise ConversionError(f"{src / 'config.json'}: {e}") from e


def open_reader(directory: Path) -> CheckpointReader:
    try:
        return CheckpointReader(directory)
    except CheckpointError as e:
        raise ConversionError(str(e)) from e


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    inputs: tuple[str, ...]
    entry: Entry


def _check_accounting(source: CheckpointReader, wanted: list[str], what: str) -> None:
    if len(set(wanted)) != len(wanted):
        raise AssertionError("layout plan consumes a source tensor twice")
    present = set(source.infos)
    missing = sorted(set(wanted) - present)
    extra = sorted(present - set(wanted))
    if missing:
        raise ConversionError(
            f"{source.directory}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    if extra:
        raise ConversionError(
            f"{source.directory}: unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} (not part of {what})"
        )


def plan_outputs(
    source: CheckpointReader,
    entries: list[Entry],
    direction: Direction,
    dtype: torch.dtype | Precision | None,
    what: str,
    part: str = "",
) -> list[OutputTensor]:
    """Validate every source tensor against the layout entries and list the output tensors.
    A Precision ``dtype`` picks each output's dtype by its name within ``part``."""
    _check_accounting(source, [n for e in entries for n in direction.reads(e)], what)
    outputs: list[OutputTensor] = []
    for e in entries:
        inputs = direction.reads(e)
        dtypes = set()
        for name, shape in zip(inputs, direction.read_shapes(e)):
            info = source.infos[name]
            if shape is not None and info.shape != shape:
                raise ConversionError(
                    f"{source.directory}: tensor {name} has shape {list(info.shape)}, the config implies {list(shape)}"
                )
            dtypes.add(info.dtype)
        if len(dtypes) != 1:
            raise ConversionError(f"{source.directory}: tensors {list(inputs)} mix dtypes {sorted(map(str, dtypes))}")
        stored = dtypes.pop()
        carried = source.infos[inputs[0]].shape  # entries with no planned shape keep the stored one
        if direction is Direction.TO_STANDALONE:
            shapes = [e.target_shape if e.target_shape is not None else carried]
        else:
            shapes = [s if s is not None else carried for s in e.source_shapes]
        for name, shape in zip(direction.writes(e), shapes):
            outputs.append(OutputTensor(name, _cast_dtype(stored, dtype, name, part), shape, inputs, e))
    return outputs


def _cast_dtype(stored: torch.dtype, requested, name: str, part: str) -> torch.dtype:
    if requested is None or not stored.is_floating_point:
        return stored
    return requested.dtype_for(name, part) if isinstance(requested, Precision) else requested


def _produce(
    outputs: list[OutputTensor], source: CheckpointReader, direction: Direction
) -> Iterator[tuple[OutputTensor, torch.Tensor]]:
    """Yield output tensors in order, reading each source tensor once. An entry's outputs are
    adjacent; its pieces are kept only until its last output is written."""
    key, pieces = None, {}
    for out in outputs:
        if out.entry is not key:
            key = out.entry
            made = direction.apply(out.entry, [source.get(n) for n in out.inputs])
            pieces = dict(zip(direction.writes(out.entry), made))
        tensor = pieces.pop(out.name).to(out.dtype)
        yield out, tensor
        del tensor  # before the next read: one entry in memory at a time


# --------------------------------------------------------------------------------------------
# The parts of a checkpoint
# --------------------------------------------------------------------------------------------


@dataclass
class PartJob:
    """One weight set of the checkpoint, read, planned and ready to write."""

    subdir: str  # "" for the top level
    source: CheckpointReader
    outputs: list[OutputTensor]

    def prefix(self) -> str:
        return f"{self.subdir}/" if self.subdir else ""


def model_job(src: Path, config: Qwen3TTSConfig, direction: Direction, dtype) -> PartJob:
    what = (
        f"a {config.tts_model_type} model with this config"
        if direction is Direction.TO_STANDALONE
        else "a standalone checkpoint with this config"
    )
    source = open_reader(src)
    check_source_shapes(check_model_shapes, config, source, direction, src / "config.json")
    return PartJob("", source, plan_outputs(source, plan(config), direction, dtype, what))


def check_source_shapes(check, config, source: CheckpointReader, direction: Direction, where: Path) -> None:
    """The config's sizes against the source's own tensor shapes (headers only), before any
    module of the plan is built (config_shapes.py); the source is closed on a mismatch."""
    layout = "upstream" if direction is Direction.TO_STANDALONE else "standalone"
    try:
        check(config, shapes_of(source.infos), layout, str(where))
    except ConfigError as e:
        source.__exit__(None, None, None)
        raise ConversionError(str(e)) from e


def speech_tokenizer_job(src: Path, direction: Direction, dtype) -> PartJob | None:
    """The speech tokenizer's weights, or None when the checkpoint has none. Its config.json is
    upstream's in both layouts; the weights follow the codec slice of the map."""
    directory = src / CODEC_DIR
    if not (directory / "config.json").is_file() or not has_weights(directory):
        return None
    try:
        cfg = load_codec_config(directory)
    except (ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"{directory / 'config.json'}: {e}") from e
    source = open_reader(directory)
    marker = _producer(directory)
    if direction is Direction.TO_STANDALONE and marker:
        raise ConversionError(f"{directory}: already converted by {marker}; refusing to convert it again")
    if direction is Direction.TO_UPSTREAM and not marker:
        raise ConversionError(f"{directory}: not in the standalone layout")
    encoder_cfg = None
    if any(n.startswith("encoder.") for n in source.infos):
        try:
            encoder_cfg = load_speech_encoder_config(directory)
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"{directory / 'config.json'}: {e}") from e
    check_source_shapes(check_codec_shapes, cfg, source, direction, directory / "config.json")
    if encoder_cfg is not None:
        check_source_shapes(check_encoder_shapes, encoder_cfg, source, direction, directory / "config.json")
    outputs = plan_outputs(
        source, codec_plan(cfg, encoder_cfg), direction, dtype, "the 12 Hz speech tokenizer", CODEC_DIR
    )
    return PartJob(CODEC_DIR, source, outputs)


def _producer(directory: Path) -> str | None:
    """The converter that wrote a weight file, from its safetensors metadata (None if upstream's)."""
    for file in sorted(directory.glob("*.safetensors")):
        try:
            _, meta = read_header(file)
        except CheckpointError as e:
            raise ConversionError(str(e)) from e
        producer = meta.get("producer", "")
        if producer.startswith("q3tts-convert"):
            return producer
    return None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _nbytes(o: OutputTensor) -> int:
    n = torch.empty((), dtype=o.dtype).element_size()
    for s in o.shape:
        n *= s
    return n


def _shard_names(n: int) -> list[str]:
    return [WEIGHTS_NAME] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_part(
    tmp: Path,
    job: PartJob,
    direction: Direction,
    shard_bytes: int | None,
    progress: bool,
    hashes: dict[str, str],
    precision: Precision | None = None,
) -> list[str]:
    """Write one part's weight file(s) under ``tmp``; their sha256 (computed while writing) go
    into ``hashes`` keyed by their path relative to ``tmp``. Returns those paths."""
    out_dir = tmp / job.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [(o.name, o.dtype, o.shape) for o in job.outputs]
    shards = plan_shards(specs, shard_bytes)
    names = _shard_names(len(shards))
    shard_of = {i: file for file, idx in zip(names, shards) for i in idx}
    # Standalone files name their producer (so they are never converted twice); files written
    # back in upstream's layout carry upstream's plain metadata.
    metadata = {"format": "pt"} | ({"producer": PRODUCER} if direction is Direction.TO_STANDALONE else {})
    if precision is not None:  # the loader restores the mixed mode from it (precision.stored_precision)
        metadata[METADATA_KEY] = precision.name
    bar = _bar(sum(_nbytes(o) for o in job.outputs), progress)
    try:
        writers = {
            file: SafetensorsWriter(out_dir / file, [specs[i] for i in idx], metadata=metadata)
            for file, idx in zip(names, shards)
        }
        for i, (out, tensor) in enumerate(_produce(job.outputs, job.source, direction)):
            writers[shard_of[i]].write(out.name, tensor)
            bar.update(tensor.numel() * tensor.element_size())
        for w in writers.values():
            w.close()
    except (StreamError, CheckpointError) as e:
        raise ConversionError(str(e)) from e
    finally:
        bar.close()
    hashes.update({job.prefix() + file: w.sha256.hexdigest() for file, w in writers.items()})
    if len(names) > 1:
        index = {
            "metadata": {"total_size": sum(_nbytes(o) for o in job.outputs)},
            "weight_map": {o.name: shard_of[i] for i, o in enumerate(job.outputs)},
        }
        _write_text(out_dir / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    return [job.prefix() + n for n in names]


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="converting", disable=not enabled, leave=False
    )


def _copy_hashing(src: Path, dst: Path, chunk: int = 1 << 22) -> str:
    """Copy a file byte for byte and return its sha256, reading it once. The copy gets the
    umask's permissions, not the source's (a read-only hub cache file must not make a read-only
    checkpoint)."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, _writing(dst) as fo:
        while block := fi.read(chunk):
            fo.write(block)
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _writing(path: Path):
    """open(path, "wb"), with a failure (disk full, file size limit, permissions) reported as
    one line naming the path and the cause."""
    try:
        with open(path, "wb") as f:
            yield f
    except OSError as e:
        raise ConversionError(f"{path}: write failed ({e.strerror or e})") from e


def _write_text(path: Path, text: str) -> None:
    with _writing(path) as f:
        f.write(text.encode("utf-8"))


def _copy_side_files(src: Path, tmp: Path, hashes: dict[str, str], skip: set[str]) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file():
            hashes[name] = _copy_hashing(src / name, tmp / name)
    for name in SIDE_DIRS:
        if not (src / name).is_dir():
            continue
        for p in sorted((src / name).rglob("*")):
            rel = p.relative_to(src)
            if rel.as_posix() in skip:
                continue
            if p.is_dir():
                (tmp / rel).mkdir(parents=True, exist_ok=True)
            elif p.is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                hashes[rel.as_posix()] = _copy_hashing(p, tmp / rel)


def _write_configs(src: Path, tmp: Path, config: Qwen3TTSConfig, direction: Direction) -> None:
    if direction is Direction.TO_STANDALONE:
        _write_text(tmp / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        _copy_hashing(src / "config.json", tmp / UPSTREAM_CONFIG_NAME)
    else:
        _copy_hashing(src / UPSTREAM_CONFIG_NAME, tmp / "config.json")


def write_manifest(directory: Path, known: dict[str, str], source_hashes: dict[str, str]) -> None:
    """sha256 + size of every file in ``directory`` (``known`` hashes are reused, the rest are
    computed) and the sha256 of the source files."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST_NAME, OWNER_FILE):
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"sha256": known.get(rel) or sha256_file(p), "size": p.stat().st_size}
    manifest = {
        "format": FORMAT_NAME,
        "converter_version": CONVERTER_VERSION,
        "upstream_version": upstream_version(),
        "files": files,
        "source_files": source_hashes,
    }
    _write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def upstream_version() -> str | None:
    """The installed qwen-tts version, read from package metadata (never imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qwen-tts")
    except PackageNotFoundError:
        return None


def _write_report(tmp: Path, summary: ConversionSummary, src: Path, jobs: list[PartJob], dtype) -> None:
    report = {
        "converter_version": CONVERTER_VERSION,
        "direction": summary.direction,
        "source": str(src.resolve()),
        "dtype": "keep" if dtype is None else (dtype.name if isinstance(dtype, Precision) else SAFETENSORS_CODE[dtype]),
        "tensors_in": summary.tensors_in,
        "tensors_out": summary.tensors_out,
        "bytes_in": summary.bytes_in,
        "bytes_out": summary.bytes_out,
        "weight_files": summary.files,
        "tensors": [
            {
                "name": job.prefix() + o.name,
                "from": list(o.inputs),
                "op": o.entry.op,
                "shape": list(o.shape),
                "dtype": SAFETENSORS_CODE[o.dtype],
            }
            for job in jobs
            for o in job.outputs
        ],
    }
    _write_text(tmp / REPORT_NAME, json.dumps(report, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _check_destination(src: Path, dst: Path, force: bool, dry_run: bool) -> None:
    if dry_run:
        return
    if dst.exists() and not force:
        raise ConversionError(f"{dst} already exists (pass --force to replace it)")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConversionError(f"{dst}: the destination must not be the source or inside it")


def _summary(direction: Direction, jobs: list[PartJob], dst: Path) -> ConversionSummary:
    return ConversionSummary(
        direction=direction.value,
        tensors_in=sum(len(j.source.infos) for j in jobs),
        tensors_out=sum(len(j.outputs) for j in jobs),
        bytes_in=sum(j.source.nbytes for j in jobs),
        bytes_out=sum(_nbytes(o) for j in jobs for o in j.outputs),
        seconds=0.0,
        dst=dst,
    )


def _plan_lines(job: PartJob, direction: Direction) -> list[str]:
    lines = []
    for o in job.outputs:
        infos = job.source.infos
        srcs = ", ".join(f"{n} {list(infos[n].shape)} {SAFETENSORS_CODE[infos[n].dtype]}" for n in o.inputs)
        lines.append(
            f"{job.prefix() + ' ' if job.subdir else ''}{srcs} -> {o.name} {list(o.shape)} {SAFETENSORS_CODE[o.dtype]} "
            f"({direction.op_name(o.entry)})"
        )
    return lines


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: torch.dtype | Precision | None = None,
    force: bool = False,
    shard_size: int | None = None,
    to: str | Direction = Direction.TO_STANDALONE,
    dry_run: bool = False,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> ConversionSummary:
    """Convert ``src`` into ``dst``: upstream -> standalone (``to="standalone"``) or back
    (``to="upstream"``). ``dtype=None`` keeps stored dtypes; a precision.Precision
    stores each tensor in its mixed mode's dtype and names the mode in the weight metadata;
    ``shard_size`` in bytes splits the
    model weights into shards with an index. With ``dry_run`` nothing is written and the
    summary's ``plan`` lists every source tensor -> target. ``say`` receives notices (a stale
    partial directory removed). The output is written through the one durable writer
    (q3tts.standalone.output_dir): atomic, fsynced, umask permissions, signal-safe."""
    t0 = time.perf_counter()
    try:
        direction = Direction(to)
    except ValueError:
        raise ConversionError(f"--to must be 'standalone' or 'upstream', got {to!r}") from None
    if isinstance(dtype, Precision) and direction is not Direction.TO_STANDALONE:
        raise ConversionError(
            f"--dtype {dtype.name} applies to the standalone layout only (not --to {direction.value})"
        )
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a directory")
    config = read_model_config(src, direction)
    _check_destination(src, dst, force, dry_run)
    jobs = [model_job(src, config, direction, dtype)]
    codec = speech_tokenizer_job(src, direction, dtype)
    jobs += [codec] if codec is not None else []
    try:
        summary = _summary(direction, jobs, dst)
        if dry_run:
            summary.plan = [line for job in jobs for line in _plan_lines(job, direction)]
        else:
            _write_all(src, dst, config, jobs, direction, dtype, shard_size, progress, summary, t0, force, say)
    finally:
        for job in jobs:
            job.source.__exit__(None, None, None)
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_all(src, dst, config, jobs, direction, dtype, shard_size, progress, summary, t0, force, say) -> None:
    # The sources are hashed for the manifest on a second thread while the conversion runs
    # (hashlib releases the GIL), instead of in a second pass afterwards.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with OutputDir(dst, force=force, say=say) as out:
            tmp = out.path
            hashing = {}
            if direction is Direction.TO_STANDALONE:
                hashing = {
                    name: pool.submit(sha256_file, src / name) for name in [*jobs[0].source.files, "config.json"]
                }
            hashes: dict[str, str] = {}
            for job in jobs:
                summary.files += write_part(
                    tmp,
                    job,
                    direction,
                    shard_size if not job.subdir else None,
                    progress,
                    hashes,
                    dtype if isinstance(dtype, Precision) else None,
                )
            _write_configs(src, tmp, config, direction)
            skip = {job.prefix() + f for job in jobs if job.subdir for f in job.source.files}
            _copy_side_files(src, tmp, hashes, skip)
            summary.seconds = time.perf_counter() - t0
            _write_report(tmp, summary, src, jobs, dtype)
            if direction is Direction.TO_STANDALONE:
                write_manifest(tmp, hashes, {k: f.result() for k, f in hashing.items()})
            out.commit()
    except OutputError as e:
        raise ConversionError(str(e)) from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
