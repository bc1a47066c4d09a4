"""The released 12 Hz checkpoints' config files, as published (verify/official/, sources in
verify/official/SOURCES.md), for random-weight models at real size: benchmarks, shape checks, the
official-file corpus tests. Never downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OFFICIAL_DIR = Path(__file__).resolve().parent / "official"
TOKENIZER_REPO = "Qwen3-TTS-Tokenizer-12Hz"
_KINDS = {"base": "Base", "custom_voice": "CustomVoice", "voice_design": "VoiceDesign"}
# The five official 12 Hz models: (size, model type) -> repository name.
RELEASES = {
    (size, model_type): f"Qwen3-TTS-12Hz-{size}-{_KINDS[model_type]}"
    for size, model_type in (
        ("0.6B", "base"),
        ("0.6B", "custom_voice"),
        ("1.7B", "base"),
        ("1.7B", "custom_voice"),
        ("1.7B", "voice_design"),
    )
}
# Every file recorded per model repository (the tokenizer repository: config.json and
# preprocessor_config.json).
MODEL_REPO_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/preprocessor_config.json",
)


def official_file(repo: str, path: str) -> dict[str, Any]:
    """One published file, parsed (key order as published)."""
    return json.loads((OFFICIAL_DIR / repo / path).read_text(encoding="utf-8"))


def release_repo(size: str, model_type: str) -> str:
    try:
        return RELEASES[(size, model_type)]
    except KeyError:
        raise ValueError(
            f"no official {size} {model_type} release (there are: " + ", ".join(f"{s} {t}" for s, t in RELEASES) + ")"
        ) from None


def released_config(size: str, model_type: str) -> dict[str, Any]:
    """config.json of an official release, as published."""
    return official_file(release_repo(size, model_type), "config.json")


def released_speech_tokenizer_config() -> dict[str, Any]:
    """speech_tokenizer/config.json of the released 12 Hz tokenizer, as published (the same bytes
    in every model repository and the tokenizer repository)."""
    return official_file(TOKENIZER_REPO, "config.json")
