"""Reading and writing the weights of a checkpoint directory (single file or shards + index).

Only safetensors are read: nothing here ever unpickles.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be used; the message names what is wrong."""


def weight_files(directory: Path) -> dict[str, list[str]]:
    """Map each weight file of ``directory`` to the tensor names the index assigns it.

    A single ``model.safetensors`` maps to [] (its header is the list). With an index, every shard
    it names must exist, and the index is cross-checked against the shards' headers later.
    """
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index ({e})") from e
        files: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            files.setdefault(shard, []).append(name)
        for shard in files:
            if not (directory / shard).is_file():
                raise CheckpointError(f"{index}: shard {shard} is missing")
        return files
    if (directory / WEIGHTS_NAME).is_file():
        return {WEIGHTS_NAME: []}
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")) or any(directory.glob("*.pth")):
        raise CheckpointError(
            f"{directory}: only pickle weights (.bin/.pt) found; they are refused because loading them can run code. "
            "Convert them to safetensors first."
        )
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}")


class TensorSource:
    """Every tensor of a checkpoint directory, readable by name without loading the rest.

    A context manager: the files stay open (memory-mapped) until it exits. Names that appear in
    two files, and index/shard disagreements, are errors naming the tensor.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._stack = contextlib.ExitStack()
        self.files: dict[str, str] = {}  # tensor name -> file name
        self._handles: dict[str, object] = {}

    def __enter__(self) -> "TensorSource":
        try:
            for file, indexed in weight_files(self.directory).items():
                path = self.directory / file
                try:
                    handle = self._stack.enter_context(safe_open(str(path), framework="pt"))
                    names = list(handle.keys())
                except SafetensorError as e:
                    raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e
                if indexed and sorted(indexed) != sorted(names):
                    extra = sorted(set(names) - set(indexed))
                    absent = sorted(set(indexed) - set(names))
                    raise CheckpointError(
                        f"{path}: index and shard disagree (in shard only: {extra[:5]}, in index only: {absent[:5]})"
                    )
                for name in names:
                    if name in self.files:
                        raise CheckpointError(f"{self.directory}: tensor {name} appears in {self.files[name]} and {file}")
                    self.files[name] = file
                    self._handles[name] = handle
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return list(self.files)

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._handles[name].get_tensor(name)
        except SafetensorError as e:
            raise CheckpointError(f"{self.directory / self.files[name]}: cannot read tensor {name} ({e})") from e


def load_state_dict(directory: Path, dtype: torch.dtype | None = None, device="cpu") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    with TensorSource(directory) as source:
        for name in source.names():
            t = source.get(name)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[name] = t.to(device)
    return out
