"""q3tts.convert: the `convert-ckpt` command.

The layout map and the streaming conversion engine live in the runtime (q3tts.standalone.layout
and q3tts.standalone.conversion), because `Qwen3TTS.from_pretrained` converts an upstream
checkpoint on first load with the same code; this package is the command over them. The names
load on first use, so that `convert-ckpt` installs its signal handling before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ConversionError", "ConversionSummary", "convert_checkpoint"]

if TYPE_CHECKING:
    from q3tts.standalone.conversion import ConversionError, ConversionSummary, convert_checkpoint


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("q3tts.standalone.conversion"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
