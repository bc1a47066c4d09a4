"""Helpers of the bad-input rows for issue 31's edges (tests/bad_inputs.py holds the rows): a copy
of a row's checkpoint with one file edited, loaded, then removed; a FIFO in place of a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def load_edited(m, edit, name: str = "manifest.json", then=None):
    """``type(m).from_pretrained`` on a copy of ``m``'s checkpoint whose JSON file ``name`` was
    edited in place by ``edit(data)``; ``then(model)``, if given, runs while the copy exists (a
    lazily loaded part reads it) and is returned."""
    with tempfile.TemporaryDirectory(prefix="q3tts-bad-input-") as tmp:
        directory = Path(tmp) / "ckpt"
        shutil.copytree(m.checkpoint_dir, directory)
        path = directory / name
        data = json.loads(path.read_text(encoding="utf-8"))
        text = edit(data)  # a str: the file's new text as is; None: the edited data
        path.write_text(text if isinstance(text, str) else json.dumps(data), encoding="utf-8")
        if name != "manifest.json":  # an edited file no manifest vouches for
            (directory / "manifest.json").unlink()
        model = type(m).from_pretrained(directory)
        return model if then is None else then(model)


def load_changed(m, change, **kwargs):
    """``type(m).from_pretrained(copy, **kwargs)`` on a copy of ``m``'s checkpoint changed in
    place by ``change(directory)``."""
    with tempfile.TemporaryDirectory(prefix="q3tts-bad-input-") as tmp:
        directory = Path(tmp) / "ckpt"
        shutil.copytree(m.checkpoint_dir, directory)
        change(directory)
        return type(m).from_pretrained(directory, **kwargs)


def flip_byte(rel: str):
    """A change for load_changed: one byte of ``rel`` flipped, in the middle of its data."""

    def change(directory: Path) -> None:
        path = directory / rel
        data = bytearray(path.read_bytes())
        data[len(data) - 5] ^= 0x01  # a byte of the last tensor's data: the size and the header stay
        path.write_bytes(bytes(data))

    return change


def with_fifo(call):
    """``call(path)`` with ``path`` a FIFO nobody writes to (a read of it blocks forever)."""
    with tempfile.TemporaryDirectory(prefix="q3tts-bad-input-") as tmp:
        path = os.path.join(tmp, "ref.wav")
        os.mkfifo(path)
        return call(path)


def with_env(name: str, value: str, call):
    """``call()`` with the environment variable ``name`` set to ``value``, restored after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return call()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def with_wav_file(call, wav, sr: int = 24000):
    """``call(path)`` with ``wav`` written to a temporary ref.wav."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="q3tts-bad-input-") as tmp:
        path = os.path.join(tmp, "ref.wav")
        sf.write(path, wav, sr)
        return call(path)
