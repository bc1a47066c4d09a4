"""The GGUF layout of qwentts.cpp, as data: every tensor name and metadata key the GGUF target
writes, and the quantisation policy.

This is the one table ``convert-ckpt --to gguf`` (standalone/gguf_conversion.py) reads. It was
written from the names and keys qwentts.cpp's loader reads and checked against:

- ServeurpersoCom/qwentts.cpp at commit QWENTTS_CPP_COMMIT (src/*-weights.h, src/bpe.h,
  tools/quantize.cpp), and
- the pinned binding wheel ``realtimetts-qwen-native-cpu`` QWENTTS_WHEEL_VERSION (its libqwen.so
  reads the same keys), which the tests load every converted file with.

A source tensor is matched by exactly one rule (a full regular expression over the upstream
name). A rule either maps the tensor to a GGUF name (``{0}``, ``{1}`` ... are the regex
groups), fuses it into an RVQ codebook, or drops it with a reason. A source tensor no rule
matches is an error: nothing is silently carried or lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

QWENTTS_CPP_REPO = "ServeurpersoCom/qwentts.cpp"
QWENTTS_CPP_COMMIT = "a8a7716b530e49fed537c57711247c12fbbb903c"
QWENTTS_WHEEL = "realtimetts-qwen-native-cpu"
QWENTTS_WHEEL_VERSION = "0.4.2"

TALKER_ARCH = "qwen3-tts"
CODEC_ARCH = "qwen3-tts-tokenizer"
TALKER_FILE = "qwen-talker-{quant}.gguf"
CODEC_FILE = "qwen-tokenizer-12hz-{quant}.gguf"

QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_K_M")

# EuclideanCodebook.epsilon upstream: the decode table is embedding_sum / clamp(usage, eps).
RVQ_EPS = 1e-5

# gguf token types (llama.cpp convention): qwentts.cpp registers the configured special ids
# verbatim, so they must hold the special token's text at exactly that index.
TOKEN_NORMAL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 4, 5


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    pattern: str  # full match over the upstream tensor name
    target: str | None  # GGUF name template; None for a drop
    role: str = "copy"  # copy | codebook.sum | codebook.usage | drop
    reason: str = ""  # why a dropped tensor is not needed (drop rules)

    def match(self, name: str) -> re.Match | None:
        return re.fullmatch(self.pattern, name)


# The Qwen3 decoder block, shared by the talker and the code predictor.
_LM_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _block_rules(src_prefix: str, dst_prefix: str, table: dict[str, str]) -> list[Rule]:
    return [
        Rule(re.escape(src_prefix) + r"(\d+)\." + re.escape(s), f"{dst_prefix}.{{0}}.{d}") for s, d in table.items()
    ]


TALKER_RULES: list[Rule] = [
    *_block_rules("talker.model.layers.", "talker.blk", _LM_BLOCK),
    Rule(r"talker\.model\.codec_embedding\.weight", "talker.codec_embd.weight"),
    Rule(r"talker\.model\.text_embedding\.weight", "talker.text_embd.weight"),
    Rule(r"talker\.model\.norm\.weight", "talker.output_norm.weight"),
    Rule(r"talker\.codec_head\.weight", "talker.codec_head.weight"),
    Rule(r"talker\.text_projection\.linear_fc([12])\.(weight|bias)", "talker.text_proj.fc{0}.{1}"),
    *_block_rules("talker.code_predictor.model.layers.", "code_pred.blk", _LM_BLOCK),
    Rule(r"talker\.code_predictor\.model\.codec_embedding\.(\d+)\.weight", "code_pred.codec_embd.{0}.weight"),
    Rule(r"talker\.code_predictor\.lm_head\.(\d+)\.weight", "code_pred.lm_head.{0}.weight"),
    Rule(r"talker\.code_predictor\.model\.norm\.weight", "code_pred.output_norm.weight"),
    Rule(r"talker\.code_predictor\.small_to_mtp_projection\.(weight|bias)", "code_pred.mtp_proj.{0}"),
    # Speaker encoder (base checkpoints only).
    Rule(r"speaker_encoder\.blocks\.0\.conv\.(weight|bias)", "spk_enc.conv0.{0}"),
    Rule(
        r"speaker_encoder\.blocks\.(\d+)\.res2net_block\.blocks\.(\d+)\.conv\.(weight|bias)",
        "spk_enc.blk.{0}.res2net.{1}.{2}",
    ),
    Rule(r"speaker_encoder\.blocks\.(\d+)\.se_block\.(conv[12])\.(weight|bias)", "spk_enc.blk.{0}.se.{1}.{2}"),
    Rule(r"speaker_encoder\.blocks\.(\d+)\.(tdnn[12])\.conv\.(weight|bias)", "spk_enc.blk.{0}.{1}.{2}"),
    Rule(r"speaker_encoder\.asp\.conv\.(weight|bias)", "spk_enc.asp.conv.{0}"),
    Rule(r"speaker_encoder\.asp\.tdnn\.conv\.(weight|bias)", "spk_enc.asp.tdnn.{0}"),
    Rule(r"speaker_encoder\.mfa\.conv\.(weight|bias)", "spk_enc.mfa.{0}"),
    Rule(r"speaker_encoder\.fc\.(weight|bias)", "spk_enc.fc.{0}"),
]

_CODEC_DEC_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn_layer_scale.scale": "attn_scale",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp_layer_scale.scale": "ffn_scale",
}
_CODEC_ENC_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "input_layernorm.bias": "attn_norm.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "post_attention_layernorm.bias": "ffn_norm.bias",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn_layer_scale.scale": "attn_scale",
    "mlp.fc1.weight": "ffn_up.weight",
    "mlp.fc2.weight": "ffn_down.weight",
    "mlp_layer_scale.scale": "ffn_scale",
}
_ENC_Q = r"encoder\.quantizer\.(semantic|acoustic)_residual_vector_quantizer"
_DEC_Q = r"decoder\.quantizer\.r(vq_first|vq_rest)"

CODEC_RULES: list[Rule] = [
    # Decoder (codes -> audio).
    Rule(r"decoder\.pre_conv\.conv\.(weight|bias)", "tok_dec.pre_conv.{0}"),
    Rule(r"decoder\.pre_transformer\.(input_proj|output_proj)\.(weight|bias)", "tok_dec.pre_tfm.{0}.{1}"),
    Rule(r"decoder\.pre_transformer\.norm\.weight", "tok_dec.pre_tfm.norm.weight"),
    *_block_rules("decoder.pre_transformer.layers.", "tok_dec.pre_tfm.blk", _CODEC_DEC_BLOCK),
    Rule(r"decoder\.upsample\.(\d+)\.0\.conv\.(weight|bias)", "tok_dec.upsample.{0}.conv.{1}"),
    Rule(r"decoder\.upsample\.(\d+)\.1\.dwconv\.conv\.(weight|bias)", "tok_dec.upsample.{0}.dwconv.{1}"),
    Rule(r"decoder\.upsample\.(\d+)\.1\.(norm|pwconv1|pwconv2)\.(weight|bias)", "tok_dec.upsample.{0}.{1}.{2}"),
    Rule(r"decoder\.upsample\.(\d+)\.1\.gamma", "tok_dec.upsample.{0}.gamma"),
    Rule(r"decoder\.decoder\.0\.conv\.(weight|bias)", "tok_dec.dec.0.conv.{0}"),
    Rule(r"decoder\.decoder\.([1-4])\.block\.0\.(alpha|beta)", "tok_dec.dec.{0}.snake.{1}"),
    Rule(r"decoder\.decoder\.([1-4])\.block\.1\.conv\.(weight|bias)", "tok_dec.dec.{0}.conv_t.{1}"),
    # residual units sit at block.2..4; qwentts.cpp numbers them res.0..2 (rewritten in the engine)
    Rule(r"decoder\.decoder\.([1-4])\.block\.([2-4])\.(act[12])\.(alpha|beta)", "tok_dec.dec.{0}.res.{1-2}.{2}.{3}"),
    Rule(
        r"decoder\.decoder\.([1-4])\.block\.([2-4])\.(conv[12])\.conv\.(weight|bias)",
        "tok_dec.dec.{0}.res.{1-2}.{2}.{3}",
    ),
    Rule(r"decoder\.decoder\.5\.(alpha|beta)", "tok_dec.dec.5.snake.{0}"),
    Rule(r"decoder\.decoder\.6\.conv\.(weight|bias)", "tok_dec.dec.6.conv.{0}"),
    Rule(_DEC_Q + r"\.output_proj\.weight", "tok_dec.{0}.output_proj.weight"),
    Rule(
        _DEC_Q + r"\.input_proj\.weight",
        None,
        "drop",
        "decoder-side input_proj is only used to encode; qwentts.cpp encodes with the encoder's own",
    ),
    Rule(_DEC_Q + r"\.vq\.layers\.(\d+)\._codebook\.embedding_sum", "tok_dec.{0}.{1}.codebook", "codebook.sum"),
    Rule(_DEC_Q + r"\.vq\.layers\.(\d+)\._codebook\.cluster_usage", "tok_dec.{0}.{1}.codebook", "codebook.usage"),
    # Encoder (audio -> codes, for cloning from a recording).
    Rule(r"encoder\.encoder\.layers\.(\d+)\.conv\.(weight|bias)", "tok_enc.conv.{0}.{1}"),
    Rule(r"encoder\.encoder\.layers\.(\d+)\.block\.(\d+)\.conv\.(weight|bias)", "tok_enc.res.{0}.blk.{1}.{2}"),
    *_block_rules("encoder.encoder_transformer.layers.", "tok_enc.blk", _CODEC_ENC_BLOCK),
    Rule(r"encoder\.downsample\.conv\.(weight|bias)", "tok_enc.downsample.{0}"),
    Rule(_ENC_Q + r"\.(input_proj|output_proj)\.weight", "tok_enc.vq_{0}.{1}.weight"),
    Rule(_ENC_Q + r"\.layers\.(\d+)\.codebook\.embed_sum", "tok_enc.vq_{0}.{1}.codebook", "codebook.sum"),
    Rule(_ENC_Q + r"\.layers\.(\d+)\.codebook\.cluster_usage", "tok_enc.vq_{0}.{1}.codebook", "codebook.usage"),
    Rule(
        _ENC_Q + r"\.layers\.(\d+)\.codebook\.initialized",
        None,
        "drop",
        "training-time flag of the k-means init; not used at inference",
    ),
]

# Encoder acoustic codebooks beyond encoder_valid_num_quantizers are never used to encode.
EXTRA_ACOUSTIC_REASON = "encoder acoustic codebook beyond encoder_valid_num_quantizers: never used to encode"


def render_target(rule: Rule, m: re.Match) -> str:
    """The GGUF name for a match; ``{1-2}`` is group 1 minus 2 (the residual-unit index)."""
    groups = m.groups()

    def sub(t: re.Match) -> str:
        i, off = int(t.group(1)), t.group(2)
        return str(int(groups[i]) - int(off)) if off else groups[i]

    return re.sub(r"\{(\d+)(?:-(\d+))?\}", sub, rule.target)


# --------------------------------------------------------------------------------------------
# Quantisation policy (tools/quantize.cpp should_quantize / pick_type at QWENTTS_CPP_COMMIT)
# --------------------------------------------------------------------------------------------

# Tensors that stay F32 in every variant: 1-D tensors, snake/activation parameters, the RVQ
# codebooks and the projections around them (nearest-neighbour lookup is sensitive to rounding),
# and the speaker encoder's final projection.
KEEP_F32_SUBSTRINGS = (
    ".snake.alpha",
    ".snake.beta",
    ".act1.alpha",
    ".act1.beta",
    ".act2.alpha",
    ".act2.beta",
    "tok_enc.vq_",
    "tok_dec.vq_",
    "spk_enc.fc.weight",
)
Q8_0_BLOCK = 32
# Block widths of the quantized storage types (weights per block along a row).
BLOCK_WEIGHTS = {"Q8_0": Q8_0_BLOCK, "Q4_K": 256, "Q6_K": 256}
# Q4_K_M as quantize.cpp's variant table has it: Q4_K, embeddings (get_rows lookups) Q6_K. Its
# "important tensor" bump to Q6_K matches HF names (v_proj.weight, down_proj.weight) that no
# qwen3-tts GGUF name contains, so it never applies to these files and is not modelled.
K_VARIANTS = {"Q4_K_M": ("Q4_K", "Q6_K")}
EMBED_SUBSTRINGS = ("token_embd", "embed_tokens.weight", "audio_embeddings.weight", ".codec_embd", ".text_embd")


def storage_type(name: str, shape: tuple[int, ...], quant: str) -> str:
    """The GGUF storage type of tensor ``name`` under ``--quant quant``: F32, F16, BF16, Q8_0, or for
    Q4_K_M Q4_K (embeddings Q6_K). A block-quantized tensor whose rows (the last dimension) are not
    a multiple of its block falls back to F16, as quantize.cpp does for conv kernels."""
    if quant not in QUANTS:
        raise ValueError(f"--quant {quant!r}: expected one of {', '.join(QUANTS)}")
    if quant == "F32" or len(shape) < 2 or any(s in name for s in KEEP_F32_SUBSTRINGS):
        return "F32"
    kind = quant
    if quant in K_VARIANTS:
        base, embed = K_VARIANTS[quant]
        kind = embed if any(s in name for s in EMBED_SUBSTRINGS) else base
    if kind in BLOCK_WEIGHTS and shape[-1] % BLOCK_WEIGHTS[kind]:
        return "F16"
    return kind


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    key: str
    kind: str  # u32 | f32 | bool | str | arr
    get: Callable[[dict], Any]  # value from the context; None = key not written
    why: str = ""


def _t(k):  # talker_config[k]
    return lambda c: c["talker"][k]


def _cp(k):  # code_predictor_config[k]
    return lambda c: c["cp"][k]


def _gen(k, cast):
    return lambda c: cast(c["gen"][k]) if k in c["gen"] else None


def _mrope_interleaved(c):
    rs = c["talker"].get("rope_scaling") or {}
    return bool(rs.get("interleaved", False)) if "mrope_section" in rs else None


TALKER_META: list[Meta] = [
    Meta(
        "general.name",
        "str",
        lambda c: f"Qwen3-TTS-12Hz-{c['cfg'].get('tts_model_size')}-{c['cfg'].get('tts_model_type')}",
    ),
    Meta("qwen3-tts.tokenizer_type", "str", lambda c: c["cfg"]["tokenizer_type"]),
    Meta("qwen3-tts.model_size", "str", lambda c: c["cfg"]["tts_model_size"]),
    Meta("qwen3-tts.model_type", "str", lambda c: c["cfg"]["tts_model_type"]),
    Meta("qwen3-tts.num_code_groups", "u32", _t("num_code_groups")),
    Meta("qwen3-tts.talker.embedding_length", "u32", _t("hidden_size")),
    Meta("qwen3-tts.talker.feed_forward_length", "u32", _t("intermediate_size")),
    Meta("qwen3-tts.talker.block_count", "u32", _t("num_hidden_layers")),
    Meta("qwen3-tts.talker.attention.head_count", "u32", _t("num_attention_heads")),
    Meta("qwen3-tts.talker.attention.head_count_kv", "u32", _t("num_key_value_heads")),
    Meta("qwen3-tts.talker.attention.key_length", "u32", _t("head_dim")),
    Meta("qwen3-tts.talker.vocab_size", "u32", _t("vocab_size")),
    Meta("qwen3-tts.talker.text_vocab_size", "u32", _t("text_vocab_size")),
    Meta("qwen3-tts.talker.text_hidden_size", "u32", _t("text_hidden_size")),
    Meta("qwen3-tts.talker.context_length", "u32", _t("max_position_embeddings")),
    Meta("qwen3-tts.talker.rope.freq_base", "f32", _t("rope_theta")),
    Meta("qwen3-tts.talker.attention.layer_norm_rms_epsilon", "f32", _t("rms_norm_eps")),
    Meta("qwen3-tts.talker.position_id_per_seconds", "u32", _t("position_id_per_seconds")),
    Meta(
        "qwen3-tts.talker.rope.mrope_section",
        "arr",
        lambda c: list((c["talker"].get("rope_scaling") or {}).get("mrope_section") or []) or None,
    ),
    # Trap: qwentts.cpp's own convert.py writes the flag as talker.mrope_interleaved, its loader
    # (src/talker-weights.h) reads talker.rope.mrope_interleaved and gets false when it is absent.
    # Written under both so every version reads the configured value.
    Meta("qwen3-tts.talker.rope.mrope_interleaved", "bool", _mrope_interleaved, "read by the loader"),
    Meta("qwen3-tts.talker.mrope_interleaved", "bool", _mrope_interleaved, "written by qwentts.cpp convert.py"),
    Meta("qwen3-tts.code_pred.embedding_length", "u32", _cp("hidden_size")),
    Meta("qwen3-tts.code_pred.feed_forward_length", "u32", _cp("intermediate_size")),
    Meta("qwen3-tts.code_pred.block_count", "u32", _cp("num_hidden_layers")),
    Meta("qwen3-tts.code_pred.attention.head_count", "u32", _cp("num_attention_heads")),
    Meta("qwen3-tts.code_pred.attention.head_count_kv", "u32", _cp("num_key_value_heads")),
    Meta("qwen3-tts.code_pred.attention.key_length", "u32", _cp("head_dim")),
    Meta("qwen3-tts.code_pred.vocab_size", "u32", _cp("vocab_size")),
    Meta("qwen3-tts.code_pred.context_length", "u32", _cp("max_position_embeddings")),
    Meta("qwen3-tts.code_pred.rope.freq_base", "f32", _cp("rope_theta")),
    Meta("qwen3-tts.code_pred.attention.layer_norm_rms_epsilon", "f32", _cp("rms_norm_eps")),
    Meta(
        "qwen3-tts.spk_enc.embedding_length",
        "u32",
        lambda c: (c["cfg"].get("speaker_encoder_config") or {}).get("enc_dim"),
    ),
    Meta(
        "qwen3-tts.spk_enc.sample_rate",
        "u32",
        lambda c: (c["cfg"].get("speaker_encoder_config") or {}).get("sample_rate"),
    ),
    Meta("qwen3-tts.codec.pad_id", "u32", _t("codec_pad_id")),
    Meta("qwen3-tts.codec.bos_id", "u32", _t("codec_bos_id")),
    Meta("qwen3-tts.codec.eos_id", "u32", _t("codec_eos_token_id")),
    Meta("qwen3-tts.codec.think_id", "u32", _t("codec_think_id")),
    Meta("qwen3-tts.codec.nothink_id", "u32", _t("codec_nothink_id")),
    Meta("qwen3-tts.codec.think_bos_id", "u32", _t("codec_think_bos_id")),
    Meta("qwen3-tts.codec.think_eos_id", "u32", _t("codec_think_eos_id")),
    Meta("qwen3-tts.codec.language_names", "arr", lambda c: list((c["talker"].get("codec_language_id") or {}).keys())),
    Meta(
        "qwen3-tts.codec.language_ids",
        "arr",
        lambda c: [int(v) for v in (c["talker"].get("codec_language_id") or {}).values()],
    ),
    Meta("qwen3-tts.codec.speaker_names", "arr", lambda c: list((c["talker"].get("spk_id") or {}).keys()) or None),
    Meta(
        "qwen3-tts.codec.speaker_ids",
        "arr",
        lambda c: [int(v) for v in (c["talker"].get("spk_id") or {}).values()] or None,
    ),
    Meta(
        "qwen3-tts.codec.speaker_dialects",
        "arr",
        lambda c: (
            [
                d if isinstance(d := (c["talker"].get("spk_is_dialect") or {}).get(k), str) else ""
                for k in (c["talker"].get("spk_id") or {})
            ]
            or None
        ),
    ),
    Meta("qwen3-tts.text.im_start_id", "u32", lambda c: c["cfg"]["im_start_token_id"]),
    Meta("qwen3-tts.text.im_end_id", "u32", lambda c: c["cfg"]["im_end_token_id"]),
    Meta("qwen3-tts.text.tts_pad_id", "u32", lambda c: c["cfg"]["tts_pad_token_id"]),
    Meta("qwen3-tts.text.tts_bos_id", "u32", lambda c: c["cfg"]["tts_bos_token_id"]),
    Meta("qwen3-tts.text.tts_eos_id", "u32", lambda c: c["cfg"]["tts_eos_token_id"]),
    Meta("generation.do_sample", "bool", _gen("do_sample", bool)),
    Meta("generation.top_k", "u32", _gen("top_k", int)),
    Meta("generation.top_p", "f32", _gen("top_p", float)),
    Meta("generation.temperature", "f32", _gen("temperature", float)),
    Meta("generation.repetition_penalty", "f32", _gen("repetition_penalty", float)),
    Meta("generation.subtalker_do_sample", "bool", _gen("subtalker_dosample", bool)),
    Meta("generation.subtalker_top_k", "u32", _gen("subtalker_top_k", int)),
    Meta("generation.subtalker_top_p", "f32", _gen("subtalker_top_p", float)),
    Meta("generation.subtalker_temperature", "f32", _gen("subtalker_temperature", float)),
    Meta("generation.max_new_tokens", "u32", _gen("max_new_tokens", int)),
]

# The text special tokens the loader registers verbatim, by the config key naming their id.
SPECIAL_TOKEN_KEYS = (
    "im_start_token_id",
    "im_end_token_id",
    "tts_pad_token_id",
    "tts_bos_token_id",
    "tts_eos_token_id",
)
ENDOFTEXT = "<|endoftext|>"


def _d(k):
    return lambda c: c["dec"][k]


def _e(k):
    return lambda c: c["enc"][k]


_TOK = "qwen3-tts-tokenizer"
CODEC_META: list[Meta] = [
    Meta("general.name", "str", lambda c: "Qwen3-TTS-Tokenizer-12Hz"),
    Meta(f"{_TOK}.input_sample_rate", "u32", lambda c: c["cfg"]["input_sample_rate"]),
    Meta(f"{_TOK}.output_sample_rate", "u32", lambda c: c["cfg"]["output_sample_rate"]),
    Meta(f"{_TOK}.decode_upsample_rate", "u32", lambda c: c["cfg"]["decode_upsample_rate"]),
    Meta(f"{_TOK}.encode_downsample_rate", "u32", lambda c: c["cfg"]["encode_downsample_rate"]),
    Meta(f"{_TOK}.encoder_valid_num_quantizers", "u32", lambda c: c["cfg"]["encoder_valid_num_quantizers"]),
    *[
        Meta(f"{_TOK}.decoder.{k}", "u32", _d(k))
        for k in (
            "latent_dim",
            "codebook_dim",
            "codebook_size",
            "decoder_dim",
            "hidden_size",
            "intermediate_size",
            "head_dim",
            "num_attention_heads",
            "num_key_value_heads",
            "num_hidden_layers",
            "num_quantizers",
            "sliding_window",
        )
    ],
    Meta(f"{_TOK}.decoder.num_semantic_quantizers", "u32", lambda c: c["dec"].get("num_semantic_quantizers", 1)),
    Meta(f"{_TOK}.decoder.rms_norm_eps", "f32", _d("rms_norm_eps")),
    Meta(f"{_TOK}.decoder.rope_theta", "f32", _d("rope_theta")),
    Meta(f"{_TOK}.decoder.layer_scale_initial_scale", "f32", _d("layer_scale_initial_scale")),
    Meta(f"{_TOK}.decoder.upsample_rates", "arr", _d("upsample_rates")),
    Meta(f"{_TOK}.decoder.upsampling_ratios", "arr", _d("upsampling_ratios")),
    Meta(
        f"{_TOK}.decoder.vector_quantization_hidden_dim",
        "u32",
        lambda c: c["dec"].get("vector_quantization_hidden_dimension", c["dec"]["codebook_dim"]),
    ),
    # The width of one stored codebook row (qwentts.cpp's convert.py hard-codes 256, the released
    # value); taken from the tensors so smaller configs are described truthfully.
    Meta(f"{_TOK}.decoder.codebook_dim_internal", "u32", lambda c: c["codebook_row"]),
    *[
        Meta(f"{_TOK}.encoder.{k}", "u32", _e(k))
        for k in (
            "num_filters",
            "kernel_size",
            "last_kernel_size",
            "residual_kernel_size",
            "num_residual_layers",
            "dilation_growth_rate",
            "compress",
            "hidden_size",
            "intermediate_size",
            "head_dim",
            "num_attention_heads",
            "num_key_value_heads",
            "num_hidden_layers",
            "codebook_dim",
            "codebook_size",
            "num_quantizers",
            "num_semantic_quantizers",
        )
    ],
    Meta(f"{_TOK}.encoder.upsampling_ratios", "arr", _e("upsampling_ratios")),
    Meta(f"{_TOK}.encoder.norm_eps", "f32", _e("norm_eps")),
    Meta(f"{_TOK}.encoder.rope_theta", "f32", _e("rope_theta")),
    Meta(f"{_TOK}.encoder.layer_scale_initial_scale", "f32", _e("layer_scale_initial_scale")),
    Meta(
        f"{_TOK}.encoder.vector_quantization_hidden_dim",
        "u32",
        lambda c: c["enc"].get("vector_quantization_hidden_dimension", c["enc"]["codebook_dim"]),
    ),
]

# Config defaults upstream's config classes apply when a key is absent from the JSON.
ENCODER_DEFAULTS = {"dilation_growth_rate": 2, "num_residual_layers": 1}
