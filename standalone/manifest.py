"""manifest.json, the whole truth about a converted directory.

convert-ckpt (and the fine-tuning checkpoints, and the GGUF output) record every file they wrote
with its size and sha256. The manifest decides what a directory holds:

- The loader reads only the files it lists (``listed_names``): a weights index or a shard dropped
  into a converted directory afterwards is not read.
- ``check_sizes`` (every load) names a missing or resized listed file; ``check_hashes``
  (``convert-ckpt --check``) re-hashes every listed file and reports every file that is not
  listed, failing on those a loader would read (weights, index files, configs, token lists).
- A manifest whose paths leave the directory (``../``, absolute paths) or whose entries are not
  ``{"size": int, "sha256": hex}`` is refused with one error before any path of it is touched.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Callable

from .errors import CheckpointError

MANIFEST_NAME = "manifest.json"
SUBDIRS = ("speech_tokenizer",)  # directories whose files the parent's manifest lists
# Unlisted files of these kinds are ones a loader reads: weights and index files, configs, token lists.
LOADER_SUFFIXES = (".safetensors", ".json", ".txt")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IGNORED = (MANIFEST_NAME, ".q3tts-partial-owner.json")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: damaged manifest ({why}); convert the checkpoint again")


def _check_entry(path: Path, rel, entry) -> None:
    if not isinstance(rel, str) or not rel:
        raise _damaged(path, f"file name {rel!r} is not a relative path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or re.match(r"^[A-Za-z]:", rel):
        raise _damaged(path, f"entry {rel!r} is an absolute path; entries must stay inside the directory")
    if any(part in ("..", ".", "") for part in rel.split("/")):
        raise _damaged(path, f"entry {rel!r} leaves the directory or is not a plain relative path")
    if not isinstance(entry, dict):
        raise _damaged(path, f"entry {rel!r} is a {type(entry).__name__}, expected an object with size and sha256")
    size, digest = entry.get("size"), entry.get("sha256")
    if type(size) is not int or size < 0:
        raise _damaged(path, f"entry {rel!r}: size {size!r} is not a non-negative integer")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise _damaged(path, f"entry {rel!r}: sha256 {digest!r} is not 64 lower-case hex digits")


def read_manifest(directory: Path) -> dict[str, dict] | None:
    """The validated ``files`` table of ``directory/manifest.json``, or None when there is none.
    Every entry is checked (a relative path inside the directory, ``{"size", "sha256"}``) before
    any caller touches a path of it."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    from .jsonfile import load_json_text

    try:
        files = load_json_text(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise _damaged(path, str(e) if isinstance(e, ValueError) else repr(e)) from e
    if not isinstance(files, dict):
        raise _damaged(path, f"files is a {type(files).__name__}, expected an object")
    for rel, entry in files.items():
        _check_entry(path, rel, entry)
    return files


def listed_names(directory: Path) -> frozenset[str] | None:
    """The files of ``directory`` the manifest lists, relative to ``directory`` (its own manifest,
    or its parent's for ``speech_tokenizer/``); None when no manifest covers it."""
    directory = Path(directory)
    files = read_manifest(directory)
    if files is not None:
        return frozenset(files)
    if directory.name in SUBDIRS:
        files = read_manifest(directory.parent)
        if files is not None:
            prefix = directory.name + "/"
            return frozenset(rel[len(prefix) :] for rel in files if rel.startswith(prefix))
    return None


def check_sizes(directory: Path) -> None:
    """Every file the manifest lists exists with its recorded size: cheap, done on every load.
    Raises CheckpointError naming the first damaged file."""
    directory = Path(directory)
    for rel, entry in (read_manifest(directory) or {}).items():
        path = directory / rel
        want = entry["size"]
        got = path.stat().st_size if path.is_file() else None
        if got != want:
            state = "is missing" if got is None else f"has {got} bytes, the manifest says {want}"
            raise CheckpointError(
                f"{path} {state}: the checkpoint is damaged (an interrupted copy or download?); "
                "convert it again or restore the file"
            )


def verify_hashes(directory: Path, sha256: Callable[[Path], str] = sha256_file) -> None:
    """Every file the manifest lists present, at its size and with its sha256 (from_pretrained's
    ``verify="sha256"``); CheckpointError naming the first file that is not. Unlisted files are
    not read by the loader and not hashed here (``convert-ckpt --check`` reports them)."""
    directory = Path(directory)
    files = read_manifest(directory)
    if files is None:
        raise CheckpointError(
            f"{directory}: verify='sha256' needs {MANIFEST_NAME} (convert-ckpt's record of every file's hash), "
            "and there is none"
        )
    check_sizes(directory)
    for rel, entry in sorted(files.items()):
        if sha256(directory / rel) != entry["sha256"]:
            raise CheckpointError(
                f"{directory / rel}: sha256 differs from the manifest (same size: the content changed; a flipped "
                "bit or an edit); convert the checkpoint again or restore the file"
            )


def unlisted_files(directory: Path, files: dict) -> tuple[list[str], list[str]]:
    """Files in ``directory`` the manifest does not list: (those a loader would read, the rest)."""
    read, other = [], []
    for p in sorted(Path(directory).rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_dir() or rel in files or p.name in _IGNORED:
            continue
        (read if p.suffix in LOADER_SUFFIXES else other).append(rel)
    return read, other


def check_hashes(directory: Path, sha256: Callable[[Path], str] = sha256_file) -> tuple[list[str], list[str]]:
    """(problems, notes), one line each, from re-hashing every listed file against the manifest:
    ``damaged: PATH: ...`` for a listed file that is missing or changed, ``unlisted: PATH: ...``
    for an unlisted file a loader would read (the loader ignores it, but it was planted or left
    over), and a ``note: PATH: ...`` for any other unlisted file."""
    directory = Path(directory)
    files = read_manifest(directory)
    if files is None:
        return [f"{directory / MANIFEST_NAME}: missing (only convert-ckpt output can be checked)"], []
    problems = []
    for rel, entry in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"damaged: {path}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"damaged: {path}: {path.stat().st_size} bytes, the manifest says {entry['size']}")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"damaged: {path}: sha256 differs from the manifest (same size: the content changed)")
    read, other = unlisted_files(directory, files)
    problems += [
        f"unlisted: {directory / rel}: not in the manifest, and a loader reads files like it "
        "(planted or left over? the loader ignores it)"
        for rel in read
    ]
    return problems, [f"note: {directory / rel}: not in the manifest (no loader reads it)" for rel in other]
