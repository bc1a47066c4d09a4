"""Registered voices: a reference recording and its transcript turned once into a clone prompt
(speaker embedding, and reference codes when there is a transcript), kept in memory under an id."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ApiError, bad_field
from .settings import Limits


@dataclass
class Voice:
    id: str
    name: str
    created_at: int
    ref_text: str | None
    seconds: float
    prompt: Any = None  # create_voice_clone_prompt's items

    def describe(self) -> dict:
        """OpenAI's voice object, plus what this server knows about it."""
        return {
            "id": self.id,
            "object": "audio.voice",
            "type": "audio_sample",
            "name": self.name,
            "created_at": self.created_at,
            "mode": "icl" if self.ref_text else "x_vector_only",
            "seconds": round(self.seconds, 3),
        }


def voice_id(audio: bytes, ref_text: str | None) -> str:
    """The same recording and transcript always get the same id (a re-upload is not a new voice)."""
    digest = hashlib.sha256(audio + b"\0" + (ref_text or "").encode("utf-8")).hexdigest()
    return f"voice_{digest[:16]}"


def decode_upload(data: bytes, limits: Limits) -> tuple[np.ndarray, int]:
    """The uploaded recording as (float32 waveform, sample rate), within the size and duration limits."""
    import soundfile as sf

    if not data:
        raise bad_field("audio_sample", "audio_sample is empty")
    if len(data) > limits.max_upload_bytes:
        raise ApiError(
            413,
            f"audio_sample has {len(data)} bytes; the limit is {limits.max_upload_bytes} (--max-upload-mb)",
            "audio_sample",
            "too_large",
        )
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise bad_field("audio_sample", f"audio_sample is not audio soundfile can read ({e})") from None
    seconds = len(wav) / sr if sr else 0.0
    if seconds > limits.max_ref_seconds:
        raise bad_field(
            "audio_sample",
            f"audio_sample lasts {seconds:.1f} s; the limit is {limits.max_ref_seconds:g} s (--max-ref-seconds)",
            "too_long",
        )
    if len(wav) == 0:
        raise bad_field("audio_sample", "audio_sample holds no samples")
    return wav, sr


class VoiceStore:
    """Thread-safe id -> Voice, at most ``limit`` voices."""

    def __init__(self, limit: int):
        self.limit = limit
        self._voices: dict[str, Voice] = {}
        self._lock = threading.Lock()

    def __contains__(self, vid: object) -> bool:
        with self._lock:
            return vid in self._voices

    def get(self, vid: str) -> Voice | None:
        with self._lock:
            return self._voices.get(vid)

    def list(self) -> list[Voice]:
        with self._lock:
            return list(self._voices.values())

    def check_room(self, vid: str) -> None:
        with self._lock:
            if vid not in self._voices and len(self._voices) >= self.limit:
                raise ApiError(
                    400,
                    f"{self.limit} voices are registered, the limit (--max-voices); delete one first",
                    None,
                    "too_many_voices",
                )

    def add(self, voice: Voice) -> None:
        with self._lock:
            self._voices[voice.id] = voice

    def remove(self, vid: str) -> bool:
        with self._lock:
            return self._voices.pop(vid, None) is not None


def new_voice(vid: str, name: str | None, ref_text: str | None, seconds: float) -> Voice:
    return Voice(id=vid, name=name or vid, created_at=int(time.time()), ref_text=ref_text, seconds=seconds)
