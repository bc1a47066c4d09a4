"""K-quant encoding for the GGUF target, through ggml's own quantizer.

The gguf Python package encodes Q8_0 but not the K-quants (Q4_K, Q6_K) that qwentts.cpp's 4-bit
variant Q4_K_M stores. Rather than a second implementation of ggml's block format, the GGUF target
calls ``ggml_quantize_chunk`` from the ggml library the qwentts.cpp binding ships
(``realtimetts-qwen-native-cpu``, the ``peers`` extra): the very routine qwentts.cpp's
tools/quantize.cpp runs, so our Q4_K_M files hold the codes that tool would write from the same
weights. Without the binding, asking for a K-quant says how to install it.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

# ggml_type values (ggml.h) and each type's block: (weights per block, bytes per block).
GGML_TYPES = {"Q4_K": 12, "Q6_K": 14}
BLOCKS = {"Q4_K": (256, 144), "Q6_K": (256, 210)}
BINDING_PACKAGE = "qwentts_cpp_cpu"
INSTALL_HINT = (
    "K-quant GGUF types (Q4_K_M) are encoded by the ggml library of the qwentts.cpp binding: "
    "pip install 'qwen3-tts-standalone[peers]'"
)


class GGMLUnavailable(RuntimeError):
    """No ggml library to quantize with; the message says how to install it."""


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec(BINDING_PACKAGE)  # located, not imported: nothing runs
    if spec is None or not spec.submodule_search_locations:
        raise GGMLUnavailable(INSTALL_HINT)
    for root in spec.submodule_search_locations:
        found = sorted(Path(root, "lib").glob("libggml-base.so*"))
        if found:
            lib = ctypes.CDLL(str(found[0]))
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.ggml_quantize_chunk.argtypes = [
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_int64,
                ctypes.c_int64,
                ctypes.c_void_p,
            ]
            return lib
    raise GGMLUnavailable(f"{BINDING_PACKAGE} has no lib/libggml-base.so; {INSTALL_HINT}")


def require_ggml() -> None:
    """Raise GGMLUnavailable (saying how to install it) unless ggml's quantizer can be loaded."""
    _library()


def quantize_rows(arr: np.ndarray, kind: str) -> np.ndarray:
    """``arr`` [..., K] (K a multiple of the block) -> the ggml blocks as uint8 [..., K / 256 *
    bytes per block], the byte layout gguf's writer takes with ``raw_dtype``."""
    if kind not in GGML_TYPES:
        raise ValueError(f"no ggml encoder for {kind!r}; known: {', '.join(GGML_TYPES)}")
    per_block, block_bytes = BLOCKS[kind]
    src = np.ascontiguousarray(arr, dtype=np.float32)
    k = src.shape[-1]
    if k % per_block:
        raise ValueError(f"{kind} rows must be a multiple of {per_block} weights, got {k}")
    rows = src.size // k
    out = np.empty((*src.shape[:-1], k // per_block * block_bytes), dtype=np.uint8)
    written = _library().ggml_quantize_chunk(GGML_TYPES[kind], src.ctypes.data, out.ctypes.data, 0, rows, k, None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes for {kind}, expected {out.nbytes}")
    return out
