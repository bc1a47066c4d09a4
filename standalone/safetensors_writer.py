"""Streaming safetensors writing for the converter: one tensor in memory at a time.

The header is laid out first, from the planned shapes and dtypes, then each tensor's bytes are
appended as it is produced and hashed on the way. Reading is the runtime's one checkpoint reader
(q3tts.standalone.checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import torch

from .dtypes import SAFETENSORS_CODE


class StreamError(ValueError):
    pass


class SafetensorsWriter:
    """Write tensors whose names, dtypes and shapes are known up front, one at a time, in order."""

    def __init__(
        self, path: Path, specs: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None
    ):
        self.path = path
        header: dict = {}
        offset = 0
        self._order = []
        for name, dtype, shape in specs:
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": SAFETENSORS_CODE[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self._order.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        if metadata:
            header["__metadata__"] = metadata
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        try:
            self._f = open(path, "wb")
        except OSError as e:
            raise StreamError(f"{path}: cannot create ({e.strerror or e})") from e
        self.sha256 = hashlib.sha256()  # of the whole file, computed as it is written
        self._put(struct.pack("<Q", len(raw)))
        self._put(raw)
        self._next = 0
        self.total_bytes = offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want_name, dtype, shape, nbytes = self._order[self._next]
        if name != want_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise StreamError(
                f"{self.path}: writer expected {want_name} {SAFETENSORS_CODE[dtype]} {list(shape)}, "
                f"got {name} {tensor.dtype} {list(tensor.shape)}"
            )
        if nbytes:
            data = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy()
            self._put(memoryview(data))
        self._next += 1

    def _put(self, data) -> None:
        try:
            self._f.write(data)
        except OSError as e:  # disk full, file size limit, revoked permission: name the file
            self._f.close()
            raise StreamError(f"{self.path}: write failed ({e.strerror or e})") from e
        self.sha256.update(data)

    def close(self) -> None:
        if self._next != len(self._order):
            self._f.close()
            raise StreamError(f"{self.path}: closed after {self._next} of {len(self._order)} tensors")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise StreamError(f"{self.path}: write failed ({e.strerror or e})") from e
        finally:
            self._f.close()


def plan_shards(specs: list[tuple[str, torch.dtype, tuple[int, ...]]], shard_bytes: int | None) -> list[list[int]]:
    """Group tensor indices into shards of at most ``shard_bytes`` (a tensor larger than that gets
    a shard of its own); None or 0: one file."""
    if not shard_bytes:
        return [list(range(len(specs)))]
    shards: list[list[int]] = [[]]
    size = 0
    for i, (_, dtype, shape) in enumerate(specs):
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += n
    return shards


def parse_size(text: str) -> int:
    """'2GB', '500MB', '1.5GiB', '123' (bytes) -> bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGIB")
    unit = s[len(num) :]
    if unit not in units:
        raise ValueError(f"cannot parse size {text!r} (use e.g. 2GB, 500MB, 1GiB)")
    try:
        value = float(num)
    except ValueError as e:
        raise ValueError(f"cannot parse size {text!r}") from e
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return int(value * units[unit])
