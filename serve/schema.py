"""A speech request (POST /v1/audio/speech), validated field by field into a SpeechRequest.

OpenAI's fields (``model``, ``input``, ``voice``, ``instructions``, ``response_format``,
``speed``, ``stream_format``) plus this server's extra fields: ``language``, ``seed``, ``stream``
(a boolean alias for ``stream_format: "audio"``), ``chunk_frames`` / ``first_chunk_frames`` and
upstream's sampling keywords by their names (``temperature``, ``top_k``, ``top_p``,
``do_sample``, ``repetition_penalty``, ``subtalker_*``, ``max_new_tokens``). Any other field is
refused (a typo such as ``temprature`` would otherwise be silently ignored). Every error is an
ApiError naming the field.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from q3tts.standalone.generation import GenerateOptions, voice_method_options

from .errors import ApiError, bad_field
from .formats import OPENAI_FORMATS, STREAMABLE
from .settings import Settings

SAMPLING_FIELDS = tuple(f for f in GenerateOptions.__dataclass_fields__ if f != "eos_token_id")
OPENAI_FIELDS = ("model", "input", "voice", "instructions", "response_format", "speed", "stream_format")
EXTRA_FIELDS = ("language", "seed", "stream", "chunk_frames", "first_chunk_frames", *SAMPLING_FIELDS)
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts
MAX_CHUNK_FRAMES = 300


@dataclass(frozen=True)
class ModelInfo:
    """What requests are checked against: the loaded checkpoint's type, speakers, languages,
    generation defaults, and the formats this process can encode."""

    kind: str  # custom_voice, voice_design or base
    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    generate_defaults: dict = field(default_factory=dict)
    formats: tuple[str, ...] = ("pcm", "wav", "flac")
    sample_rate: int = 24000

    @property
    def default_format(self) -> str:
        return "mp3" if "mp3" in self.formats else "wav"  # OpenAI's default is mp3


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    language: str
    response_format: str
    stream_format: str | None  # None: one body when done; "audio": raw chunks; "sse": events
    speaker: str | None = None  # custom_voice
    voice_id: str | None = None  # base: a registered clone prompt
    instructions: str | None = None
    seed: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # upstream's names, as given
    chunk_frames: int = 8
    first_chunk_frames: int = 4


def parse_speech(body: Any, settings: Settings, info: ModelInfo, voice_ids) -> SpeechRequest:
    """The request's body (parsed JSON) checked against the server and its model."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__}", param="body")
    unknown = sorted(set(body) - set(OPENAI_FIELDS) - set(EXTRA_FIELDS))
    if unknown:
        raise bad_field(unknown[0], f"{unknown[0]}: unknown field; known: {sorted(OPENAI_FIELDS + EXTRA_FIELDS)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_field("model", "model is required (a string; GET /v1/models lists it)")
    if model != settings.model_id:
        raise ApiError(
            404,
            f"model {model!r} is not served here; this server serves {settings.model_id!r}",
            "model",
            "model_not_found",
        )
    text = _text("input", body.get("input"), settings.limits.max_input_chars, required=True)
    speaker, voice_id = _voice(body.get("voice"), info, voice_ids)
    instructions = _instructions(body.get("instructions"), info, settings.limits.max_input_chars)
    fmt, stream = _formats(body, info)
    _speed(body.get("speed", 1.0))
    language = _language(body.get("language", "auto"), info)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed, *SEED_RANGE):
        raise bad_field("seed", f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {seed!r}")
    sampling = _sampling(body, info, settings.limits.max_new_tokens)
    chunks = {}
    for name in ("chunk_frames", "first_chunk_frames"):
        value = body.get(name, getattr(settings, name))
        if not _is_int(value, 1, MAX_CHUNK_FRAMES):
            raise bad_field(name, f"{name} must be an integer in [1, {MAX_CHUNK_FRAMES}], got {value!r}")
        chunks[name] = value
    return SpeechRequest(text, language, fmt, stream, speaker, voice_id, instructions, seed, sampling, **chunks)


def _is_int(value, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and low <= value <= high


def _text(name: str, value, limit: int, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_field(name, f"{name} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise bad_field(name, f"{name} is empty or whitespace only; there is nothing to say", "empty")
    if len(value) > limit:
        raise bad_field(
            name, f"{name} has {len(value)} characters; the limit is {limit} (--max-input-chars)", "too_long"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad_field(name, f"{name} is not valid Unicode ({e.reason} at position {e.start})") from None
    return value


def _voice(value, info: ModelInfo, voice_ids) -> tuple[str | None, str | None]:
    """(speaker, clone voice id). ``voice`` is a string or OpenAI's custom voice ``{"id": ...}``."""
    if isinstance(value, dict) and set(value) == {"id"}:
        value = value["id"]
    if info.kind == "voice_design":
        if value is not None and not isinstance(value, str):
            raise bad_field("voice", f"voice must be a string, got {type(value).__name__}")
        return None, None  # the voice is described by `instructions`
    if not isinstance(value, str) or not value:
        raise bad_field("voice", 'voice is required (a string or {"id": ...})')
    if info.kind == "custom_voice":
        if value.lower() not in info.speakers:
            raise bad_field(
                "voice",
                f"voice {value!r} is not a speaker of this model; speakers: {list(info.speakers)}",
                "unknown_voice",
            )
        return value.lower(), None
    if value not in voice_ids:
        raise bad_field(
            "voice", f"voice {value!r} is not a registered voice; register one with POST /v1/voices", "unknown_voice"
        )
    return None, value


def _instructions(value, info: ModelInfo, limit: int) -> str | None:
    value = _text("instructions", value, limit, required=False)
    if info.kind == "base" and value:
        raise bad_field("instructions", "instructions do not apply to a base (voice clone) model")
    if info.kind == "voice_design" and not (value and value.strip()):
        raise bad_field("instructions", "instructions are required by a voice_design model (describe the voice)")
    return value or None


def _formats(body: dict, info: ModelInfo) -> tuple[str, str | None]:
    fmt = body.get("response_format", info.default_format)
    if fmt not in OPENAI_FORMATS:
        raise bad_field("response_format", f"response_format must be one of {list(OPENAI_FORMATS)}, got {fmt!r}")
    if fmt not in info.formats:
        raise bad_field(
            "response_format",
            f"response_format {fmt!r} has no encoder here; available: {list(info.formats)}",
            "unsupported_format",
        )
    stream = body.get("stream_format")
    flag = body.get("stream", False)
    if not isinstance(flag, bool):
        raise bad_field("stream", f"stream must be true or false, got {flag!r}")
    if stream is None and flag:
        stream = "audio"
    if stream not in (None, "audio", "sse"):
        raise bad_field("stream_format", f"stream_format must be 'audio' or 'sse', got {stream!r}")
    if stream is not None and fmt not in STREAMABLE:
        raise bad_field(
            "stream_format", f"streaming sends {list(STREAMABLE)}; response_format {fmt!r} is encoded whole"
        )
    return fmt, stream


def _speed(value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != 1.0:
        raise bad_field(
            "speed", f"speed must be 1.0 (the model speaks at its own pace), got {value!r}", "unsupported_value"
        )


def _language(value, info: ModelInfo) -> str:
    if not isinstance(value, str) or value.lower() not in info.languages:
        raise bad_field("language", f"language must be one of {list(info.languages)}, got {value!r}")
    return value.lower()


def _sampling(body: dict, info: ModelInfo, max_new_tokens: int) -> dict[str, Any]:
    """The sampling fields given, checked together with the checkpoint's defaults as the model
    will merge them; max_new_tokens is capped by the server's limit."""
    given = {k: body[k] for k in SAMPLING_FIELDS if k in body and body[k] is not None}
    merged = voice_method_options(info.generate_defaults, given)
    try:
        GenerateOptions(**{k: v for k, v in merged.items() if k in GenerateOptions.__dataclass_fields__})
    except (TypeError, ValueError) as e:
        match = re.match(r"(\w+)", str(e))
        name = match.group(1) if match and match.group(1) in SAMPLING_FIELDS else "body"
        raise bad_field(name, str(e)) from None
    if merged["max_new_tokens"] > max_new_tokens:
        if "max_new_tokens" in given:
            raise bad_field(
                "max_new_tokens",
                f"max_new_tokens must be <= {max_new_tokens} (--max-new-tokens), got {given['max_new_tokens']}",
            )
        given["max_new_tokens"] = max_new_tokens
    return given
