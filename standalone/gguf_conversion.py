"""Upstream checkpoint directory -> qwentts.cpp GGUF files (talker + codec), ``convert-ckpt --to gguf``.

Every name and key comes from standalone/gguf_layout.py. Same guarantees as the safetensors
targets: every source tensor is used or dropped with a stated reason (anything else is an error
naming it), the special-token ids of config.json are checked against the tokenizer, the output
directory appears complete or not at all (OutputDir), and manifest.json records the sha256 of
every written and every source file. Files are written with ggml's ``gguf`` package (the
optional extra ``gguf``), imported only here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import gguf_layout as L
from .checkpoint import CheckpointError, CheckpointReader
from .config import FORMAT_NAME
from .ggml_quantize import GGML_TYPES, GGMLUnavailable, quantize_rows, require_ggml
from .jsonfile import load_json_text
from .manifest import MANIFEST_NAME
from .output_dir import OutputDir, OutputError

GGUF_CONVERTER_VERSION = "0.1.0"
GGUF_FORMAT = "q3tts-gguf"
REPORT_NAME = "conversion-report.json"
INSTALL_HINT = "pip install 'qwen3-tts-standalone[gguf]' (or: pip install gguf)"


class GGUFConversionError(ValueError):
    """Bad input to the GGUF converter; the message names the file, tensor or key."""


@dataclass
class GGUFSummary:
    quant: str
    tensors_in: int
    tensors_out: int
    dropped: dict[str, str]
    bytes_out: int
    seconds: float
    dst: Path
    files: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)


@dataclass
class _Out:
    name: str
    role: str  # copy | codebook
    inputs: tuple[str, ...]  # copy: (src,), codebook: (sum, usage)


@dataclass
class _Part:
    label: str
    directory: Path
    arch: str
    rules: list
    outputs: list[_Out]
    dropped: dict[str, str]
    reader: CheckpointReader | None = None


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise GGUFConversionError(f"--to gguf needs the gguf package: {INSTALL_HINT}") from e
    return gguf


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise GGUFConversionError(f"{path}: missing")
    try:
        raw = load_json_text(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GGUFConversionError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(raw, dict):
        raise GGUFConversionError(f"{path}: expected a JSON object")
    return raw


def _plan_part(label: str, directory: Path, arch: str, rules: list, names: list[str], extra_drop) -> _Part:
    """Match every source name to exactly one rule; fuse codebook pairs; collect drops."""
    outputs: dict[str, _Out] = {}
    codebooks: dict[str, dict[str, str]] = {}
    dropped: dict[str, str] = {}
    unknown = []
    for name in names:
        hits = [(r, m) for r in rules if (m := r.match(name))]
        if not hits:
            unknown.append(name)
            continue
        if len(hits) > 1:
            raise GGUFConversionError(
                f"{directory}: tensor {name} matches {len(hits)} rules of the GGUF layout (a table bug)"
            )
        rule, m = hits[0]
        if rule.role == "drop":
            dropped[name] = rule.reason
            continue
        target = L.render_target(rule, m)
        reason = extra_drop(target)
        if reason:
            dropped[name] = reason
            continue
        if rule.role == "copy":
            if target in outputs:
                raise GGUFConversionError(
                    f"{directory}: tensors {outputs[target].inputs[0]} and {name} both map to {target}"
                )
            outputs[target] = _Out(target, "copy", (name,))
        else:
            slot = codebooks.setdefault(target, {})
            slot[rule.role] = name
    if unknown:
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise GGUFConversionError(
            f"{directory}: {len(unknown)} tensor(s) not in the GGUF layout: {', '.join(unknown[:5])}{more}"
        )
    for target, slot in sorted(codebooks.items()):
        if set(slot) != {"codebook.sum", "codebook.usage"}:
            have = ", ".join(slot.values())
            raise GGUFConversionError(
                f"{directory}: codebook {target} needs embedding_sum and cluster_usage; found only {have}"
            )
        outputs[target] = _Out(target, "codebook", (slot["codebook.sum"], slot["codebook.usage"]))
    return _Part(label, directory, arch, rules, list(outputs.values()), dropped)


def build_tokenizer(src: Path, cfg: dict) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) with every added token at its own id, and a check that each
    special-token id named by config.json holds a special token: qwentts.cpp registers
    ``tokens[id]`` as the verbatim special, so a misplaced one makes it spell ``<|im_start|>``
    out as ordinary text (a much longer, wrong prompt)."""
    vocab = _load_json(src / "vocab.json")
    tok_cfg = _load_json(src / "tokenizer_config.json")
    added = tok_cfg.get("added_tokens_decoder") or {}
    ids = [int(v) for v in vocab.values()] + [int(k) for k in added]
    tokens: list[str | None] = [None] * (max(ids) + 1)
    types = [L.TOKEN_NORMAL] * len(tokens)
    for tok, i in vocab.items():
        tokens[int(i)] = tok
    for i, info in added.items():
        tokens[int(i)] = info["content"]
        types[int(i)] = L.TOKEN_USER_DEFINED
    for i, tok in enumerate(tokens):
        if tok is None:
            tokens[i], types[i] = f"<|unused-{i}|>", L.TOKEN_UNUSED
    for key in L.SPECIAL_TOKEN_KEYS:
        if key not in cfg:
            raise GGUFConversionError(f"{src / 'config.json'}: missing {key}")
        i = int(cfg[key])
        if not 0 <= i < len(tokens) or types[i] != L.TOKEN_USER_DEFINED:
            found = repr(tokens[i]) if 0 <= i < len(tokens) else "out of range"
            raise GGUFConversionError(
                f"{src}: config.json {key}={i} but the tokenizer has {found} there, not a special token "
                f"(tokenizer_config.json added_tokens_decoder must hold it at that id)"
            )
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in seen and types[i] != L.TOKEN_UNUSED:
            raise GGUFConversionError(f"{src}: token {tok!r} appears at ids {seen[tok]} and {i}")
        seen[tok] = i
    merges_path = src / "merges.txt"
    if not merges_path.is_file():
        raise GGUFConversionError(f"{merges_path}: missing")
    merges = [ln for ln in merges_path.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    return tokens, types, merges


def _add_meta(writer, table: list, ctx: dict) -> dict:
    written = {}
    for m in table:
        try:
            value = m.get(ctx)
        except KeyError as e:
            raise GGUFConversionError(f"config has no {e.args[0]!r}, needed for GGUF key {m.key}") from None
        if value is None:
            continue
        if m.kind == "u32":
            writer.add_uint32(m.key, int(value))
        elif m.kind == "f32":
            writer.add_float32(m.key, float(value))
        elif m.kind == "bool":
            writer.add_bool(m.key, bool(value))
        elif m.kind == "str":
            writer.add_string(m.key, str(value))
        elif m.kind == "arr":
            writer.add_array(m.key, list(value))
        else:
            raise AssertionError(m.kind)
        written[m.key] = value
    return written


def _tensor_data(part: _Part, out: _Out) -> np.ndarray:
    if out.role == "copy":
        return part.reader.get(out.inputs[0]).float().numpy()
    s = part.reader.get(out.inputs[0]).float()
    usage = part.reader.get(out.inputs[1]).float()
    return (s / usage.clamp(min=L.RVQ_EPS)[:, None]).numpy()


def _encode(gguf, name: str, arr: np.ndarray, quant: str):
    kind = L.storage_type(name, tuple(arr.shape), quant)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if kind == "F32":
        return arr, None, kind
    if kind == "F16":
        return arr.astype(np.float16), None, kind
    qtype = gguf.GGMLQuantizationType[kind]
    if kind in GGML_TYPES:  # K-quants: gguf's package has no encoder, ggml's own does it
        return quantize_rows(arr, kind), qtype, kind
    return gguf.quants.quantize(arr, qtype), qtype, kind


Transform = Callable[[str, np.ndarray], np.ndarray]


def _read_gguf_sources(src: Path):
    """The configs the GGUF metadata is made from: (config, codec dir, talker ctx, codec ctx,
    the number of acoustic codebooks the encoder keeps)."""
    cfg = _load_json(src / "config.json")
    if cfg.get("format") == FORMAT_NAME:
        raise GGUFConversionError(
            f"{src} is a standalone checkpoint; --to gguf converts the upstream checkpoint "
            "(convert it back with --to upstream first)"
        )
    if "talker_config" not in cfg:
        raise GGUFConversionError(f"{src / 'config.json'}: no talker_config (not a Qwen3-TTS checkpoint)")
    codec_dir = src / "speech_tokenizer"
    codec_cfg = _load_json(codec_dir / "config.json")
    gen = _load_json(src / "generation_config.json") if (src / "generation_config.json").is_file() else {}
    talker = cfg["talker_config"]
    ctx = {"cfg": cfg, "talker": talker, "cp": talker.get("code_predictor_config") or {}, "gen": gen}
    enc = {**L.ENCODER_DEFAULTS, **(codec_cfg.get("encoder_config") or {})}
    cctx = {"cfg": codec_cfg, "enc": enc, "dec": codec_cfg.get("decoder_config") or {}}
    kept_acoustic = codec_cfg.get("encoder_valid_num_quantizers", 0) - enc.get("num_semantic_quantizers", 1)
    return cfg, codec_dir, ctx, cctx, kept_acoustic


def _gguf_summary(parts, quant: str, dst: Path) -> GGUFSummary:
    """Counts, drops and the plan (one line per output tensor and per dropped tensor)."""
    n_in = sum(len(p.reader.names()) for p in parts)
    summary = GGUFSummary(
        quant,
        n_in,
        sum(len(p.outputs) for p in parts),
        {f"{p.label}:{k}": v for p in parts for k, v in p.dropped.items()},
        0,
        0.0,
        dst,
    )
    for p in parts:
        for o in p.outputs:
            summary.plan.append(f"{p.label}: {' + '.join(o.inputs)} -> {o.name}")
        for k, v in p.dropped.items():
            summary.plan.append(f"{p.label}: {k} -> dropped ({v})")
    return summary


def convert_to_gguf(
    src: str | Path,
    dst: str | Path,
    *,
    quant: str = "F32",
    force: bool = False,
    dry_run: bool = False,
    say: Callable[[str], None] | None = None,
    _fault: Callable | None = None,
) -> GGUFSummary:
    """Convert the upstream checkpoint ``src`` into ``dst``/{talker,codec} GGUF files.

    ``_fault`` is for the fault self-test only: ``_fault(stage, **kw)`` may alter the tokenizer,
    metadata or tensors on their way to the file."""
    t0 = time.perf_counter()
    quant = quant.upper()
    if quant not in L.QUANTS:
        raise GGUFConversionError(f"--quant {quant}: expected one of {', '.join(L.QUANTS)}")
    if quant in L.K_VARIANTS:  # before anything is written: the encoder is the peer's ggml
        try:
            require_ggml()
        except GGMLUnavailable as e:
            raise GGUFConversionError(f"--quant {quant}: {e}") from e
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise GGUFConversionError(f"{src}: not a directory")
    cfg, codec_dir, ctx, cctx, kept_acoustic = _read_gguf_sources(src)

    def codec_extra_drop(target: str) -> str | None:
        parts = target.split(".")
        if target.startswith("tok_enc.vq_acoustic.") and parts[2].isdigit() and int(parts[2]) >= kept_acoustic:
            return L.EXTRA_ACOUSTIC_REASON
        return None

    tokens, types, merges = build_tokenizer(src, cfg)
    try:
        treader, creader = CheckpointReader(src), CheckpointReader(codec_dir)
    except CheckpointError as e:
        raise GGUFConversionError(str(e)) from e
    with treader, creader:
        parts = [
            _plan_part("talker", src, L.TALKER_ARCH, L.TALKER_RULES, treader.names(), lambda t: None),
            _plan_part("codec", codec_dir, L.CODEC_ARCH, L.CODEC_RULES, creader.names(), codec_extra_drop),
        ]
        parts[0].reader, parts[1].reader = treader, creader
        rows = [o for o in parts[1].outputs if o.name.startswith("tok_dec.vq_first.") and o.role == "codebook"]
        if not rows:
            raise GGUFConversionError(f"{codec_dir}: no decoder codebook (decoder.quantizer.rvq_first)")
        cctx["codebook_row"] = int(creader.get(rows[0].inputs[0]).shape[-1])
        summary = _gguf_summary(parts, quant, dst)
        if dry_run:
            summary.seconds = time.perf_counter() - t0
            return summary
        gguf = _gguf()
        if dst.exists() and not force:
            raise GGUFConversionError(f"{dst} exists; pass --force to replace it (only once the new one is complete)")
        try:
            with OutputDir(dst, force=force, say=say) as out:
                meta = {}
                for p, table, c, fname in (
                    (parts[0], L.TALKER_META, ctx, L.TALKER_FILE),
                    (parts[1], L.CODEC_META, cctx, L.CODEC_FILE),
                ):
                    path = out.path / fname.format(quant=quant)
                    meta[p.label] = _write_gguf_file(gguf, p, table, c, path, (tokens, types, merges), quant, _fault)
                    summary.files.append(path.name)
                    summary.bytes_out += path.stat().st_size
                _write_gguf_report(out.path, summary, parts, quant)
                _write_gguf_manifest(out.path, src, treader, creader, quant)
                out.commit()
        except OutputError as e:
            raise GGUFConversionError(str(e)) from e
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_gguf_file(gguf, p, table, c, path: Path, tokenizer, quant: str, _fault):
    """One GGUF file: metadata from ``table``, the tokenizer (talker only), then the tensors."""
    tokens, types, merges = tokenizer
    writer = gguf.GGUFWriter(str(path), p.arch)
    if _fault:
        _fault("meta", part=p.label, ctx=c)
    written = _add_meta(writer, table, c)
    if p.label == "talker":
        tk, ty = list(tokens), list(types)
        if _fault:
            _fault("tokenizer", tokens=tk, types=ty)
        writer.add_string("tokenizer.ggml.model", "gpt2")
        writer.add_array("tokenizer.ggml.tokens", tk)
        writer.add_array("tokenizer.ggml.token_type", ty)
        writer.add_array("tokenizer.ggml.merges", merges)
        if L.ENDOFTEXT in tk:
            writer.add_uint32("tokenizer.ggml.eos_token_id", tk.index(L.ENDOFTEXT))
    if _fault:
        _fault("metadata_writer", part=p.label, writer=writer, ctx=c)
    for o in p.outputs:
        arr = _tensor_data(p, o)
        if _fault:
            arr = _fault("tensor", part=p.label, name=o.name, array=arr, reader=p.reader, out=o)
        data, qtype, _ = _encode(gguf, o.name, arr, quant)
        writer.add_tensor(o.name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


def _write_gguf_report(out_path: Path, summary, parts, quant: str) -> None:
    report = {
        "converter": f"q3tts-gguf {GGUF_CONVERTER_VERSION}",
        "qwentts_cpp": {
            "repo": L.QWENTTS_CPP_REPO,
            "commit": L.QWENTTS_CPP_COMMIT,
            "wheel": f"{L.QWENTTS_WHEEL}=={L.QWENTTS_WHEEL_VERSION}",
        },
        "quant": quant,
        "tensors_in": summary.tensors_in,
        "tensors_out": summary.tensors_out,
        "storage": {
            o.name: L.storage_type(o.name, tuple(p.reader.get(o.inputs[0]).shape), quant)
            for p in parts
            for o in p.outputs
        },
        "dropped": summary.dropped,
        "plan": summary.plan,
    }
    (out_path / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _write_gguf_manifest(out_path: Path, src: Path, treader, creader, quant: str) -> None:
    from .conversion import sha256_file

    sources = {}
    for rel in [
        *(f for f in treader.files),
        "config.json",
        *(f"speech_tokenizer/{f}" for f in creader.files),
        "speech_tokenizer/config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
    ]:
        sources[rel] = sha256_file(src / rel)
    files = {
        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(out_path.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }
    manifest = {
        "format": GGUF_FORMAT,
        "converter_version": GGUF_CONVERTER_VERSION,
        "quant": quant,
        "qwentts_cpp_commit": L.QWENTTS_CPP_COMMIT,
        "files": files,
        "source_files": sources,
    }
    (out_path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def gguf_paths(directory: str | Path) -> tuple[Path, Path]:
    """(talker, codec) GGUF paths of a ``--to gguf`` output directory."""
    directory = Path(directory)
    manifest = _load_json(directory / MANIFEST_NAME)
    q = manifest.get("quant")
    return directory / L.TALKER_FILE.format(quant=q), directory / L.CODEC_FILE.format(quant=q)
