"""Upstream checkpoint directory -> standalone checkpoint directory.

Reads the upstream files directly (JSON + safetensors); never imports transformers or qwen_tts.
The output is assembled in a temporary directory beside ``dst`` and renamed into place only when
complete, so a failure never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from q3tts.standalone.checkpoint import WEIGHTS_NAME, CheckpointError, TensorSource
from q3tts.standalone.config import FORMAT_NAME, ConfigError, Qwen3TTSConfig

from .layout import convert_tensors, plan

CONVERTER_VERSION = "0.1.0"

# Upstream files the runtime needs besides the weights, copied byte for byte when present.
SIDE_FILES = (
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "tokenizer.json",
    "preprocessor_config.json",
)
SIDE_DIRS = ("speech_tokenizer",)
UPSTREAM_CONFIG_NAME = "upstream_config.json"


class ConversionError(ValueError):
    """Bad input to the converter; the message names the file, tensor or argument."""


@dataclass(frozen=True)
class ConversionSummary:
    tensors_in: int
    tensors_out: int
    bytes_out: int
    seconds: float
    dst: Path


def read_upstream_config(src: Path) -> Qwen3TTSConfig:
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: missing (not a checkpoint directory?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    if raw.get("format") == FORMAT_NAME:
        raise ConversionError(f"{src} is already a standalone checkpoint (format {FORMAT_NAME}); refusing to convert it again")
    try:
        return Qwen3TTSConfig.from_upstream(raw)
    except ConfigError as e:
        raise ConversionError(f"{path}: {e}") from e


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> ConversionSummary:
    """Convert the upstream checkpoint directory ``src`` into a standalone directory ``dst``.

    ``dtype=None`` keeps every tensor's stored dtype. Every source tensor must be consumed exactly
    once: unknown, missing or mis-shaped tensors raise ConversionError naming them.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a directory")
    config = read_upstream_config(src)
    if dst.exists() and not force:
        raise ConversionError(f"{dst} already exists (pass force=True / --force to replace it)")
    if dst.resolve() == src.resolve():
        raise ConversionError("source and destination are the same directory")

    try:
        with TensorSource(src) as source:
            out = _convert_all(source, config, dtype)
    except CheckpointError as e:
        raise ConversionError(str(e)) from e

    dst.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(dst.parent, os.W_OK):
        raise ConversionError(f"{dst.parent}: not writable")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        save_file(out, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "producer": f"q3tts.convert {CONVERTER_VERSION}"})
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        # The upstream config.json, byte for byte: the reverse conversion and the text tokenizer's
        # fix_mistral_regex decision (its transformers_version) need it.
        shutil.copy2(src / "config.json", tmp / UPSTREAM_CONFIG_NAME)
        for name in SIDE_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        for name in SIDE_DIRS:
            if (src / name).is_dir():
                shutil.copytree(src / name, tmp / name)
        write_manifest(tmp, src, sorted(set(source.files.values())))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bytes_out = sum(t.numel() * t.element_size() for t in out.values())
    return ConversionSummary(len(source.files), len(out), bytes_out, time.perf_counter() - t0, dst)


def _convert_all(source: TensorSource, config: Qwen3TTSConfig, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    entries = plan(config)
    wanted = [s for e in entries for s in e.sources]
    if len(set(wanted)) != len(wanted):
        raise AssertionError("layout plan consumes a source tensor twice")
    present = set(source.names())
    missing = sorted(set(wanted) - present)
    extra = sorted(present - set(wanted))
    if missing:
        raise ConversionError(f"{source.directory}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        raise ConversionError(
            f"{source.directory}: unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} "
            f"(not part of a {config.tts_model_type} model with this config)"
        )

    def get(name: str) -> torch.Tensor:
        t = source.get(name)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    try:
        return dict(convert_tensors(entries, get))
    except ValueError as e:
        raise ConversionError(f"{source.directory}: {e}") from e


def write_manifest(directory: Path, src: Path, source_weight_files: list[str]) -> None:
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            files[p.relative_to(directory).as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    source = {}
    for name in [*source_weight_files, "config.json"]:
        source[name] = sha256_file(src / name)
    manifest = {
        "format": FORMAT_NAME,
        "converter_version": CONVERTER_VERSION,
        "upstream_version": _upstream_version(),
        "files": files,
        "source_files": source,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _upstream_version() -> str | None:
    """The installed qwen-tts version, read from package metadata (never imported)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("qwen-tts")
    except PackageNotFoundError:
        return None
