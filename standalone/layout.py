"""The weight layout map: every upstream tensor and what it becomes in the standalone layout.

The table is data. ``plan(config)`` expands it for a concrete config into ``Entry`` objects; the
forward conversion (upstream -> standalone) and the reverse are both derived from those entries,
so they cannot drift apart. Three operations:

- rename:  one source tensor, one target tensor.
- concat:  several sources concatenated along dim 0 (q/k/v -> wqkv, gate/up -> w_gate_up).
- stack:   one source per residual codec group stacked into a new leading dim.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from .config import Qwen3TTSConfig, TransformerConfig


class Direction(enum.Enum):
    """Which way a conversion runs over the one map."""

    TO_STANDALONE = "standalone"
    TO_UPSTREAM = "upstream"

    def reads(self, entry: Entry) -> tuple[str, ...]:
        """The tensor names this direction reads for ``entry``."""
        return entry.sources if self is Direction.TO_STANDALONE else (entry.target,)

    def writes(self, entry: Entry) -> tuple[str, ...]:
        return (entry.target,) if self is Direction.TO_STANDALONE else entry.sources

    def read_shapes(self, entry: Entry) -> tuple[tuple[int, ...] | None, ...]:
        return entry.source_shapes if self is Direction.TO_STANDALONE else (entry.target_shape,)

    def apply(self, entry: Entry, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors ``writes(entry)`` names, made from the ones ``reads(entry)`` names."""
        if self is Direction.TO_STANDALONE:
            return [entry.to_standalone(tensors)]
        return entry.to_upstream(tensors[0])

    def op_name(self, entry: Entry) -> str:
        if self is Direction.TO_STANDALONE:
            return entry.op
        return {"rename": "rename", "concat": "split", "stack": "unstack"}[entry.op]


@dataclass(frozen=True)
class Rule:
    target: str
    sources: tuple[str, ...]
    op: str = "rename"  # rename | concat | stack
    split: tuple[str, ...] = ()  # concat: size name of each source (see _sizes)
    when: str | None = None  # only for configs that have this part (see _has)


# One decoder layer; prefixed per stack below.
LAYER_RULES = (
    Rule(
        "attn.wqkv.weight",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        op="concat",
        split=("q", "kv", "kv"),
    ),
    Rule("attn.wo.weight", ("self_attn.o_proj.weight",)),
    Rule("attn.q_norm.weight", ("self_attn.q_norm.weight",)),
    Rule("attn.k_norm.weight", ("self_attn.k_norm.weight",)),
    Rule("attn_norm.weight", ("input_layernorm.weight",)),
    Rule("mlp_norm.weight", ("post_attention_layernorm.weight",)),
    Rule("mlp.w_gate_up.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), op="concat", split=("ffn", "ffn")),
    Rule("mlp.w_down.weight", ("mlp.down_proj.weight",)),
)

# (standalone prefix, upstream prefix) of each decoder stack's layer {i}.
STACKS = {
    "talker": ("talker.decoder.layers.{i}.", "talker.model.layers.{i}."),
    "code_predictor": ("code_predictor.decoder.layers.{i}.", "talker.code_predictor.model.layers.{i}."),
}

TOP_RULES = (
    Rule("talker.text_embedding.weight", ("talker.model.text_embedding.weight",)),
    Rule("talker.text_projection.fc1.weight", ("talker.text_projection.linear_fc1.weight",)),
    Rule("talker.text_projection.fc1.bias", ("talker.text_projection.linear_fc1.bias",)),
    Rule("talker.text_projection.fc2.weight", ("talker.text_projection.linear_fc2.weight",)),
    Rule("talker.text_projection.fc2.bias", ("talker.text_projection.linear_fc2.bias",)),
    Rule("talker.codec_embedding.weight", ("talker.model.codec_embedding.weight",)),
    Rule("talker.decoder.norm.weight", ("talker.model.norm.weight",)),
    Rule("talker.codec_head.weight", ("talker.codec_head.weight",)),
    Rule("code_predictor.decoder.norm.weight", ("talker.code_predictor.model.norm.weight",)),
    Rule("code_predictor.codec_embeddings", ("talker.code_predictor.model.codec_embedding.{g}.weight",), op="stack"),
    Rule("code_predictor.heads", ("talker.code_predictor.lm_head.{g}.weight",), op="stack"),
    Rule(
        "code_predictor.input_projection.weight",
        ("talker.code_predictor.small_to_mtp_projection.weight",),
        when="input_projection",
    ),
    Rule(
        "code_predictor.input_projection.bias",
        ("talker.code_predictor.small_to_mtp_projection.bias",),
        when="input_projection",
    ),
)

# The speaker encoder keeps upstream's module names, so its tensors map one to one under this prefix.
SPEAKER_ENCODER_PREFIX = "speaker_encoder."


@dataclass(frozen=True)
class Entry:
    """One target tensor and the source tensors it is made of, with their expected shapes."""

    target: str
    target_shape: tuple[int, ...] | None  # None: carried through, shape taken from the file
    sources: tuple[str, ...]
    source_shapes: tuple[tuple[int, ...] | None, ...]
    op: str

    def to_standalone(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.op == "rename":
            return tensors[0]
        if self.op == "concat":
            return torch.cat(tensors, dim=0)
        return torch.stack(tensors, dim=0)

    def to_upstream(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        if self.op == "rename":
            return [tensor]
        if self.op == "concat":
            return [t.contiguous() for t in torch.split(tensor, [s[0] for s in self.source_shapes], dim=0)]
        return [t.contiguous() for t in tensor.unbind(0)]


def _sizes(tc: TransformerConfig) -> dict[str, int]:
    return {
        "q": tc.num_attention_heads * tc.head_dim,
        "kv": tc.num_key_value_heads * tc.head_dim,
        "ffn": tc.intermediate_size,
    }


def _has(config: Qwen3TTSConfig, part: str) -> bool:
    if part == "input_projection":
        return config.talker.code_predictor.transformer.hidden_size != config.talker.transformer.hidden_size
    raise KeyError(part)


def target_shapes(config: Qwen3TTSConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the standalone model's tensors, from the model itself built on the meta device."""
    from .network import network_parts

    with torch.device("meta"):
        model = nn.Module()
        for name, part in network_parts(config).items():
            setattr(model, name, part)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _entry(
    rule: Rule, target: str, tshape: tuple[int, ...], sources: tuple[str, ...], sizes: Mapping[str, int] | None
) -> Entry:
    """The entry for one rule: source shapes follow from the target's shape and the operation."""
    if rule.op == "rename":
        sshapes = (tshape,)
    elif rule.op == "concat":
        sshapes = tuple((sizes[x], *tshape[1:]) for x in rule.split)
    else:
        sshapes = tuple(tshape[1:] for _ in sources)
    return Entry(target, tshape, sources, sshapes, rule.op)


def plan(config: Qwen3TTSConfig) -> list[Entry]:
    """Every target tensor of ``config``'s standalone model, with its sources. Raises if the table
    and the model disagree (a table that forgot a tensor is a bug, not a user error)."""
    shapes = target_shapes(config)
    entries: list[Entry] = []

    def add(rule: Rule, target: str, sources: tuple[str, ...], sizes: Mapping[str, int] | None = None):
        entries.append(_entry(rule, target, shapes[target], sources, sizes))

    stack_cfgs = {"talker": config.talker.transformer, "code_predictor": config.talker.code_predictor.transformer}
    for stack, (dst_prefix, src_prefix) in STACKS.items():
        tc = stack_cfgs[stack]
        for i in range(tc.num_hidden_layers):
            for rule in LAYER_RULES:
                add(
                    rule,
                    dst_prefix.format(i=i) + rule.target,
                    tuple(src_prefix.format(i=i) + s for s in rule.sources),
                    _sizes(tc),
                )
    for rule in TOP_RULES:
        if rule.when and not _has(config, rule.when):
            continue
        if rule.op == "stack":
            add(rule, rule.target, expand_stack(rule, shapes[rule.target][0]))
        else:
            add(rule, rule.target, rule.sources)
    for name in shapes:
        if name.startswith(SPEAKER_ENCODER_PREFIX):
            entries.append(Entry(name, shapes[name], (name,), (shapes[name],), "rename"))

    covered = {e.target for e in entries}
    if covered != set(shapes):
        raise AssertionError(f"layout table out of date: uncovered {sorted(set(shapes) - covered)[:5]}")
    return entries


def expand_stack(rule: Rule, count: int) -> tuple[str, ...]:
    """Sources of a stack of ``count`` tensors: fixed names first, then the {g} template for the rest."""
    fixed = [t for t in rule.sources if "{g}" not in t]
    templates = [t for t in rule.sources if "{g}" in t]
    rest = [t.format(g=g) for t in templates for g in range(count - len(fixed))]
    return tuple(fixed + rest)


# --- speech tokenizer (12 Hz codec) -----------------------------------------------------------
_Q = "decoder.quantizer."
CODEC_LAYER_RULES = (
    Rule(
        "attn.wqkv.weight",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        op="concat",
        split=("q", "kv", "kv"),
    ),
    Rule("attn.wo.weight", ("self_attn.o_proj.weight",)),
    Rule("attn_norm.weight", ("input_layernorm.weight",)),
    Rule("mlp_norm.weight", ("post_attention_layernorm.weight",)),
    Rule("w_gate_up.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), op="concat", split=("ffn", "ffn")),
    Rule("w_down.weight", ("mlp.down_proj.weight",)),
    Rule("attn_scale", ("self_attn_layer_scale.scale",)),
    Rule("mlp_scale", ("mlp_layer_scale.scale",)),
)
CODEC_STACK = ("decoder.transformer.layers.{i}.", "decoder.pre_transformer.layers.{i}.")
CODEC_TOP_RULES = (
    Rule(
        "decoder.codebook_sums",
        (_Q + "rvq_first.vq.layers.0._codebook.embedding_sum", _Q + "rvq_rest.vq.layers.{g}._codebook.embedding_sum"),
        op="stack",
    ),
    Rule(
        "decoder.codebook_usage",
        (_Q + "rvq_first.vq.layers.0._codebook.cluster_usage", _Q + "rvq_rest.vq.layers.{g}._codebook.cluster_usage"),
        op="stack",
    ),
    Rule("decoder.semantic_input_proj", (_Q + "rvq_first.input_proj.weight",)),
    Rule("decoder.semantic_output_proj", (_Q + "rvq_first.output_proj.weight",)),
    Rule("decoder.acoustic_input_proj", (_Q + "rvq_rest.input_proj.weight",)),
    Rule("decoder.acoustic_output_proj", (_Q + "rvq_rest.output_proj.weight",)),
    Rule("decoder.transformer.input_proj.weight", ("decoder.pre_transformer.input_proj.weight",)),
    Rule("decoder.transformer.input_proj.bias", ("decoder.pre_transformer.input_proj.bias",)),
    Rule("decoder.transformer.output_proj.weight", ("decoder.pre_transformer.output_proj.weight",)),
    Rule("decoder.transformer.output_proj.bias", ("decoder.pre_transformer.output_proj.bias",)),
    Rule("decoder.transformer.norm.weight", ("decoder.pre_transformer.norm.weight",)),
)
# Convolution stacks keep upstream's module names, so they map one to one under these prefixes.
CODEC_IDENTITY_PREFIXES = ("decoder.pre_conv.", "decoder.upsample.", "decoder.decoder.")

# The encoder (audio -> codes; transformers' Mimi encoder under "encoder.").
_EQ = "encoder.quantizer.{branch}_residual_vector_quantizer."
ENCODER_LAYER_RULES = (
    Rule(
        "attn.wqkv.weight",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        op="concat",
        split=("q", "kv", "kv"),
    ),
    Rule("attn.wo.weight", ("self_attn.o_proj.weight",)),
    Rule("attn_norm.weight", ("input_layernorm.weight",)),
    Rule("attn_norm.bias", ("input_layernorm.bias",)),
    Rule("mlp_norm.weight", ("post_attention_layernorm.weight",)),
    Rule("mlp_norm.bias", ("post_attention_layernorm.bias",)),
    Rule("fc1.weight", ("mlp.fc1.weight",)),
    Rule("fc2.weight", ("mlp.fc2.weight",)),
    Rule("attn_scale", ("self_attn_layer_scale.scale",)),
    Rule("mlp_scale", ("mlp_layer_scale.scale",)),
)
ENCODER_STACK = ("encoder.transformer.layers.{i}.", "encoder.encoder_transformer.layers.{i}.")
ENCODER_TOP_RULES = (
    # One stack over all quantizers, semantic ones first; "{k}" runs over each branch's layers.
    Rule("encoder.codebook_sums", (_EQ + "layers.{k}.codebook.embed_sum",), op="stack"),
    Rule("encoder.codebook_usage", (_EQ + "layers.{k}.codebook.cluster_usage",), op="stack"),
    Rule("encoder.codebook_initialized", (_EQ + "layers.{k}.codebook.initialized",), op="stack"),
    Rule("encoder.semantic_input_proj", (_EQ.format(branch="semantic") + "input_proj.weight",)),
    Rule("encoder.semantic_output_proj", (_EQ.format(branch="semantic") + "output_proj.weight",)),
    Rule("encoder.acoustic_input_proj", (_EQ.format(branch="acoustic") + "input_proj.weight",)),
    Rule("encoder.acoustic_output_proj", (_EQ.format(branch="acoustic") + "output_proj.weight",)),
    Rule("encoder.downsample.conv.weight", ("encoder.downsample.conv.weight",), when="downsample"),
)
# The SEANet conv stack keeps upstream's module names below a renamed prefix (standalone, upstream).
ENCODER_PREFIX_RENAMES = (("encoder.conv_stack.", "encoder.encoder."),)


def codec_plan(cfg, encoder_cfg=None) -> list[Entry]:
    """Entries for the speech tokenizer's weights: the decoder and, given its config, the
    encoder, through the tables above."""
    from .codec import CodecDecoder

    with torch.device("meta"):
        model = CodecDecoder(cfg)
    shapes = {"decoder." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    entries: list[Entry] = []
    sizes = {
        "q": cfg.num_attention_heads * cfg.head_dim,
        "kv": cfg.num_key_value_heads * cfg.head_dim,
        "ffn": cfg.intermediate_size,
    }

    def add(rule: Rule, target: str, sources: tuple[str, ...]):
        entries.append(_entry(rule, target, shapes[target], sources, sizes))

    dst_prefix, src_prefix = CODEC_STACK
    for i in range(cfg.num_hidden_layers):
        for rule in CODEC_LAYER_RULES:
            add(rule, dst_prefix.format(i=i) + rule.target, tuple(src_prefix.format(i=i) + x for x in rule.sources))
    for rule in CODEC_TOP_RULES:
        add(rule, rule.target, expand_stack(rule, shapes[rule.target][0]) if rule.op == "stack" else rule.sources)
    for name, shape in shapes.items():
        if name.startswith(CODEC_IDENTITY_PREFIXES):
            entries.append(Entry(name, shape, (name,), (shape,), "rename"))
    if encoder_cfg is not None:
        entries += _encoder_entries(encoder_cfg, shapes)
    covered = {e.target for e in entries}
    if covered != set(shapes):
        raise AssertionError(f"codec layout table out of date: uncovered {sorted(set(shapes) - covered)[:5]}")
    return entries


def _encoder_entries(ecfg, shapes: dict[str, tuple[int, ...]]) -> list[Entry]:
    from .speech_encoder import SpeechEncoder

    with torch.device("meta"):
        model = SpeechEncoder(ecfg)
    shapes.update({"encoder." + k: tuple(v.shape) for k, v in model.state_dict().items()})
    sizes = {"q": ecfg.num_attention_heads * ecfg.head_dim, "kv": ecfg.num_key_value_heads * ecfg.head_dim}
    entries = []
    dst_prefix, src_prefix = ENCODER_STACK
    for i in range(ecfg.num_hidden_layers):
        for rule in ENCODER_LAYER_RULES:
            target = dst_prefix.format(i=i) + rule.target
            entries.append(
                _entry(rule, target, shapes[target], tuple(src_prefix.format(i=i) + x for x in rule.sources), sizes)
            )
    branches = (
        ("semantic", ecfg.num_semantic_quantizers),
        ("acoustic", ecfg.num_quantizers - ecfg.num_semantic_quantizers),
    )
    for rule in ENCODER_TOP_RULES:
        if rule.when == "downsample" and not ecfg.downsample_kernel:
            continue
        if rule.op == "stack":
            sources = tuple(rule.sources[0].format(branch=b, k=k) for b, n in branches for k in range(n))
        else:
            sources = rule.sources
        entries.append(_entry(rule, rule.target, shapes[rule.target], sources, sizes))
    for name, shape in shapes.items():
        for dst, src in ENCODER_PREFIX_RENAMES:
            if name.startswith(dst):
                entries.append(Entry(name, shape, (src + name[len(dst) :],), (shape,), "rename"))
    return entries


def source_names(entries: Iterable[Entry]) -> list[str]:
    return [s for e in entries for s in e.sources]


def convert_tensors(
    entries: Iterable[Entry],
    get: Callable[[str], torch.Tensor],
    direction: Direction = Direction.TO_STANDALONE,
) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield converted (name, tensor) pairs, one entry at a time, reading inputs with ``get``.

    Shapes are checked against the plan before anything is combined, so a mis-shaped tensor is
    reported by its own name.
    """
    direction = Direction(direction)
    for e in entries:
        parts = []
        for name, shape in zip(direction.reads(e), direction.read_shapes(e)):
            t = get(name)
            if shape is not None and tuple(t.shape) != shape:
                raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, the config implies {shape}")
            parts.append(t)
        yield from zip(direction.writes(e), direction.apply(e, parts))
