"""Model configuration as frozen dataclasses.

Two sources feed these classes: an upstream ``config.json`` (``from_upstream``), whose quirks are
handled here once (``head_dim`` and ``text_vocab_size`` arrive as extra keys, the speaker encoder
config is partial or absent), and the standalone ``config.json`` (``from_dict``), which is the
``to_dict`` output plus a format header. Unknown upstream keys are ignored on purpose: released
files carry unused fields such as ``position_id_per_seconds``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

FORMAT_NAME = "q3tts-standalone"
FORMAT_VERSION = 1

MODEL_TYPES = ("base", "custom_voice", "voice_design")


class ConfigError(ValueError):
    """A config.json that cannot describe a model; the message names the field."""


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ConfigError(f"{where}: missing required field '{key}'")
    return d[key]


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """ECAPA-TDNN speaker encoder. Defaults are upstream's class defaults (released Base files
    only override enc_dim and sample_rate)."""

    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000

    def __post_init__(self) -> None:
        n = len(self.enc_channels)
        if len(self.enc_kernel_sizes) != n or len(self.enc_dilations) != n:
            raise ConfigError(
                "speaker_encoder_config: enc_channels, enc_kernel_sizes and enc_dilations differ in length"
            )
        if self.enc_channels[-1] != sum(self.enc_channels[1:-1]):
            raise ConfigError("speaker_encoder_config: enc_channels[-1] must equal the sum of the SE-Res2Net channels")
        for c in self.enc_channels[:-1]:
            if c % self.enc_res2net_scale:
                raise ConfigError(f"speaker_encoder_config: channel count {c} not divisible by enc_res2net_scale")


@dataclass(frozen=True)
class TransformerConfig:
    """What one decoder stack needs; shared by the talker and the code predictor."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ConfigError("head_dim must be even for rotary embeddings")


@dataclass(frozen=True)
class CodePredictorConfig:
    transformer: TransformerConfig
    vocab_size: int
    num_code_groups: int


@dataclass(frozen=True)
class TalkerConfig:
    transformer: TransformerConfig
    vocab_size: int
    text_vocab_size: int
    text_hidden_size: int
    num_code_groups: int
    # M-RoPE: how many of the head_dim/2 frequencies follow each of the three position rows.
    mrope_section: tuple[int, int, int]
    mrope_interleaved: bool
    code_predictor: CodePredictorConfig
    codec_eos_token_id: int
    codec_think_id: int
    codec_nothink_id: int
    codec_think_bos_id: int
    codec_think_eos_id: int
    codec_pad_id: int
    codec_bos_id: int
    codec_language_id: Mapping[str, int] = field(default_factory=dict)
    spk_id: Mapping[str, int] = field(default_factory=dict)
    spk_is_dialect: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if sum(self.mrope_section) != self.transformer.head_dim // 2:
            raise ConfigError(
                f"talker_config: rope_scaling.mrope_section {list(self.mrope_section)} must sum to head_dim/2 "
                f"= {self.transformer.head_dim // 2}"
            )
        if self.code_predictor.num_code_groups != self.num_code_groups:
            raise ConfigError("talker_config: num_code_groups differs from code_predictor_config.num_code_groups")


@dataclass(frozen=True)
class Qwen3TTSConfig:
    tts_model_type: str
    tts_model_size: str
    tokenizer_type: str
    talker: TalkerConfig
    speaker_encoder: SpeakerEncoderConfig | None
    im_start_token_id: int
    im_end_token_id: int
    tts_pad_token_id: int
    tts_bos_token_id: int
    tts_eos_token_id: int

    # --- upstream config.json -------------------------------------------------------------
    @classmethod
    def from_upstream(cls, d: Mapping[str, Any]) -> Qwen3TTSConfig:
        model_type = _require(d, "tts_model_type", "config.json")
        if model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config.json: unknown tts_model_type {model_type!r} (expected one of {', '.join(MODEL_TYPES)})"
            )
        t = _require(d, "talker_config", "config.json")
        cp = _require(t, "code_predictor_config", "talker_config")
        rope_scaling = t.get("rope_scaling") or {}
        if "mrope_section" not in rope_scaling:
            raise ConfigError("talker_config: rope_scaling.mrope_section is required")
        speaker = None
        if model_type == "base":
            # Released Base files hold only enc_dim and sample_rate; the rest are class defaults.
            fields = {f.name for f in dataclasses.fields(SpeakerEncoderConfig)}
            raw = {k: v for k, v in (d.get("speaker_encoder_config") or {}).items() if k in fields}
            raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
            speaker = SpeakerEncoderConfig(**raw)
        talker = TalkerConfig(
            transformer=_transformer_from_upstream(t, "talker_config", default_theta=10000.0),
            vocab_size=_require(t, "vocab_size", "talker_config"),
            text_vocab_size=_require(t, "text_vocab_size", "talker_config"),
            text_hidden_size=t.get("text_hidden_size", 2048),
            num_code_groups=_require(t, "num_code_groups", "talker_config"),
            mrope_section=tuple(rope_scaling["mrope_section"]),
            mrope_interleaved=bool(rope_scaling.get("interleaved", False)),
            code_predictor=CodePredictorConfig(
                transformer=_transformer_from_upstream(cp, "code_predictor_config", default_theta=10000.0),
                vocab_size=_require(cp, "vocab_size", "code_predictor_config"),
                num_code_groups=_require(cp, "num_code_groups", "code_predictor_config"),
            ),
            codec_eos_token_id=t.get("codec_eos_token_id", 4198),
            codec_think_id=t.get("codec_think_id", 4202),
            codec_nothink_id=t.get("codec_nothink_id", 4203),
            codec_think_bos_id=t.get("codec_think_bos_id", 4204),
            codec_think_eos_id=t.get("codec_think_eos_id", 4205),
            codec_pad_id=t.get("codec_pad_id", 4196),
            codec_bos_id=t.get("codec_bos_id", 4197),
            codec_language_id=dict(t.get("codec_language_id") or {}),
            spk_id={k: (v[0] if isinstance(v, list) else v) for k, v in (t.get("spk_id") or {}).items()},
            spk_is_dialect=dict(t.get("spk_is_dialect") or {}),
        )
        if speaker is not None and speaker.enc_dim != talker.transformer.hidden_size:
            raise ConfigError("speaker_encoder_config.enc_dim must equal talker_config.hidden_size")
        return cls(
            tts_model_type=model_type,
            tts_model_size=str(d.get("tts_model_size", "")),
            tokenizer_type=str(d.get("tokenizer_type", "qwen3_tts_tokenizer_12hz")),
            talker=talker,
            speaker_encoder=speaker,
            im_start_token_id=d.get("im_start_token_id", 151644),
            im_end_token_id=d.get("im_end_token_id", 151645),
            tts_pad_token_id=d.get("tts_pad_token_id", 151671),
            tts_bos_token_id=d.get("tts_bos_token_id", 151672),
            tts_eos_token_id=d.get("tts_eos_token_id", 151673),
        )

    # --- standalone config.json ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **_jsonable(body)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Qwen3TTSConfig:
        if d.get("format") != FORMAT_NAME:
            raise ConfigError(f"config.json: not a {FORMAT_NAME} config (format={d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"config.json: format_version {d.get('format_version')!r} is not supported (this build reads {FORMAT_VERSION})"
            )
        try:
            t = d["talker"]
            cp = t["code_predictor"]
            speaker = d["speaker_encoder"]
            talker = TalkerConfig(
                **{
                    **t,
                    "transformer": TransformerConfig(**t["transformer"]),
                    "code_predictor": CodePredictorConfig(
                        **{**cp, "transformer": TransformerConfig(**cp["transformer"])}
                    ),
                    "mrope_section": tuple(t["mrope_section"]),
                }
            )
            return cls(
                **{k: v for k, v in d.items() if k not in ("format", "format_version", "talker", "speaker_encoder")},
                talker=talker,
                speaker_encoder=None
                if speaker is None
                else SpeakerEncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in speaker.items()}),
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"config.json: malformed standalone config ({e})") from e


def _transformer_from_upstream(t: Mapping[str, Any], where: str, default_theta: float) -> TransformerConfig:
    hidden = _require(t, "hidden_size", where)
    heads = _require(t, "num_attention_heads", where)
    # head_dim is not in upstream's signature; without it upstream silently uses hidden/heads.
    head_dim = t.get("head_dim") or hidden // heads
    return TransformerConfig(
        hidden_size=hidden,
        intermediate_size=_require(t, "intermediate_size", where),
        num_hidden_layers=_require(t, "num_hidden_layers", where),
        num_attention_heads=heads,
        num_key_value_heads=t.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
        rope_theta=float(t.get("rope_theta", default_theta)),
        max_position_embeddings=int(t.get("max_position_embeddings", 32768)),
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
