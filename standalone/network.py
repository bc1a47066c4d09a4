"""The standalone model's parts, by attribute name: what its state dict is made of.

Qwen3TTS (model.py) holds these; the layout map (layout.py) builds them on the meta device for the
target shapes of a conversion, without importing the model and its loaders.
"""

from __future__ import annotations

from torch import nn

from .config import Qwen3TTSConfig
from .speaker_encoder import SpeakerEncoder
from .talker import CodePredictor, Talker


def network_parts(config: Qwen3TTSConfig) -> dict[str, nn.Module | None]:
    """{attribute name: module}; the speaker encoder is None for models without one."""
    return dict(
        talker=Talker(config.talker),
        code_predictor=CodePredictor(config.talker.code_predictor, config.talker.transformer.hidden_size),
        speaker_encoder=SpeakerEncoder(config.speaker_encoder) if config.speaker_encoder is not None else None,
    )
