"""q3tts.convert: upstream qwen-tts checkpoints <-> the standalone layout."""

from .convert import ConversionError, ConversionSummary, convert_checkpoint

__all__ = ["convert_checkpoint", "ConversionError", "ConversionSummary"]
