"""Config sizes checked against the weights' own shapes, before any module is built.

config.json says how many layers, how wide, how many tokens; the safetensors headers say what the
weights hold. The loader (``from_pretrained``, the codec and its lazy load) and the converter
compare the two from the headers alone (shapes, no tensor data) before building anything: a
config.json that does not belong to its weights, or a hand-edited one (``num_hidden_layers=1000``
over a 28-layer file, a codec config with ``num_hidden_layers=10**7``), is one ConfigError naming
the config key, its value and the tensor that disagrees, instead of a meta model of a thousand
layers, every weight read and then a list of missing tensors (or, for the codec's uncapped config,
memory growing for minutes).

The checks are listed per layout: ``"standalone"`` (convert-ckpt's output, what the loader reads)
and ``"upstream"`` (qwen-tts's names, what convert-ckpt reads). A tensor a check names but the
file lacks is skipped here: the strict tensor accounting after it names missing tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .config import ConfigError, Qwen3TTSConfig, TransformerConfig

LAYOUTS = ("standalone", "upstream")
Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Expect:
    """``tensor``'s dimension ``dim`` must be ``want``, which the config's ``key`` = ``value``
    implies (``how`` says how, when ``want`` is not the value itself). ``dim=None``: ``tensor`` is
    a prefix, and the distinct indices N of ``tensor + "N."`` must number ``want`` (layers)."""

    key: str
    value: Any
    tensor: str
    dim: int | None
    want: int
    how: str = ""


def count_indices(shapes: Shapes, prefix: str) -> int:
    """How many distinct ``prefix + "N."`` indices the tensor names hold."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for name in shapes if (m := pattern.match(name))})


def check_expects(expects: Iterable[Expect], shapes: Shapes, where: str) -> None:
    """Raise ConfigError (prefixed by ``where``, the config file) at the first disagreement."""
    for e in expects:
        implied = f"the config implies {e.want}{f' = {e.how}' if e.how else ''}"
        if e.dim is None:
            got = count_indices(shapes, e.tensor)
            if got and got != e.want:
                raise ConfigError(
                    f"{where}: {e.key} = {e.value!r}, but the weights hold {got} of {e.tensor}N.* ({implied}); "
                    "config.json and the weights disagree (a config of another model, or edited weights?)"
                )
            continue
        shape = shapes.get(e.tensor)
        if shape is None or len(shape) <= e.dim or shape[e.dim] == e.want:
            continue
        raise ConfigError(
            f"{where}: {e.key} = {e.value!r}, but tensor {e.tensor} has shape {list(shape)}: dimension {e.dim} is "
            f"{shape[e.dim]}, {implied}; config.json and the weights disagree (a config of another model, or edited weights?)"
        )


# Tensor names of one decoder stack's first layer, per layout: (q_norm, down projection).
_LAYER = {
    "standalone": ("attn.q_norm.weight", "mlp.w_down.weight"),
    "upstream": ("self_attn.q_norm.weight", "mlp.down_proj.weight"),
}


def stack_expects(t: TransformerConfig, key: str, layers: str, norm: str, layout: str) -> list[Expect]:
    """A decoder stack's sizes: ``key`` the config prefix ("talker_config."), ``layers`` the
    tensor prefix of its layers, ``norm`` its final norm's weight."""
    q_norm, down = (layers + "0." + n for n in _LAYER[layout])
    h, kv, hd = t.num_attention_heads, t.num_key_value_heads, t.head_dim
    out = [
        Expect(key + "num_hidden_layers", t.num_hidden_layers, layers, None, t.num_hidden_layers),
        Expect(key + "hidden_size", t.hidden_size, norm, 0, t.hidden_size),
        Expect(key + "intermediate_size", t.intermediate_size, down, 1, t.intermediate_size),
        Expect(key + "head_dim", hd, q_norm, 0, hd),
    ]
    heads = f"num_attention_heads {h} x head_dim {hd}"
    if layout == "standalone":  # wo [hidden, heads x hd]; wqkv [(heads + 2 kv) x hd, hidden]
        return out + [
            Expect(key + "num_attention_heads", h, layers + "0.attn.wo.weight", 1, h * hd, heads),
            Expect(
                key + "num_key_value_heads",
                kv,
                layers + "0.attn.wqkv.weight",
                0,
                (h + 2 * kv) * hd,
                f"(num_attention_heads {h} + 2 x num_key_value_heads {kv}) x head_dim {hd}",
            ),
        ]
    return out + [
        Expect(key + "num_attention_heads", h, layers + "0.self_attn.q_proj.weight", 0, h * hd, heads),
        Expect(
            key + "num_key_value_heads",
            kv,
            layers + "0.self_attn.k_proj.weight",
            0,
            kv * hd,
            f"num_key_value_heads {kv} x head_dim {hd}",
        ),
    ]


# Where each part's tensors live, per layout.
_MODEL_NAMES = {
    "standalone": dict(
        talker_key="talker.transformer.",
        talker_extra="talker.",
        talker_layers="talker.decoder.layers.",
        talker_norm="talker.decoder.norm.weight",
        codec_embedding="talker.codec_embedding.weight",
        text_embedding="talker.text_embedding.weight",
        cp_key="talker.code_predictor.transformer.",
        cp_extra="talker.code_predictor.",
        cp_layers="code_predictor.decoder.layers.",
        cp_norm="code_predictor.decoder.norm.weight",
        speaker_key="speaker_encoder.",
    ),
    "upstream": dict(
        talker_key="talker_config.",
        talker_extra="talker_config.",
        talker_layers="talker.model.layers.",
        talker_norm="talker.model.norm.weight",
        codec_embedding="talker.model.codec_embedding.weight",
        text_embedding="talker.model.text_embedding.weight",
        cp_key="talker_config.code_predictor_config.",
        cp_extra="talker_config.code_predictor_config.",
        cp_layers="talker.code_predictor.model.layers.",
        cp_norm="talker.code_predictor.model.norm.weight",
        speaker_key="speaker_encoder_config.",
    ),
}


def model_expects(config: Qwen3TTSConfig, layout: str) -> list[Expect]:
    """Every size of the model config that a tensor of ``layout`` shows."""
    n, tk, cp = _MODEL_NAMES[layout], config.talker, config.talker.code_predictor
    out = stack_expects(tk.transformer, n["talker_key"], n["talker_layers"], n["talker_norm"], layout)
    out += [
        Expect(n["talker_extra"] + "vocab_size", tk.vocab_size, n["codec_embedding"], 0, tk.vocab_size),
        Expect(n["talker_extra"] + "text_vocab_size", tk.text_vocab_size, n["text_embedding"], 0, tk.text_vocab_size),
        Expect(
            n["talker_extra"] + "text_hidden_size", tk.text_hidden_size, n["text_embedding"], 1, tk.text_hidden_size
        ),
    ]
    out += stack_expects(cp.transformer, n["cp_key"], n["cp_layers"], n["cp_norm"], layout)
    groups, less = cp.num_code_groups, f"num_code_groups {cp.num_code_groups} - 1"
    if layout == "standalone":  # codec_embeddings [groups - 1, vocab, talker hidden]
        out += [
            Expect(n["cp_extra"] + "num_code_groups", groups, "code_predictor.codec_embeddings", 0, groups - 1, less),
            Expect(n["cp_extra"] + "vocab_size", cp.vocab_size, "code_predictor.codec_embeddings", 1, cp.vocab_size),
        ]
    else:
        embedding = "talker.code_predictor.model.codec_embedding."
        out += [
            Expect(n["cp_extra"] + "num_code_groups", groups, embedding, None, groups - 1, less),
            Expect(n["cp_extra"] + "vocab_size", cp.vocab_size, embedding + "0.weight", 0, cp.vocab_size),
        ]
    return out + speaker_expects(config.speaker_encoder, n["speaker_key"])


def speaker_expects(s, key: str) -> list[Expect]:
    """The speaker encoder's sizes (its tensor names are the same in both layouts)."""
    if s is None:
        return []
    channels = list(s.enc_channels)
    return [
        Expect(
            key + "enc_channels", channels, "speaker_encoder.blocks.", None, len(channels) - 1, "len(enc_channels) - 1"
        ),
        Expect(key + "mel_dim", s.mel_dim, "speaker_encoder.blocks.0.conv.weight", 1, s.mel_dim),
        Expect(
            key + "enc_channels", channels, "speaker_encoder.blocks.0.conv.weight", 0, channels[0], "enc_channels[0]"
        ),
        Expect(key + "enc_dim", s.enc_dim, "speaker_encoder.fc.weight", 0, s.enc_dim),
    ]


_CODEC_NAMES = {
    "standalone": dict(
        layers="decoder.transformer.layers.",
        norm="decoder.transformer.norm.weight",
        books="decoder.codebook_sums",
    ),
    "upstream": dict(
        layers="decoder.pre_transformer.layers.",
        norm="decoder.pre_transformer.norm.weight",
        books="decoder.quantizer.rvq_first.vq.layers.0._codebook.embedding_sum",
    ),
}


def codec_expects(cfg, layout: str) -> list[Expect]:
    """The speech-tokenizer decoder's sizes (``decoder_config`` of speech_tokenizer/config.json)."""
    n, k = _CODEC_NAMES[layout], "decoder_config."
    out = [
        Expect(k + "num_hidden_layers", cfg.num_hidden_layers, n["layers"], None, cfg.num_hidden_layers),
        Expect(k + "hidden_size", cfg.hidden_size, n["norm"], 0, cfg.hidden_size),
        Expect(k + "latent_dim", cfg.latent_dim, "decoder.pre_conv.conv.weight", 0, cfg.latent_dim),
        Expect(k + "codebook_dim", cfg.codebook_dim, "decoder.pre_conv.conv.weight", 1, cfg.codebook_dim),
        Expect(k + "decoder_dim", cfg.decoder_dim, "decoder.decoder.0.conv.weight", 0, cfg.decoder_dim),
        Expect(
            k + "upsampling_ratios", list(cfg.upsampling_ratios), "decoder.upsample.", None, len(cfg.upsampling_ratios)
        ),
    ]
    if layout == "standalone":  # codebook_sums [quantizers, size, codebook_dim / 2]
        return out + [
            Expect(k + "num_quantizers", cfg.num_quantizers, n["books"], 0, cfg.num_quantizers),
            Expect(k + "codebook_size", cfg.codebook_size, n["books"], 1, cfg.codebook_size),
        ]
    rest = "decoder.quantizer.rvq_rest.vq.layers."
    return out + [
        Expect(k + "num_quantizers", cfg.num_quantizers, rest, None, cfg.num_quantizers - 1, "num_quantizers - 1"),
        Expect(k + "codebook_size", cfg.codebook_size, n["books"], 0, cfg.codebook_size),
    ]


_ENCODER_NAMES = {
    "standalone": dict(
        layers="encoder.transformer.layers.",
        norm="encoder.transformer.layers.0.attn_norm.weight",
        fc1="encoder.transformer.layers.0.fc1.weight",
        first_conv="encoder.conv_stack.layers.0.conv.weight",
    ),
    "upstream": dict(
        layers="encoder.encoder_transformer.layers.",
        norm="encoder.encoder_transformer.layers.0.input_layernorm.weight",
        fc1="encoder.encoder_transformer.layers.0.mlp.fc1.weight",
        first_conv="encoder.encoder.layers.0.conv.weight",
    ),
}


def encoder_expects(cfg, layout: str) -> list[Expect]:
    """The speech-tokenizer encoder's sizes (``encoder_config``; a SpeechEncoderConfig)."""
    n, k = _ENCODER_NAMES[layout], "encoder_config."
    out = [
        Expect(k + "num_hidden_layers", cfg.num_hidden_layers, n["layers"], None, cfg.num_hidden_layers),
        Expect(k + "hidden_size", cfg.hidden_size, n["norm"], 0, cfg.hidden_size),
        Expect(k + "intermediate_size", cfg.intermediate_size, n["fc1"], 0, cfg.intermediate_size),
        Expect(k + "num_filters", cfg.num_filters, n["first_conv"], 0, cfg.num_filters),
    ]
    if layout == "standalone":  # codebook_sums [quantizers, size, codebook_dim]
        books = "encoder.codebook_sums"
        return out + [
            Expect(k + "num_quantizers", cfg.num_quantizers, books, 0, cfg.num_quantizers),
            Expect(k + "codebook_size", cfg.codebook_size, books, 1, cfg.codebook_size),
            Expect(k + "codebook_dim", cfg.codebook_dim, books, 2, cfg.codebook_dim),
        ]
    acoustic, semantic = (f"encoder.quantizer.{w}_residual_vector_quantizer.layers." for w in ("acoustic", "semantic"))
    acoustic_count = cfg.num_quantizers - cfg.num_semantic_quantizers
    return out + [
        Expect(
            k + "num_quantizers",
            cfg.num_quantizers,
            acoustic,
            None,
            acoustic_count,
            "num_quantizers - num_semantic_quantizers",
        ),
        Expect(k + "codebook_size", cfg.codebook_size, semantic + "0.codebook.embed_sum", 0, cfg.codebook_size),
        Expect(k + "codebook_dim", cfg.codebook_dim, semantic + "0.codebook.embed_sum", 1, cfg.codebook_dim),
    ]


def check_model_shapes(config: Qwen3TTSConfig, shapes: Shapes, layout: str, where: str) -> None:
    check_expects(model_expects(config, layout), shapes, where)


def check_codec_shapes(cfg, shapes: Shapes, layout: str, where: str) -> None:
    check_expects(codec_expects(cfg, layout), shapes, where)


def check_encoder_shapes(cfg, shapes: Shapes, layout: str, where: str) -> None:
    check_expects(encoder_expects(cfg, layout), shapes, where)


def shapes_of(infos: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a CheckpointReader's ``infos`` (headers only)."""
    return {name: tuple(info.shape) for name, info in infos.items()}
