"""What one server offers and allows: its model id, limits, and the audio formats it can encode."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Request limits (each has a `q3tts serve` flag)."""

    max_queue: int = 8  # requests waiting behind the one running; one more is a 429
    max_input_chars: int = 4096  # OpenAI's limit for `input`
    max_upload_bytes: int = 10 * 1024 * 1024  # a reference recording (POST /v1/voices)
    max_ref_seconds: float = 60.0  # its duration
    max_new_tokens: int = 2048  # frames a request may ask for (and the default cap)
    max_voices: int = 64  # registered clone prompts kept in memory

    def __post_init__(self):
        for name in ("max_queue", "max_input_chars", "max_upload_bytes", "max_new_tokens", "max_voices"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.max_ref_seconds > 0:
            raise ValueError(f"max_ref_seconds must be > 0, got {self.max_ref_seconds!r}")


@dataclass(frozen=True)
class Settings:
    model_id: str  # what `model` must name, and GET /v1/models lists
    limits: Limits = field(default_factory=Limits)
    chunk_frames: int = 8  # streamed chunk sizes, as `q3tts synthesize --stream`
    first_chunk_frames: int = 4
