"""Training parity: the standalone training forward against upstream's fine-tuning step, and the
teacher-forcing consistency check of both recipes against the standalone's own decode loop.

1. Upstream-recipe parity (``run_upstream_recipe_parity``). ``upstream_reference_step`` is the
   step of QwenLM/Qwen3-TTS ``finetuning/sft_12hz.py`` at commit 022e286 (lines 73-113: the body
   of ``accelerator.accumulate``), written out on upstream's own model methods
   (``talker.model.text_embedding``, ``talker.model.codec_embedding``,
   ``code_predictor.get_input_embeddings()``, ``talker.forward`` with labels,
   ``talker.forward_sub_talker_finetune``). Two generalisations, both no-ops at 16 groups: the
   residual-group loop runs over the model's G (the script hard-codes ``range(1, 16)``), and the
   batch has G columns (dataset.py hard-codes 16). Upstream's batch is laid out by the verifier's
   own transcription of dataset.py (cases/training_batch.py), the standalone's by its ``collate``:
   a collate bug shows as a difference. Accelerate's parts (loss / accumulation steps, clipping,
   optimiser) act after the gradients and are not part of the comparison. Attention runs with
   SDPA on both sides (the script asks for flash-attention 2, which needs CUDA).
   Compared: total loss, talker loss, code-predictor loss, talker logits, code-predictor logits,
   and the gradient of every upstream parameter (standalone fused/stacked gradients are split
   with the converter's layout table), plus one case per parameter group.

2. Consistency (``run_consistency_check``): greedy generation with the standalone decode loop,
   recording the raw logits it samples every code from (talker ``codec_head`` output; the code
   predictor's head applied, as the loop applies it, to its decoder output); then one training
   forward over the generated codes laid out as a training batch. For every target the recipe
   trains (frame k's group 0, the EOS after the last frame, groups 1..G-1 of every frame) the
   logits it scores against that target must equal the logits generation sampled it from.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.layout import plan
from q3tts.standalone.mel import log_mel_spectrogram
from q3tts.standalone.training import (
    TrainingBatch,
    TrainingItem,
    collate,
    get_recipe,
    training_forward,
    training_text_ids,
)
from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.cases.training_batch import dataset_batch
from q3tts.verify.compare import DTYPE_NAMES, Comparison, Tolerance, compare

SFT_COMMIT = "022e286b98fbec7e1e916cb940cdf532cd9f488e"  # QwenLM/Qwen3-TTS, "fix finetuning bug"
CODE_PREDICTOR_LOSS_WEIGHT = 0.3  # sft_12hz.py at SFT_COMMIT: loss = talker + 0.3 * sub-talker

# Training parity tolerances. Measured on the tiny training fixture (tests/test_training.py):
# fp32: 0 for the losses, every logit and every gradient (same kernels, same call shapes and the
# same backward graph on both sides); the bound is the project's fp32 forward bound.
# bf16 (bf16 weights under bf16 autocast, as sft_12hz.py runs): also 0 on the fixture; the bound is
# the forward parity's bf16 bound (relative to the tensor's scale).
TRAINING_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(atol=1e-5, rtol=0.0, min_cosine=0.999999),
    torch.bfloat16: Tolerance(atol=0.0, rtol=3e-2, min_cosine=0.9999),
}

# Consistency: teacher-forced logits vs the decode loop's, fp32. Not bitwise: the loop attends
# with a KV cache one position at a time, the training pass in one causal call, and the loop sums
# the G code embeddings in another order. Measured on the tiny training fixtures (greedy, "hello
# there"): 4 groups, 5 frames: talker 5.2e-6, code predictor 3.9e-6 at logit scale 16.9;
# 16 groups, 7 frames: 3.8e-6 / 8.8e-6 at scale 17.9. Bound: 1e-5 absolute plus 1e-6 of the
# logit scale (2.7e-5 here, 3x the largest measurement). The upstream recipe misses by 23.
CONSISTENCY_ATOL = 1e-5
CONSISTENCY_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Fixture
def write_training_fixture(root: str | Path, seed: int = 20, num_code_groups: int = 4) -> tuple[Path, Path]:
    """A tiny Base checkpoint (upstream dir, converted standalone dir) whose text width equals the
    talker width, so upstream's recipe (no text projection) can run on it, as it runs on 1.7B."""
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures import writer as fx

    root = Path(root)
    up = root / f"upstream-train-g{num_code_groups}"
    config = fx.tiny_config("base", num_code_groups=num_code_groups)
    config["talker_config"]["text_hidden_size"] = config["talker_config"]["hidden_size"]
    fx.write_upstream_checkpoint(up, "base", seed=seed, config=config)
    st = root / f"standalone-train-g{num_code_groups}"
    convert_checkpoint(up, st)
    return up, st


TEXTS = ("hello there", "a quick brown fox", "one two")


def make_items(model: Qwen3TTS, seed: int = 0, texts=TEXTS, frames=(7, 4, 5)) -> list[TrainingItem]:
    """Training items: real tokenised texts, random codes (group 0 over the codebook size)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config.talker
    items = []
    for text, t in zip(texts, frames):
        codes = torch.randint(0, cfg.code_predictor.vocab_size, (t, cfg.num_code_groups), generator=g)
        items.append(TrainingItem(training_text_ids(model.text_tokenizer, text), codes))
    return items


# --------------------------------------------------------------------------------------------
# Upstream side
def upstream_reference_step(
    up, batch: TrainingBatch, speaker_embedding: torch.Tensor, text_projection: bool = False
) -> dict[str, torch.Tensor]:
    """sft_12hz.py (SFT_COMMIT) lines 73-113 on upstream's ``Qwen3TTSForConditionalGeneration``.

    ``text_projection``: the text embedding goes through ``talker.text_projection`` before the
    mask, as upstream PRs #188/#336 patch it; without it the step cannot run at 0.6B (text width
    2048, talker width 1024). Only the benchmark uses it."""
    talker = up.talker
    groups = talker.config.num_code_groups
    input_ids, codec_ids = batch.input_ids, batch.codec_ids
    text_ids, codec_in = input_ids[:, :, 0], input_ids[:, :, 1]
    text_emb = talker.model.text_embedding(text_ids)
    if text_projection:
        text_emb = talker.text_projection(text_emb)
    text_emb = text_emb * batch.text_embedding_mask
    codec_emb = talker.model.codec_embedding(codec_in) * batch.codec_embedding_mask
    codec_emb[:, 6, :] = speaker_embedding
    emb = text_emb + codec_emb
    for i in range(1, groups):
        e = talker.code_predictor.get_input_embeddings()[i - 1](codec_ids[:, :, i])
        emb = emb + e * batch.codec_mask.unsqueeze(-1)
    out = talker(
        inputs_embeds=emb[:, :-1, :],
        attention_mask=batch.attention_mask[:, :-1],
        labels=batch.codec_0_labels[:, 1:],
        output_hidden_states=True,
    )
    hidden = out.hidden_states[0][-1]
    sub_hidden = hidden[batch.codec_mask[:, :-1]]
    sub_codes = codec_ids[batch.codec_mask]
    sub_logits, sub_loss = talker.forward_sub_talker_finetune(sub_codes, sub_hidden)
    loss = out.loss + CODE_PREDICTOR_LOSS_WEIGHT * sub_loss
    return dict(
        loss=loss,
        talker_loss=out.loss,
        code_predictor_loss=sub_loss,
        talker_logits=out.logits,
        code_predictor_logits=sub_logits,
    )


def upstream_speaker_embedding(up, wav: np.ndarray, batch_size: int) -> torch.Tensor:
    """As the step computes it: dataset.py's mel of the reference, the speaker encoder, detached."""
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    mel = mel_spectrogram(
        torch.from_numpy(wav)[None],
        n_fft=1024,
        num_mels=128,
        sampling_rate=24000,
        hop_size=256,
        win_size=1024,
        fmin=0,
        fmax=12000,
    ).transpose(1, 2)
    mels = torch.cat([mel] * batch_size, dim=0)
    with torch.no_grad():
        return up.speaker_encoder(mels.to(up.dtype)).detach()


def standalone_speaker_embedding(model: Qwen3TTS, wav: np.ndarray, batch_size: int) -> torch.Tensor:
    mel = log_mel_spectrogram(torch.from_numpy(wav)[None]).transpose(1, 2)
    mels = torch.cat([mel] * batch_size, dim=0)
    with torch.no_grad():
        return model.speaker_encoder(mels.to(model.dtype)).detach()


@contextlib.contextmanager
def _autocast(dtype: torch.dtype) -> Iterator[None]:
    if dtype == torch.float32:
        yield
    else:
        with torch.autocast("cpu", dtype=dtype):
            yield


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in module.named_parameters()}


def _group_of(upstream_name: str) -> str:
    if ".code_predictor." in upstream_name:
        return "code_predictor.layers" if ".layers." in upstream_name else "code_predictor.embeddings_heads_norm"
    if upstream_name.startswith("talker.text_projection"):
        return "talker.text_projection"
    if upstream_name.startswith("talker.model.layers."):
        return "talker.layers"
    if upstream_name.startswith("speaker_encoder."):
        return "speaker_encoder"
    return "talker.embeddings_head_norm"


@dataclass
class TrainingParityResult:
    dtype: str
    recipe: str
    sft_commit: str
    comparisons: list[Comparison]
    missing_gradients: list[str] = field(default_factory=list)  # one side has a gradient, the other none
    error: str | None = None  # the standalone's step raised: a failed parity, named, not a crashed run

    @property
    def passed(self) -> bool:
        return self.error is None and not self.missing_gradients and all(c.passed for c in self.comparisons)

    def failing(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    def as_dict(self) -> dict:
        return {
            "dtype": self.dtype,
            "recipe": self.recipe,
            "sft_commit": self.sft_commit,
            "passed": self.passed,
            "missing_gradients": self.missing_gradients,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "error": self.error,
        }


def run_upstream_recipe_parity(
    up, model: Qwen3TTS, items: list[TrainingItem], wav: np.ndarray, dtype: torch.dtype, recipe: str = "upstream"
) -> TrainingParityResult:
    """One step on each side from the same batch and reference audio; compare everything."""
    tol = TRAINING_TOLERANCES[dtype]
    ref_batch = dataset_batch(items, up.config)  # upstream's layout, transcribed on this side
    up.train()
    try:
        up.zero_grad(set_to_none=True)
        ref_spk = upstream_speaker_embedding(up, wav, len(items))
        with _autocast(dtype):
            ref = upstream_reference_step(up, ref_batch, ref_spk)
        ref["loss"].backward()
        ref_grads = _grads(up)
    finally:
        up.eval()
        up.zero_grad(set_to_none=True)
    try:
        got, got_grads = _standalone_step(model, items, wav, dtype, recipe)
    except Exception as e:  # a bug in the model under test: this parity fails, naming it
        error = f"raised in the standalone: {type(e).__name__}: {e}"
        return TrainingParityResult(DTYPE_NAMES[dtype], get_recipe(recipe).name, SFT_COMMIT, [], error=error)

    out: list[Comparison] = []
    for name in ("loss", "talker_loss", "code_predictor_loss", "code_predictor_logits"):
        out.append(compare(f"train.{name}", ref[name].detach(), getattr(got, name).detach(), dtype, tol))
    # Talker logits on the real positions only: a right-padded query row attends to the real keys
    # upstream, to the real keys and itself here (standalone/layers.py padding_mask). Those rows are
    # never scored and their keys are hidden from every real row, so loss and gradients do not see them.
    real = ref_batch.attention_mask[:, : ref["talker_logits"].shape[1]].bool()
    if got.talker_logits.shape != ref["talker_logits"].shape:
        out.append(
            compare("train.talker_logits", ref["talker_logits"].detach(), got.talker_logits.detach(), dtype, tol)
        )
    else:
        out.append(
            compare(
                "train.talker_logits", ref["talker_logits"].detach()[real], got.talker_logits.detach()[real], dtype, tol
            )
        )

    missing: list[str] = []
    per_group: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for entry in plan(model.config):
        g = got_grads.get(entry.target)
        parts = entry.to_upstream(g) if g is not None else [None] * len(entry.sources)
        for src, got_part in zip(entry.sources, parts):
            ref_part = ref_grads.get(src)
            if (ref_part is None) != (got_part is None):
                missing.append(
                    f"{src}: upstream {'none' if ref_part is None else 'has one'}, "
                    f"standalone {'none' if got_part is None else 'has one'}"
                )
                continue
            if ref_part is None:
                continue
            out.append(compare(f"grad.{src}", ref_part, got_part, dtype, tol))
            r, s = per_group.setdefault(_group_of(src), ([], []))
            r.append(ref_part.flatten())
            s.append(got_part.flatten())
    for group, (r, s) in sorted(per_group.items()):
        out.append(compare(f"grad_group.{group}", torch.cat(r), torch.cat(s), dtype, tol))
    return TrainingParityResult(DTYPE_NAMES[dtype], get_recipe(recipe).name, SFT_COMMIT, out, missing)


def _standalone_step(model: Qwen3TTS, items, wav: np.ndarray, dtype: torch.dtype, recipe: str):
    """The standalone's side of one step: its collate (under test), forward and backward."""
    batch = collate(items, model.config)
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        got_spk = standalone_speaker_embedding(model, wav, len(items))
        with _autocast(dtype):
            got = training_forward(model, batch, got_spk, recipe=recipe)
        got.loss.backward()
        return got, _grads(model)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------
# Consistency with generation
@dataclass
class ConsistencyResult:
    recipe: str
    frames: int
    groups: int
    talker_max_abs: float  # over frames 0..T-1 and the EOS target
    talker_first_bad: int | None  # first frame index (T = the EOS target) beyond the bound
    code_predictor_max_abs: dict[int, float]  # per group 1..G-1 (inf: the recipe trains no logit on it)
    code_predictor_first_bad: tuple[int, int] | None  # (frame, group)
    logit_scale: float
    bound: float
    untrained_groups: list[int]
    codes: list[list[int]]
    # |training loss - the same cross-entropy over the decode loop's logits and the generated codes|
    loss_diffs: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the standalone's training forward raised: inconsistent, and named

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.talker_first_bad is None
            and self.code_predictor_first_bad is None
            and all(d <= self.bound for d in self.loss_diffs.values())
        )

    def summary(self) -> str:
        if self.passed:
            return (
                f"{self.recipe}: consistent with generation over {self.frames} frames x {self.groups} groups "
                f"(talker max |diff| {self.talker_max_abs:.2e}, code predictor max |diff| "
                f"{max(self.code_predictor_max_abs.values()):.2e}, bound {self.bound:.2e})"
            )
        parts = [f"{self.recipe}: NOT consistent with generation"]
        if self.error:
            return f"{parts[0]}: {self.error}"
        if self.talker_first_bad is not None:
            parts.append(
                f"group 0 first differs at frame {self.talker_first_bad} (max |diff| {self.talker_max_abs:.3g}"
                f" at logit scale {self.logit_scale:.3g})"
            )
        if self.untrained_groups:
            parts.append(f"groups {self.untrained_groups} are never trained")
        if self.code_predictor_first_bad is not None:
            f, g = self.code_predictor_first_bad
            finite = [v for v in self.code_predictor_max_abs.values() if v != float("inf")]
            parts.append(
                f"code predictor first differs at frame {f} group {g} (max |diff| "
                f"{max(finite) if finite else float('inf'):.3g})"
            )
        bad_losses = {k: v for k, v in self.loss_diffs.items() if v > self.bound}
        if bad_losses:
            parts.append(
                "losses differ from generation's: " + ", ".join(f"{k} by {v:.3g}" for k, v in bad_losses.items())
            )
        return "; ".join(parts)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["code_predictor_max_abs"] = {str(k): v for k, v in self.code_predictor_max_abs.items()}
        return d


@dataclass
class DecodeRecord:
    codes: torch.Tensor  # [T, G]
    talker_logits: list[torch.Tensor]  # [V] per sampled group-0 id: T frames + the final id
    code_predictor_logits: list[list[torch.Tensor]]  # [frame][group-1] -> [V_cp]


def greedy_generate_recorded(
    model: Qwen3TTS, input_ids: torch.Tensor, speaker_embedding: torch.Tensor, max_new_tokens: int = 12
) -> DecodeRecord:
    """Greedy non-streaming generation (language auto, x-vector speaker: the training layout's
    prompt) with the raw logits of every sampled code recorded by forward hooks."""
    talker_out: list[torch.Tensor] = []
    cp_hidden: list[torch.Tensor] = []
    h1 = model.talker.codec_head.register_forward_hook(lambda m, i, o: talker_out.append(o[0, -1].detach().clone()))
    h2 = model.code_predictor.decoder.register_forward_hook(lambda m, i, o: cp_hidden.append(o.detach().clone()))
    try:
        vcp = {
            "ref_spk_embedding": [speaker_embedding],
            "x_vector_only_mode": [True],
            "icl_mode": [False],
            "ref_code": None,
        }
        codes, _ = model.generate(
            input_ids=[input_ids],
            voice_clone_prompt=vcp,
            languages=["auto"],
            non_streaming_mode=True,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            subtalker_dosample=False,
        )
    finally:
        h1.remove()
        h2.remove()
    codes = codes[0]
    groups = model.config.talker.num_code_groups
    cp = model.code_predictor
    per_frame = []
    with torch.inference_mode():
        for k in range(codes.shape[0]):
            hs = cp_hidden[k * (groups - 1) : (k + 1) * (groups - 1)]
            # The same call the decode loop makes on the same decoder output: logits(h, g)[:, -1].
            per_frame.append([cp.logits(h, g)[0, -1] for g, h in zip(range(1, groups), hs)])
    return DecodeRecord(codes, talker_out[: codes.shape[0] + 1], per_frame)


def run_consistency_check(
    model: Qwen3TTS,
    recipe: str,
    text: str = "hello there",
    seed: int = 0,
    max_new_tokens: int = 12,
    record: DecodeRecord | None = None,
    speaker_embedding: torch.Tensor | None = None,
) -> ConsistencyResult:
    """Teacher-forced logits of ``recipe`` vs the logits the decode loop sampled the same codes from
    (fp32)."""
    rec = get_recipe(recipe)
    tok = model.text_tokenizer
    input_ids = torch.tensor([tok.encode(tok.assistant_text(text))], dtype=torch.long)
    if speaker_embedding is None:
        speaker_embedding = standalone_speaker_embedding(model, speech_like_waveform(seed), 1)[0]
    if record is None:
        record = greedy_generate_recorded(model, input_ids, speaker_embedding, max_new_tokens)
    codes = record.codes
    t, groups = codes.shape
    if t == 0:
        raise ValueError("generation produced no frame; nothing to check")
    try:
        batch = collate([TrainingItem(input_ids[0, :-5], codes)], model.config)
        with torch.no_grad():
            out = training_forward(model, batch, speaker_embedding[None], recipe=rec)
    except Exception as e:  # a bug in the model under test: the check fails, naming it
        error = f"raised in the standalone: {type(e).__name__}: {e}"
        return ConsistencyResult(rec.name, t, groups, math.inf, 0, {}, None, math.nan, math.nan, [], [], {}, error)
    first = int(batch.frame_positions[0][0])
    logits = out.talker_logits[0]
    scale = max(float(x.abs().max()) for x in record.talker_logits)
    scale = max([scale] + [float(x.abs().max()) for fr in record.code_predictor_logits for x in fr])
    bound = CONSISTENCY_ATOL + CONSISTENCY_RTOL * scale

    t_max, t_bad = 0.0, None
    for k in range(min(t + 1, len(record.talker_logits))):  # k == t: the target after the last frame
        q = first + k - rec.talker_label_offset
        d = float((logits[q] - record.talker_logits[k]).abs().max()) if 0 <= q < logits.shape[0] else float("inf")
        t_max = max(t_max, d)
        if d > bound and t_bad is None:
            t_bad = k

    cp_max = {g: 0.0 for g in range(1, groups)}
    cp_bad = None
    untrained = [g for g in range(1, groups) if not 0 <= g - rec.code_predictor_group_offset < groups - 1]
    for k in range(t):
        for g in range(1, groups):
            j = g - rec.code_predictor_group_offset
            if j < 0 or j >= groups - 1:
                d = float("inf")
            else:
                d = float((out.code_predictor_logits[k, j] - record.code_predictor_logits[k][g - 1]).abs().max())
            cp_max[g] = max(cp_max[g], d)
            if d > bound and cp_bad is None:
                cp_bad = (k, g)
    # The losses, recomputed from the decode loop's logits and the generated codes (targets: frame
    # k's group 0, then the codec EOS; every residual group of every frame), with upstream's 0.3.
    # This checks the pairing the forward actually uses, not the one its recipe declares.
    eos = model.config.talker.codec_eos_token_id
    t_targets = torch.cat([codes[:, 0], torch.tensor([eos])])
    n0 = min(t + 1, len(record.talker_logits))
    ref_talker = torch.nn.functional.cross_entropy(torch.stack(record.talker_logits[:n0]).float(), t_targets[:n0])
    ref_cp = torch.nn.functional.cross_entropy(
        torch.stack([torch.stack(fr) for fr in record.code_predictor_logits])
        .float()
        .reshape(-1, record.code_predictor_logits[0][0].shape[-1]),
        codes[:, 1:].reshape(-1),
    )
    ref_total = ref_talker + CODE_PREDICTOR_LOSS_WEIGHT * ref_cp
    loss_diffs = {
        "talker_loss": abs(float(out.talker_loss) - float(ref_talker)),
        "code_predictor_loss": abs(float(out.code_predictor_loss) - float(ref_cp)),
        "loss": abs(float(out.loss) - float(ref_total)),
    }
    return ConsistencyResult(
        rec.name, t, groups, t_max, t_bad, cp_max, cp_bad, scale, bound, untrained, codes.tolist(), loss_diffs
    )


def run_training_parity(
    upstream_dir: str | Path, standalone_dir: str | Path, dtypes=(torch.float32, torch.bfloat16), seed: int = 0
) -> dict:
    """Everything ``verify-parity --training`` reports, as one JSON-able dict."""
    from q3tts.verify.cases.forward import load_upstream

    report: dict = {"sft_commit": SFT_COMMIT, "parity": [], "consistency": []}
    wav = speech_like_waveform(seed)
    for dtype in dtypes:
        up = load_upstream(upstream_dir, dtype)
        st = Qwen3TTS.from_pretrained(standalone_dir, dtype=dtype)
        items = make_items(st, seed)
        report["parity"].append(run_upstream_recipe_parity(up, st, items, wav, dtype).as_dict())
    st = Qwen3TTS.from_pretrained(standalone_dir, dtype=torch.float32)
    spk = standalone_speaker_embedding(st, wav, 1)[0]
    record = greedy_generate_recorded(
        st, torch.tensor([st.text_tokenizer.encode(st.text_tokenizer.assistant_text("hello there"))]), spk
    )
    for name in ("aligned", "upstream"):
        report["consistency"].append(run_consistency_check(st, name, record=record, speaker_embedding=spk).as_dict())
    return report
