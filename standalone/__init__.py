"""q3tts.standalone: Qwen3-TTS on torch + safetensors, without transformers.

The public names load on first use (PEP 562), so that importing a submodule (the command-line
entry points, standalone/interrupts.py) does not import torch first: a command installs its
signal handling before the seconds torch takes to import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Qwen3TTS", "Qwen3TTSConfig", "CheckpointError", "ConfigError"]
_HOME = {"Qwen3TTS": "model", "Qwen3TTSConfig": "config", "CheckpointError": "errors", "ConfigError": "config"}

if TYPE_CHECKING:
    from .config import ConfigError, Qwen3TTSConfig
    from .errors import CheckpointError
    from .model import Qwen3TTS


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
