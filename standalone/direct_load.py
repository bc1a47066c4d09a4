"""Direct loading of upstream checkpoints: converted once into a cache, then loaded from there.

The conversion is convert-ckpt's own code path (conversion.convert_checkpoint: the same map, the
same strict accounting, the same durable writer and manifest), into
``$Q3TTS_CACHE/<key>`` (default: ``<hub cache>/q3tts-standalone/<key>``). The key is the sha256 of
the converter version and of every source file's sha256, so a second load reuses the result and
a changed source converts again. File hashes are memoised by (size, mtime, inode) beside the
cache, and a hub blob named by its sha256 is not read at all.

Two processes converting the same source race through the durable writer's no-replace rename:
the loser finds the winner's directory in place and loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

from .checkpoint import CheckpointError
from .config import FORMAT_NAME
from .jsonfile import load_json_text
from .manifest import check_sizes

CACHE_ENV = "Q3TTS_CACHE"
_HASH_MEMO = "source-hashes.json"
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


def checkpoint_format(directory: Path) -> str:
    """ "standalone" or "upstream", from config.json; anything else is a CheckpointError."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json; neither a standalone nor an upstream qwen-tts checkpoint")
    try:
        raw = load_json_text(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    if isinstance(raw, dict) and raw.get("format") == FORMAT_NAME:
        return "standalone"
    if isinstance(raw, dict) and "talker_config" in raw:
        return "upstream"
    raise CheckpointError(
        f"{directory}: config.json describes neither a standalone checkpoint (format {FORMAT_NAME!r}) nor an upstream "
        "qwen-tts one (talker_config)"
    )


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"
    )
    return Path(hub) / "q3tts-standalone"


def _source_files(src: Path) -> list[Path]:
    """Every file of the source, hidden ones (.cache, .git) excepted."""
    return [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
    ]


def _file_sha256(path: Path, memo: dict[str, list]) -> str:
    real = path.resolve()
    if _SHA256_NAME.match(real.name):  # a hub blob: git-lfs names it by its content's sha256
        return real.name
    st = real.stat()
    sig = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = memo.get(str(real))
    if hit and hit[:3] == sig:
        return hit[3]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    memo[str(real)] = [*sig, h.hexdigest()]
    return h.hexdigest()


def source_key(src: Path, root: Path) -> str:
    """sha256 of the converter version and of every source file's (path, sha256)."""
    from .conversion import CONVERTER_VERSION

    memo_path = root / _HASH_MEMO
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8")) if memo_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        memo = {}
    h = hashlib.sha256(f"q3tts-convert {CONVERTER_VERSION}\n".encode())
    for p in _source_files(src):
        h.update(f"{p.relative_to(src).as_posix()} {_file_sha256(p, memo)}\n".encode())
    try:
        tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(memo), encoding="utf-8")
        os.replace(tmp, memo_path)
    except OSError:
        pass  # the memo only saves time
    return h.hexdigest()


def converted_checkpoint(src: Path, *, progress: bool | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The standalone conversion of the upstream checkpoint ``src``, made on first use."""
    from .conversion import ConversionError, convert_checkpoint

    say = say or (lambda m: print(f"q3tts: {m}", file=sys.stderr))
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise CheckpointError(
            f"{root}: the conversion cache is not writable ({e.strerror or e}); set {CACHE_ENV} to a writable "
            "directory, or convert once with convert-ckpt and load the result"
        ) from e
    dst = root / source_key(src, root)[:32]
    if (dst / "config.json").is_file():
        check_sizes(dst)
        return dst
    say(f"converting {src} into {dst} (once; later loads reuse it)")
    t0 = time.perf_counter()
    try:
        convert_checkpoint(src, dst, progress=sys.stderr.isatty() if progress is None else progress, say=say)
    except ConversionError as e:
        if "appeared while this run was writing" in str(e) and (dst / "config.json").is_file():
            say(f"another process converted {src} meanwhile; using its result")
            return dst
        raise CheckpointError(f"{src}: cannot be converted ({e})") from e
    say(f"converted in {time.perf_counter() - t0:.2f} s")
    return dst
