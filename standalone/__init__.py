"""q3tts.standalone: Qwen3-TTS on torch + safetensors, without transformers."""

from .checkpoint import CheckpointError
from .config import ConfigError, Qwen3TTSConfig
from .model import Qwen3TTS

__all__ = ["Qwen3TTS", "Qwen3TTSConfig", "CheckpointError", "ConfigError"]
