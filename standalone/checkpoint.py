"""The one checkpoint reader: the weights of a directory (single file, or shards + index), read
tensor by tensor from validated safetensors headers. The runtime loads through it and the
converter streams through it.

Only safetensors are read: nothing here ever unpickles. Reads are plain positioned reads (not a
memory map), so tensors already consumed do not stay resident while a converter streams.
Every structural problem (bad header, offsets outside the file, a truncated data section, an
index that disagrees with its shards, a tensor in two files) is a CheckpointError naming the file
and the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .dtypes import BY_SAFETENSORS
from .errors import CheckpointError
from .jsonfile import load_json_text
from .manifest import check_sizes, listed_names

__all__ = ["CheckpointError", "CheckpointReader", "check_sizes", "load_state_dict", "read_header", "read_tensor"]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_MAX_HEADER = 100 * 2**20


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
            raise CheckpointError(f"{path}: truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt safetensors header (declared length {n}, file size {size})")
        raw = f.read(n)
    try:
        header = load_json_text(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", {}) or {}
    infos = {name: _tensor_info(path, name, spec, 8 + n, size) for name, spec in header.items()}
    _check_contiguous(path, infos, 8 + n, size)
    return infos, meta


def _tensor_info(path: Path, name: str, spec, data_start: int, size: int) -> TensorInfo:
    try:
        dtype = BY_SAFETENSORS[spec["dtype"]]
        shape = tuple(int(s) for s in spec["shape"])
        begin, end = (int(x) for x in spec["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt header entry for tensor {name} ({e!r})") from e
    itemsize = torch.empty((), dtype=dtype).element_size()
    if end - begin != math.prod(shape) * itemsize or begin < 0:
        raise CheckpointError(
            f"{path}: tensor {name}: offsets [{begin}, {end}) do not match shape {list(shape)} {spec['dtype']}"
        )
    if data_start + end > size:
        raise CheckpointError(f"{path}: truncated: tensor {name} ends at byte {data_start + end}, file has {size}")
    return TensorInfo(name, dtype, shape, data_start + begin, end - begin)


def _check_contiguous(path: Path, infos: dict[str, TensorInfo], data_start: int, size: int) -> None:
    cursor = data_start
    for info in sorted(infos.values(), key=lambda i: i.begin):
        if info.begin != cursor:
            raise CheckpointError(f"{path}: corrupt data layout (gap or overlap at byte {info.begin - data_start})")
        cursor = info.begin + info.nbytes
    if cursor != size:
        raise CheckpointError(f"{path}: {size - cursor} unexpected trailing bytes after the last tensor")


def read_tensor(f: BinaryIO, info: TensorInfo) -> torch.Tensor:
    """One tensor, read into memory that torch allocated (64-byte aligned), never a view of a
    Python buffer: MKL's fp32 matrix-vector product rounds by the weight's address on some CPUs
    (AMD EPYC, measured: 9.5e-07 on a [8, 32] linear between addresses 0 and 8 mod 16), so
    weights at canonical addresses give the same bits whatever the file layout."""
    f.seek(info.begin)
    out = torch.empty(info.nbytes, dtype=torch.uint8)
    view = memoryview(out.numpy())
    got = 0
    while got < info.nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise CheckpointError(f"{getattr(f, 'name', '?')}: truncated while reading tensor {info.name}")
        got += n
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    return out.view(info.dtype).reshape(info.shape)


def _load_index(index: Path) -> dict[str, str]:
    try:
        weight_map = load_json_text(index.read_text(encoding="utf-8")).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{index}: malformed index ({e})") from e
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no weight_map")
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map values must be file names (strings)")
    return weight_map


def _no_weights(directory: Path) -> CheckpointError:
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES) if directory.is_dir() else []
    if pickles:
        return CheckpointError(
            f"{directory}: only pickle weights ({', '.join(pickles)}); refused, because unpickling can run "
            "arbitrary code. Convert them to safetensors with a trusted tool first."
        )
    return CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}")


def has_weights(directory: Path) -> bool:
    listed = listed_names(directory)
    return _present(directory, WEIGHTS_NAME, listed) or _present(directory, INDEX_NAME, listed)


def _present(directory: Path, name: str, listed: frozenset[str] | None) -> bool:
    """A file of the directory as the loader sees it: present and, under a manifest, listed."""
    return (listed is None or name in listed) and (directory / name).is_file()


class CheckpointReader:
    """Every tensor of a checkpoint directory by name, from the headers; data read on demand.

    Under a manifest (manifest.py) only the files it lists exist for the reader: an index or a
    shard added afterwards is not read. A context manager: weight files are opened on first read
    and closed on exit.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.infos: dict[str, TensorInfo] = {}
        self.file_of: dict[str, str] = {}
        self.listed = listed_names(self.directory)
        index = self.directory / INDEX_NAME
        if _present(self.directory, INDEX_NAME, self.listed):
            weight_map = _load_index(index)
            self.files = sorted(set(weight_map.values()))
        elif _present(self.directory, WEIGHTS_NAME, self.listed):
            weight_map, self.files = None, [WEIGHTS_NAME]
        else:
            raise _no_weights(self.directory)
        for file in self.files:
            self._add_file(file, index)
        if weight_map is not None:
            self._check_index(weight_map, index)
        self._handles: dict[str, BinaryIO] = {}

    def _add_file(self, file: str, index: Path) -> None:
        path = self.directory / file
        if not isinstance(file, str) or "/" in file or "\\" in file or file in ("", ".", ".."):
            raise CheckpointError(f"{index}: shard name {file!r} is not a file name in the directory")
        if not path.is_file():
            raise CheckpointError(f"{index}: shard {file} is missing")
        if self.listed is not None and file not in self.listed:
            raise CheckpointError(f"{index}: shard {file} is not in the manifest; convert the checkpoint again")
        infos, _ = read_header(path)
        for name, info in infos.items():
            if name in self.infos:
                raise CheckpointError(f"{self.directory}: duplicate tensor {name} (in {self.file_of[name]} and {file})")
            self.infos[name] = info
            self.file_of[name] = file

    def _check_index(self, weight_map: dict[str, str], index: Path) -> None:
        for name, file in weight_map.items():
            if self.file_of.get(name) != file:
                raise CheckpointError(
                    f"{index}: index puts {name} in {file}, but it is in {self.file_of.get(name, 'no shard')}"
                )
        unindexed = sorted(set(self.infos) - set(weight_map))
        if unindexed:
            raise CheckpointError(f"{index}: tensor(s) {unindexed[:5]} are in the shards but not in the index")

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def names(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> torch.Tensor:
        file = self.file_of[name]
        if file not in self._handles:
            self._handles[file] = open(self.directory / file, "rb")
        return read_tensor(self._handles[file], self.infos[name])

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.infos.values())


def load_state_dict(directory: Path, dtype: torch.dtype | None = None, device="cpu") -> dict[str, torch.Tensor]:
    """Every tensor of ``directory``; floating tensors cast to ``dtype`` unless it is None."""
    out: dict[str, torch.Tensor] = {}
    with CheckpointReader(directory) as source:
        for name in source.names():
            t = source.get(name)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[name] = t.to(device)
    return out
