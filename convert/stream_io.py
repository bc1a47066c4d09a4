"""Streaming safetensors I/O for the converter: one tensor in memory at a time.

Reading uses plain positioned reads (not a memory map), so the bytes of tensors already
converted do not stay resident; writing lays out the header first, from the planned shapes and
dtypes, then appends each tensor's bytes as it is produced. Every structural problem (bad header,
offsets outside the file, a truncated data section) is a StreamError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20


class StreamError(ValueError):
    pass


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the data
    nbytes: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header: (tensors by name, metadata)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise StreamError(f"{path}: truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise StreamError(f"{path}: corrupt safetensors header (declared length {n}, file size {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StreamError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise StreamError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", {}) or {}
    infos: dict[str, TensorInfo] = {}
    data_start = 8 + n
    spans = []
    for name, spec in header.items():
        try:
            dtype = DTYPES[spec["dtype"]]
            shape = tuple(int(s) for s in spec["shape"])
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise StreamError(f"{path}: corrupt header entry for tensor {name} ({e!r})") from e
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != math.prod(shape) * itemsize or begin < 0:
            raise StreamError(f"{path}: tensor {name}: offsets [{begin}, {end}) do not match shape {list(shape)} {spec['dtype']}")
        if data_start + end > size:
            raise StreamError(f"{path}: truncated: tensor {name} ends at byte {data_start + end}, file has {size}")
        infos[name] = TensorInfo(name, dtype, shape, data_start + begin, end - begin)
        spans.append((begin, end))
    spans.sort()
    cursor = 0
    for begin, end in spans:
        if begin != cursor:
            raise StreamError(f"{path}: corrupt data layout (gap or overlap at byte {begin})")
        cursor = end
    if data_start + cursor != size:
        raise StreamError(f"{path}: {size - data_start - cursor} unexpected trailing bytes after the last tensor")
    return infos, meta


def read_tensor(f: BinaryIO, info: TensorInfo) -> torch.Tensor:
    f.seek(info.begin)
    buf = bytearray(info.nbytes)
    view = memoryview(buf)
    got = 0
    while got < info.nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise StreamError(f"{getattr(f, 'name', '?')}: truncated while reading tensor {info.name}")
        got += n
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    return torch.frombuffer(buf, dtype=torch.uint8).view(info.dtype).reshape(info.shape)


class SafetensorsWriter:
    """Write tensors whose names, dtypes and shapes are known up front, one at a time, in order."""

    def __init__(self, path: Path, specs: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None):
        self.path = path
        header: dict = {}
        offset = 0
        self._order = []
        for name, dtype, shape in specs:
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._order.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        if metadata:
            header["__metadata__"] = metadata
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self._f = open(path, "wb")
        self.sha256 = hashlib.sha256()  # of the whole file, computed as it is written
        self._put(struct.pack("<Q", len(raw)))
        self._put(raw)
        self._next = 0
        self.total_bytes = offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want_name, dtype, shape, nbytes = self._order[self._next]
        if name != want_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise StreamError(f"{self.path}: writer expected {want_name} {DTYPE_NAMES[dtype]} {list(shape)}, "
                              f"got {name} {tensor.dtype} {list(tensor.shape)}")
        if nbytes:
            data = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy()
            self._put(memoryview(data))
        self._next += 1

    def _put(self, data) -> None:
        self._f.write(data)
        self.sha256.update(data)

    def close(self) -> None:
        if self._next != len(self._order):
            self._f.close()
            raise StreamError(f"{self.path}: closed after {self._next} of {len(self._order)} tensors")
        self._f.flush()
        os.fsync(self._f.fileno())
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
    unit = s[len(num):]
    if unit not in units:
        raise ValueError(f"cannot parse size {text!r} (use e.g. 2GB, 500MB, 1GiB)")
    try:
        value = float(num)
    except ValueError as e:
        raise ValueError(f"cannot parse size {text!r}") from e
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return int(value * units[unit])
