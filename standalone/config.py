"""Model configuration as frozen dataclasses.

Two sources feed these classes: an upstream ``config.json`` (``from_upstream``), whose quirks are
handled here once (``head_dim`` and ``text_vocab_size`` arrive as extra keys, the speaker encoder
config is partial or absent), and the standalone ``config.json`` (``from_dict``), which is the
``to_dict`` output plus a format header. Unknown upstream keys are ignored on purpose: released
files carry unused fields such as ``position_id_per_seconds``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

FORMAT_NAME = "q3tts-standalone"
FORMAT_VERSION = 1

MODEL_TYPES = ("base", "custom_voice", "voice_design")


class ConfigError(ValueError):
    """A config.json that cannot describe a model; the message names the field."""


# Sizes a module is built from, checked before anything is built: a config.json saying
# num_hidden_layers=10**7 is refused at once with the key named, instead of growing memory for
# minutes. The caps are far above every release (0.6B/1.7B: 28 layers, width 2048, 151936 tokens).
SIZE_CAPS = {
    "num_hidden_layers": 1024,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "head_dim": 4096,
    "vocab_size": 1 << 22,
    "text_vocab_size": 1 << 22,
    "text_hidden_size": 65536,
    "num_code_groups": 1024,
    "mel_dim": 4096,
    "enc_dim": 65536,
    "enc_channels": 65536,
    "enc_kernel_sizes": 1024,
    "enc_dilations": 1024,
    "enc_attention_channels": 65536,
    "enc_res2net_scale": 1024,
    "enc_se_channels": 65536,
}
POSITIVE_FINITE = ("rms_norm_eps", "rope_theta")


def check_bounds(obj: Any) -> None:
    """Every size field of a config dataclass a whole number in 1..SIZE_CAPS[name] and every float
    in POSITIVE_FINITE finite and > 0 (a NaN rms_norm_eps would surface later as "probability
    tensor contains inf/nan"); ConfigError names the key. Callers prefix where it came from."""
    for f in dataclasses.fields(obj):
        value, cap = getattr(obj, f.name), SIZE_CAPS.get(f.name)
        for v in value if isinstance(value, tuple) and cap else (value,):
            if cap is not None and (type(v) is not int or not 1 <= v <= cap):
                raise ConfigError(
                    f"{f.name} = {v!r} is not a whole number in 1..{cap} (a damaged or hand-edited config?)"
                )
        if f.name in POSITIVE_FINITE and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
        ):
            raise ConfigError(f"{f.name} = {value!r} must be a finite number > 0")


def _bounded(obj: Any, where: str) -> None:
    try:
        check_bounds(obj)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}") from None


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
        _bounded(self, "speaker_encoder_config")
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
        check_bounds(self)  # the caller adds which stack (talker_config, code_predictor_config)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ConfigError("head_dim must be even for rotary embeddings")


@dataclass(frozen=True)
class CodePredictorConfig:
    transformer: TransformerConfig
    vocab_size: int
    num_code_groups: int

    def __post_init__(self) -> None:
        _bounded(self, "code_predictor_config")


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
        _bounded(self, "talker_config")
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
        """Resolve an upstream config.json as upstream's config classes do: an absent key takes
        that class's default (UPSTREAM_DEFAULTS), unknown keys are ignored, and what upstream
        cannot build a model from is refused with the field's name."""
        model_type = _require(d, "tts_model_type", "config.json")
        if model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config.json: unknown tts_model_type {model_type!r} (expected one of {', '.join(MODEL_TYPES)})"
            )
        talker = _talker_from_upstream(_require(d, "talker_config", "config.json"))
        speaker = None
        if model_type == "base":
            # Released Base files hold only enc_dim and sample_rate; the rest are class defaults.
            fields = {f.name for f in dataclasses.fields(SpeakerEncoderConfig)}
            raw = {k: v for k, v in (d.get("speaker_encoder_config") or {}).items() if k in fields}
            raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
            speaker = SpeakerEncoderConfig(**raw)
        if speaker is not None and speaker.enc_dim != talker.transformer.hidden_size:
            raise ConfigError("speaker_encoder_config.enc_dim must equal talker_config.hidden_size")
        top = _with_defaults(d, "config.json", UPSTREAM_DEFAULTS["config"])
        return cls(
            tts_model_type=model_type,
            tts_model_size=str(d.get("tts_model_size") or ""),
            tokenizer_type=str(d.get("tokenizer_type") or "qwen3_tts_tokenizer_12hz"),
            talker=talker,
            speaker_encoder=speaker,
            **top,
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
                    "transformer": _transformer("config.json: talker.transformer", **t["transformer"]),
                    "code_predictor": CodePredictorConfig(
                        **{
                            **cp,
                            "transformer": _transformer("config.json: code_predictor.transformer", **cp["transformer"]),
                        }
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


# Upstream's config-class defaults (qwen_tts.core.models.configuration_qwen3_tts, qwen-tts 0.1.1)
# for every field the runtime reads: a key absent from config.json resolves to these, as upstream's
# classes resolve it. tests/test_upstream_config_reading.py checks them against those classes.
UPSTREAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "config": dict(
        im_start_token_id=151644,
        im_end_token_id=151645,
        tts_pad_token_id=151671,
        tts_bos_token_id=151672,
        tts_eos_token_id=151673,
    ),
    "talker_config": dict(
        vocab_size=3072,
        hidden_size=1024,
        intermediate_size=2048,
        num_hidden_layers=20,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=10000,
        num_code_groups=32,
        text_hidden_size=2048,
        codec_eos_token_id=4198,
        codec_think_id=4202,
        codec_nothink_id=4203,
        codec_think_bos_id=4204,
        codec_think_eos_id=4205,
        codec_pad_id=4196,
        codec_bos_id=4197,
    ),
    "code_predictor_config": dict(
        vocab_size=2048,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=5,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=10000,
        num_code_groups=32,
    ),
}
_TRANSFORMER_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
)


def _with_defaults(d: Mapping[str, Any], where: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults``' keys resolved from ``d``: absent -> the default; present but null -> refused
    (upstream's classes keep the null and its model cannot be built from it)."""
    out = {}
    for key, default in defaults.items():
        value = d.get(key, default)
        if value is None:
            raise ConfigError(f"{where}: field '{key}' is null")
        out[key] = value
    return out


def _transformer_from_upstream(
    t: Mapping[str, Any], where: str, defaults: Mapping[str, Any], null_kv_means_heads: bool = False
) -> TransformerConfig:
    """``null_kv_means_heads``: a null num_key_value_heads is the head count (the code predictor
    class's backward-compatibility rule; the talker class has none)."""
    t = dict(t)
    if null_kv_means_heads and "num_key_value_heads" in t and t["num_key_value_heads"] is None:
        t["num_key_value_heads"] = t.get("num_attention_heads", defaults["num_attention_heads"])
    v = _with_defaults(t, where, {k: defaults[k] for k in _TRANSFORMER_KEYS})
    # The attention layers take getattr(config, "head_dim", hidden // heads): the code predictor's
    # class always sets head_dim (default 128), the talker's has no such argument.
    head_dim = t["head_dim"] if "head_dim" in t else defaults.get("head_dim")
    if head_dim is None:
        if "head_dim" in t:
            raise ConfigError(f"{where}: field 'head_dim' is null")
        head_dim = v["hidden_size"] // v["num_attention_heads"]
    return _transformer(
        where,
        hidden_size=v["hidden_size"],
        intermediate_size=v["intermediate_size"],
        num_hidden_layers=v["num_hidden_layers"],
        num_attention_heads=v["num_attention_heads"],
        num_key_value_heads=v["num_key_value_heads"],
        head_dim=head_dim,
        rms_norm_eps=float(v["rms_norm_eps"]),
        rope_theta=float(v["rope_theta"]),
        max_position_embeddings=int(v["max_position_embeddings"]),
    )


def _transformer(where: str, **values: Any) -> TransformerConfig:
    """A TransformerConfig whose ConfigError says which stack's key is wrong."""
    try:
        return TransformerConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}" if str(e).split(" ")[0] in values else f"{where}: {e}") from None


def _talker_from_upstream(t: Mapping[str, Any]) -> TalkerConfig:
    defaults = UPSTREAM_DEFAULTS["talker_config"]
    # An absent or null code_predictor_config is upstream's default code predictor.
    cp = t.get("code_predictor_config") or {}
    cp_defaults = UPSTREAM_DEFAULTS["code_predictor_config"]
    rope_scaling = t.get("rope_scaling") or {}
    for key in ("mrope_section", "interleaved"):  # the talker's attention indexes both
        if key not in rope_scaling:
            raise ConfigError(f"talker_config: rope_scaling.{key} is required")
    ids = _with_defaults(t, "talker_config", {k: v for k, v in defaults.items() if k.startswith("codec_")})
    rest = _with_defaults(
        t, "talker_config", {k: defaults[k] for k in ("vocab_size", "num_code_groups", "text_hidden_size")}
    )
    return TalkerConfig(
        transformer=_transformer_from_upstream(t, "talker_config", defaults),
        text_vocab_size=_require(t, "text_vocab_size", "talker_config"),  # no class default: upstream needs it
        mrope_section=tuple(rope_scaling["mrope_section"]),
        mrope_interleaved=bool(rope_scaling["interleaved"]),
        code_predictor=CodePredictorConfig(
            transformer=_transformer_from_upstream(cp, "code_predictor_config", cp_defaults, null_kv_means_heads=True),
            **_with_defaults(
                cp, "code_predictor_config", {k: cp_defaults[k] for k in ("vocab_size", "num_code_groups")}
            ),
        ),
        codec_language_id=dict(t.get("codec_language_id") or {}),
        spk_id={k: (v[0] if isinstance(v, list) else v) for k, v in (t.get("spk_id") or {}).items()},
        spk_is_dialect=dict(t.get("spk_is_dialect") or {}),
        **ids,
        **rest,
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
