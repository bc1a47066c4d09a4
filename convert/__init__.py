"""q3tts.convert: the `convert-ckpt` command.

The layout map and the streaming conversion engine live in the runtime (q3tts.standalone.layout
and q3tts.standalone.conversion), because `Qwen3TTS.from_pretrained` converts an upstream
checkpoint on first load with the same code; this package is the command over them.
"""

from q3tts.standalone.conversion import ConversionError, ConversionSummary, convert_checkpoint

__all__ = ["ConversionError", "ConversionSummary", "convert_checkpoint"]
