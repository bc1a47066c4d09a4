"""Mixed precision: half-precision weights for the big linears, fp32 where it matters.

A precision mode is a per-tensor dtype rule. Half precision (bf16 or fp16) holds only the
tensors that are big and read every frame, plus the embedding tables (read a row at a time);
everything else stays fp32, and so do all activations: the residual stream, the norms, the
attention core and the KV cache, the logits. Casts happen at module boundaries: a linear whose
weight is half casts its fp32 input down and its output back up (layers.Linear,
layers.split_linear), an embedding lookup returns fp32 (layers.Embedding, CodePredictor.embed).

What stays fp32, and why (measurements: reports/mixed-precision.md):
- the residual stream, RMSNorm inputs and weights, attention logits, KV cache: the stream carries
  a trained model's outlier channels ("massive activations", thousands in size), the value users
  report overflowing fp16 in the 0.6B code predictor; fp32 costs no weight bytes;
- the logits heads (talker codec_head, code-predictor heads): near-ties decide greedy codes; they
  are 2% of the bytes a frame reads;
- fp16-mixed only: the MLP down projections, whose outputs write those outlier channels into the
  stream (an fp16 GEMM output saturates at 65504 before any fp32 residual add can help; the same
  reason transformers keeps T5's ``wo`` in fp32). bf16 has fp32's range, so bf16-mixed keeps them
  half;
- the text projection and the 1.7B code-predictor input projection: off the per-frame path or
  small (under 1% of a frame's bytes);
- the speaker encoder, and the whole speech tokenizer (decoder and encoder): the codec decoder in
  bf16 loses 16 dB of SNR against fp32 on random weights (the users' "silence" report), the
  encoder's nearest-codebook search flips codes in bf16; both run once per clip, not per frame.

A mixed checkpoint (convert-ckpt --dtype bf16-mixed) stores each tensor in its mode's dtype and
names the mode in its safetensors metadata (``precision``), so the loader restores it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .dtypes import BY_SHORT

METADATA_KEY = "precision"  # safetensors metadata of a mixed checkpoint's weight files

# Standalone tensor names (model part) held in half precision by every mixed mode.
_HALF_ALWAYS = (
    r"talker\.text_embedding\.weight",
    r"talker\.codec_embedding\.weight",
    r"code_predictor\.codec_embeddings",
    r"(talker|code_predictor)\.decoder\.layers\.\d+\.attn\.(wqkv|wo)\.weight",
    r"(talker|code_predictor)\.decoder\.layers\.\d+\.mlp\.w_gate_up\.weight",
)
_DOWN = r"(talker|code_predictor)\.decoder\.layers\.\d+\.mlp\.w_down\.weight"


@dataclass(frozen=True)
class Precision:
    """A mixed mode: ``half`` for the tensors matching ``half_patterns``, fp32 for the rest."""

    name: str
    half: torch.dtype
    half_patterns: tuple[str, ...]

    def dtype_for(self, name: str, part: str = "") -> torch.dtype:
        """Storage dtype of floating tensor ``name`` of ``part`` ("" = the model, or
        "speech_tokenizer", which is fp32 whole)."""
        if part == "" and any(re.fullmatch(p, name) for p in self.half_patterns):
            return self.half
        return torch.float32

    def __str__(self) -> str:
        return self.name


MIXED: dict[str, Precision] = {
    "bf16-mixed": Precision("bf16-mixed", torch.bfloat16, _HALF_ALWAYS + (_DOWN,)),
    "fp16-mixed": Precision("fp16-mixed", torch.float16, _HALF_ALWAYS),
}
PLAIN_NAMES = ("fp32", "bf16", "fp16")
MODE_NAMES = PLAIN_NAMES + tuple(MIXED)


def parse_mode(name: str, allowed: tuple[str, ...] = MODE_NAMES) -> torch.dtype | Precision | None:
    """A user's precision name -> torch dtype (plain mode), Precision (mixed) or None ("keep")."""
    if name == "keep":
        return None
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(('keep',) + allowed)}")
    return MIXED[name] if name in MIXED else BY_SHORT[name]


def cast_state(state: dict[str, torch.Tensor], precision: Precision, part: str = "") -> dict[str, torch.Tensor]:
    """Floating tensors of ``state`` cast to ``precision``'s per-tensor dtypes."""
    return {k: v.to(precision.dtype_for(k, part)) if v.is_floating_point() else v for k, v in state.items()}


def set_activation_dtype(model, dtype: torch.dtype | None) -> None:
    """Make the embedding lookups of ``model`` (a Qwen3TTS) return ``dtype`` (None: the table's
    own dtype, the plain modes)."""
    model.talker.text_embedding.out_dtype = dtype
    model.talker.codec_embedding.out_dtype = dtype
    model.code_predictor.embed_dtype = dtype


def stored_precision(directory) -> Precision | None:
    """The mixed mode a checkpoint directory was converted to (its weight files' safetensors
    metadata), or None for a plain checkpoint."""
    from pathlib import Path

    from .checkpoint import CheckpointError, CheckpointReader, read_header

    directory = Path(directory)
    names = set()
    for file in CheckpointReader(directory).files:  # the files the loader reads (the manifest's)
        names.add(read_header(directory / file)[1].get(METADATA_KEY))
    if len(names) > 1:
        raise CheckpointError(f"{directory}: weight files disagree on the precision mode ({sorted(map(str, names))})")
    name = names.pop() if names else None
    if name is None:
        return None
    if name not in MIXED:
        raise CheckpointError(
            f"{directory}: weight metadata names precision {name!r}, not one of {', '.join(MIXED)} "
            "(written by a newer converter?)"
        )
    return MIXED[name]
