"""The one dtype table: torch dtype <-> safetensors code <-> the short name users type."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    torch: torch.dtype
    safetensors: str  # the code in a safetensors header
    short: str | None  # the name CLIs and reports use; None for dtypes users never choose


TABLE: tuple[DType, ...] = (
    DType(torch.float32, "F32", "fp32"),
    DType(torch.bfloat16, "BF16", "bf16"),
    DType(torch.float16, "F16", "fp16"),
    DType(torch.float64, "F64", None),
    DType(torch.int64, "I64", None),
    DType(torch.int32, "I32", None),
    DType(torch.int16, "I16", None),
    DType(torch.int8, "I8", None),
    DType(torch.uint8, "U8", None),
    DType(torch.bool, "BOOL", None),
)

BY_SAFETENSORS: dict[str, torch.dtype] = {d.safetensors: d.torch for d in TABLE}
SAFETENSORS_CODE: dict[torch.dtype, str] = {d.torch: d.safetensors for d in TABLE}
BY_SHORT: dict[str, torch.dtype] = {d.short: d.torch for d in TABLE if d.short}
SHORT_NAME: dict[torch.dtype, str] = {d.torch: d.short for d in TABLE if d.short}


def parse_dtype(name: str, allowed: tuple[str, ...] = ("fp32", "bf16", "fp16")) -> torch.dtype | None:
    """A user's dtype name -> torch dtype; "keep" -> None (keep what is stored)."""
    if name == "keep":
        return None
    if name not in allowed:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(('keep',) + allowed)}")
    return BY_SHORT[name]
