"""Teacher-forced training forward for fine-tuning a voice: talker loss, code-predictor loss,
their weighted sum, and the logits, with gradients.

One code path, two recipes, selected by name:

``"upstream"`` reproduces the step of QwenLM/Qwen3-TTS ``finetuning/sft_12hz.py`` at commit
022e286 ("fix finetuning bug", the newest runnable version), bugs included:
  - text embedded with ``text_embedding`` only, no ``text_projection`` (so the text width must
    equal the talker width; it does not at 0.6B, where upstream crashes too);
  - the talker runs on ``inputs[:, :-1]`` with ``labels[:, 1:]``, and the causal-LM loss shifts
    again: the logit at q is scored against the label at q + 2 (two frames ahead);
  - the code predictor gets ``hidden[codec_mask[:, :-1]]`` = h[p_k], the state that has already
    read every code of frame k;
  - the code predictor's labels ``codes[:, 1:]`` are shifted again inside the loss: head j is
    scored against group j + 2, group 1 is never trained, the last head gets no loss.

``"aligned"`` (the default) is what generation does (derivation: the decode loop in
generation.py): text through ``text_projection``; the talker over the whole sequence with one
shift (logit at p_k - 1 predicts frame k's group 0); the code predictor fed h[p_k - 1], the
hidden that produced frame k's group-0 logits; head j scored against group j + 1.

Both weigh the losses ``talker + 0.3 * code_predictor`` (upstream since 680d4e9), each a
token-level mean computed as transformers' causal-LM loss computes it (fp32 logits,
cross-entropy with ignore index -100).

Batch layout: upstream's ``finetuning/dataset.py`` collate (non-streaming prompt, language
"auto", speaker vector at position 6), generalised from 16 code groups to the model's G.
Nothing here adds parameters, buffers or state; inference does not go through this module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
SPEAKER_SLOT = 6  # the codec channel position that carries the speaker vector
# [im_start, "assistant", "\n"] + 4 x tts_pad + tts_bos, then the text; the codec prefix is
# [nothink, think_bos, think_eos, speaker, pad] at positions 3..7.
TEXT_START = 8


@dataclass(frozen=True)
class Recipe:
    name: str
    text_projection: bool  # embed text as inference does (projection) or raw (upstream)
    sliced_talker: bool  # upstream: inputs[:, :-1], labels[:, 1:], then the loss shifts again
    code_predictor_hidden: str  # "previous": h[p_k - 1] (generation); "leak": h[p_k] (upstream 022e286)
    code_predictor_label_shift: bool  # upstream shifts the code predictor's labels once more
    code_predictor_weight: float = 0.3

    @property
    def talker_label_offset(self) -> int:
        """The talker logit at position q is scored against the label at q + offset."""
        return 2 if self.sliced_talker else 1

    @property
    def code_predictor_group_offset(self) -> int:
        """Code-predictor head j is scored against group j + offset."""
        return 2 if self.code_predictor_label_shift else 1


RECIPES: dict[str, Recipe] = {
    "upstream": Recipe(
        "upstream",
        text_projection=False,
        sliced_talker=True,
        code_predictor_hidden="leak",
        code_predictor_label_shift=True,
    ),
    "aligned": Recipe(
        "aligned",
        text_projection=True,
        sliced_talker=False,
        code_predictor_hidden="previous",
        code_predictor_label_shift=False,
    ),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[recipe]
    except KeyError:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}") from None


# --------------------------------------------------------------------------------------------
# Batch
@dataclass
class TrainingBatch:
    """Upstream's collate output, field for field (masks are bool, attention_mask long)."""

    input_ids: torch.Tensor  # [B, L, 2]: channel 0 text ids, channel 1 codec ids
    codec_ids: torch.Tensor  # [B, L, G]: every group of frame k at its position p_k
    text_embedding_mask: torch.Tensor  # [B, L, 1]
    codec_embedding_mask: torch.Tensor  # [B, L, 1]
    codec_mask: torch.Tensor  # [B, L]: True at frame positions
    attention_mask: torch.Tensor  # [B, L], right-padded
    codec_0_labels: torch.Tensor  # [B, L]: group-0 code at p_k, codec EOS after the last frame

    def to(self, device) -> TrainingBatch:
        return TrainingBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def frame_positions(self) -> list[torch.Tensor]:
        """Per item, the positions p_k of its frames."""
        return [row.nonzero().flatten() for row in self.codec_mask]


@dataclass(frozen=True)
class TrainingItem:
    text_ids: torch.Tensor  # [3 + N]: im_start, "assistant", "\n", then the N text tokens
    codes: torch.Tensor  # [T, G]


def training_text_ids(tokenizer, text: str) -> torch.Tensor:
    """Upstream's dataset text: the assistant template, tokenised, minus its last 5 tokens."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = tokenizer.encode(tokenizer.assistant_text(text))
    if len(ids) < 9:
        raise ValueError(f"text {text!r} tokenises to nothing")
    return torch.tensor(ids[:-5], dtype=torch.long)


def _check_ids(what: str, t, size: int) -> None:
    """Integer ids inside [0, size): a float would be truncated, an id outside fails deep in an embedding."""
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= size):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"{what} has id {bad}; ids must be in 0..{size - 1}")


def check_item(i: int, it: TrainingItem, groups: int, codebook: int, text_vocab: int) -> None:
    if not isinstance(it, TrainingItem):
        raise TypeError(f"item {i} must be a TrainingItem, got {type(it).__name__}")
    _check_ids(f"item {i}: codes", it.codes, codebook)
    _check_ids(f"item {i}: text_ids", it.text_ids, text_vocab)
    if it.codes.dim() != 2 or it.codes.shape[1] != groups:
        raise ValueError(f"item {i}: codes must be [frames, {groups}], got {tuple(it.codes.shape)}")
    if it.codes.shape[0] < 1:
        raise ValueError(f"item {i}: no frames")
    if it.text_ids.dim() != 1 or it.text_ids.shape[0] < 4:
        raise ValueError(f"item {i}: text_ids must be [3 + N] with N >= 1, got {tuple(it.text_ids.shape)}")


def collate(items: Sequence[TrainingItem], config) -> TrainingBatch:
    """Lay out a batch exactly as upstream's ``TTSDataset.collate_fn`` does (right padding).

    Per item, with N text tokens and T frames (L = N + T + 11 positions):
      0..2 role | 3..6 tts_pad (codec nothink, think_bos, think_eos, speaker slot) | 7 tts_bos
      (codec pad) | 8..7+N text (codec pad) | 8+N tts_eos (codec pad) | 9+N tts_pad (codec bos)
      | p_k = 10+N+k frames (tts_pad, every group) | 10+N+T tts_pad (codec eos).
    """
    tcfg = config.talker
    groups = tcfg.num_code_groups
    if not items:
        raise ValueError("collate: empty batch")
    for i, it in enumerate(items):
        check_item(i, it, groups, tcfg.code_predictor.vocab_size, tcfg.text_vocab_size)
    length = max(it.text_ids.shape[0] + it.codes.shape[0] for it in items) + 8
    b = len(items)
    input_ids = torch.zeros(b, length, 2, dtype=torch.long)
    codec_ids = torch.zeros(b, length, groups, dtype=torch.long)
    text_mask = torch.zeros(b, length, dtype=torch.bool)
    codec_emb_mask = torch.zeros(b, length, dtype=torch.bool)
    codec_mask = torch.zeros(b, length, dtype=torch.bool)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    for i, it in enumerate(items):
        n = it.text_ids.shape[0] - 3
        t = it.codes.shape[0]
        first = TEXT_START + n + 2  # p_0
        end = first + t  # the codec-EOS position; the item's last
        text = input_ids[i, :, 0]
        text[:3] = it.text_ids[:3]
        text[3:7] = config.tts_pad_token_id
        text[7] = config.tts_bos_token_id
        text[TEXT_START : TEXT_START + n] = it.text_ids[3:]
        text[TEXT_START + n] = config.tts_eos_token_id
        text[TEXT_START + n + 1 : end + 1] = config.tts_pad_token_id
        codec = input_ids[i, :, 1]
        codec[3:8] = torch.tensor(
            [tcfg.codec_nothink_id, tcfg.codec_think_bos_id, tcfg.codec_think_eos_id, 0, tcfg.codec_pad_id]
        )
        codec[TEXT_START : TEXT_START + n + 1] = tcfg.codec_pad_id
        codec[TEXT_START + n + 1] = tcfg.codec_bos_id
        codec[first:end] = it.codes[:, 0]
        codec[end] = tcfg.codec_eos_token_id
        labels[i, first:end] = it.codes[:, 0]
        labels[i, end] = tcfg.codec_eos_token_id
        codec_ids[i, first:end] = it.codes
        text_mask[i, : end + 1] = True
        codec_emb_mask[i, 3 : end + 1] = True
        codec_emb_mask[i, SPEAKER_SLOT] = False
        codec_mask[i, first:end] = True
        attention_mask[i, : end + 1] = 1
    return TrainingBatch(
        input_ids, codec_ids, text_mask[..., None], codec_emb_mask[..., None], codec_mask, attention_mask, labels
    )


# --------------------------------------------------------------------------------------------
# Forward
@dataclass
class TrainingOutput:
    loss: torch.Tensor  # talker_loss + weight * code_predictor_loss
    talker_loss: torch.Tensor
    code_predictor_loss: torch.Tensor
    talker_logits: torch.Tensor  # [B, L', V]; L' = L - 1 for the upstream recipe (sliced input)
    code_predictor_logits: torch.Tensor  # [F, G-1, V_cp]: head j of every frame in the batch
    talker_hidden: torch.Tensor  # [B, L', H] final-norm output
    recipe: Recipe


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """transformers' ForCausalLMLoss, op for op: fp32 logits; with ``shift`` the logit at q is
    scored against labels[q + 1] (labels right-padded with the ignore index); token mean."""
    logits = logits.float()
    if shift:
        labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].contiguous()
    return F.cross_entropy(
        logits.view(-1, logits.shape[-1]),
        labels.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="mean",
    )


def embed_inputs(model, batch: TrainingBatch, speaker_embedding: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The talker input [B, L, H]: text channel + codec channel (speaker vector at its slot) +
    the residual-group embeddings of every frame, added in upstream's order."""
    talker, cp = model.talker, model.code_predictor
    text_ids, codec_in = batch.input_ids[..., 0], batch.input_ids[..., 1]
    if recipe.text_projection:
        text = talker.embed_text(text_ids)
    else:
        if talker.cfg.text_hidden_size != talker.cfg.transformer.hidden_size:
            raise ValueError(
                f"recipe {recipe.name!r} adds raw text embeddings (width {talker.cfg.text_hidden_size}) to codec "
                f"embeddings (width {talker.cfg.transformer.hidden_size}); upstream's script fails the same way on "
                "this model. Use recipe='aligned'."
            )
        text = talker.text_embedding(text_ids)
    text = text * batch.text_embedding_mask
    codec = talker.codec_embedding(codec_in) * batch.codec_embedding_mask
    codec[:, SPEAKER_SLOT, :] = speaker_embedding
    x = text + codec
    frame = batch.codec_mask.unsqueeze(-1)
    for g in range(1, talker.cfg.num_code_groups):
        x = x + cp.embed(g, batch.codec_ids[:, :, g]) * frame
    return x


def code_predictor_hidden(hidden: torch.Tensor, codec_mask: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """[F, H]: the talker hidden the code predictor starts each frame from.

    ``hidden`` covers positions 0..L'-1 (L' = L - 1 when the talker input was sliced)."""
    if recipe.code_predictor_hidden == "leak":  # upstream 022e286: on the sliced run this is h[p_k]
        return hidden[codec_mask[:, : hidden.shape[1]]]
    if recipe.code_predictor_hidden == "previous":  # h[p_k - 1], as the decode loop feeds it
        return hidden[:, :-1][codec_mask[:, 1:]] if not recipe.sliced_talker else hidden[codec_mask[:, 1:]]
    raise ValueError(f"unknown code_predictor_hidden {recipe.code_predictor_hidden!r}")


def talker_labels(labels: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The labels handed to the causal-LM loss (which shifts them once more)."""
    return labels[:, 1:] if recipe.sliced_talker else labels


def training_forward(
    model,
    batch: TrainingBatch,
    speaker_embedding: torch.Tensor,
    recipe: str | Recipe = "aligned",
    gradient_checkpointing: bool = False,
) -> TrainingOutput:
    """Teacher-forced forward over ``batch``; call ``.loss.backward()`` on the result.

    ``speaker_embedding`` [B, H] is the x-vector of each item's reference audio (upstream
    detaches it: the speaker encoder is not trained). Runs under whatever grad and autocast mode
    the caller set; nothing here disables autograd.
    """
    recipe = get_recipe(recipe)
    talker, cp = model.talker, model.code_predictor
    if not isinstance(batch, TrainingBatch):
        raise TypeError(f"batch must be a TrainingBatch (from collate), got {type(batch).__name__}")
    hidden_size = talker.cfg.transformer.hidden_size
    if not isinstance(speaker_embedding, torch.Tensor) or not speaker_embedding.is_floating_point():
        raise TypeError(
            f"speaker_embedding must be a float tensor [batch, {hidden_size}], got {speaker_embedding!r:.60}"
        )
    if speaker_embedding.dim() != 2 or tuple(speaker_embedding.shape) != (batch.input_ids.shape[0], hidden_size):
        raise ValueError(
            f"speaker_embedding must be [batch, hidden] = [{batch.input_ids.shape[0]}, {hidden_size}], "
            f"got {tuple(speaker_embedding.shape)}"
        )
    x = embed_inputs(model, batch, speaker_embedding, recipe)
    mask, labels = batch.attention_mask, batch.codec_0_labels
    if recipe.sliced_talker:
        x, mask = x[:, :-1], mask[:, :-1]
    with _checkpointed(model, gradient_checkpointing):
        hidden, logits = talker(x, mask)
        talker_loss = causal_lm_loss(logits, talker_labels(labels, recipe), shift=True)

        frame_hidden = code_predictor_hidden(hidden, batch.codec_mask, recipe)
        codes = batch.codec_ids[batch.codec_mask]
        cp_logits = cp.teacher_forced_logits(frame_hidden, codes, talker.codec_embedding)
    cp_loss = causal_lm_loss(cp_logits, codes[:, 1:], shift=recipe.code_predictor_label_shift)
    loss = talker_loss + recipe.code_predictor_weight * cp_loss
    return TrainingOutput(loss, talker_loss, cp_loss, logits, cp_logits, hidden, recipe)


@contextlib.contextmanager
def _checkpointed(model, enabled: bool) -> Iterator[None]:
    """Recompute each decoder layer in the backward pass instead of storing its activations.

    Wraps the layers' ``forward`` for the duration of the call only (instance attributes, removed
    on exit); the recomputation in backward uses the original bound method, so it needs nothing
    left in place."""
    if not enabled:
        yield
        return
    layers = list(model.talker.decoder.layers) + list(model.code_predictor.decoder.layers)
    for layer in layers:
        original = layer.forward

        def wrapped(*args, _f=original):
            return checkpoint(_f, *args, use_reentrant=False)

        layer.forward = wrapped
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
