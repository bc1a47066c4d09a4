"""The one sampling function of the decode loop.

It reproduces transformers' `_sample` step as upstream configures it, in the same order and with
the same RNG consumption, so a seeded run draws the same codes:

1. logits cast to fp32
2. repetition penalty over the ids generated so far (s < 0 ? s * p : s / p, once per id)
3. min_new_tokens: EOS set to -inf while fewer than ``min_new_tokens`` ids were generated
4. suppressed ids set to -inf
5. when sampling: temperature (skipped at 1.0), top-k (skipped at 0/None; ties with the k-th
   value kept), top-p (skipped at >= 1.0; lowest-probability tokens removed while their cumulative
   mass is <= 1 - p, at least one kept)
6. softmax + one ``torch.multinomial`` draw of shape [B, V]; greedy: argmax
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """One stream's sampling knobs. No defaults here: they live in generation.GenerateOptions."""

    do_sample: bool
    top_k: int | None
    top_p: float | None
    temperature: float | None
    repetition_penalty: float = 1.0  # 1.0 = off; upstream applies it to the talker only
    min_new_tokens: int = 0
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.do_sample:
            if self.temperature is not None and self.temperature <= 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
            if self.top_p is not None and not 0.0 <= self.top_p <= 1.0:
                raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
            if self.top_k is not None and self.top_k < 0:
                raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def sample_next_token(
    logits: torch.Tensor,
    generated: torch.Tensor | None,
    params: SamplingParams,
    suppress_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits [B, V] (any dtype); generated [B, T] ids so far (T may be 0); suppress_mask [V] bool.
    Returns the next ids [B]."""
    scores = constrain_logits(logits, generated, params, suppress_mask)
    if not params.do_sample:
        return torch.argmax(scores, dim=-1)
    probs = torch.softmax(warp_logits(scores, params), dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def constrain_logits(logits, generated, params: SamplingParams, suppress_mask=None) -> torch.Tensor:
    """Steps 1-4: fp32, repetition penalty, min_new_tokens, suppression."""
    scores = logits.float()
    if params.repetition_penalty != 1.0 and generated is not None and generated.shape[1] > 0:
        picked = torch.gather(scores, 1, generated)
        picked = torch.where(picked < 0, picked * params.repetition_penalty, picked / params.repetition_penalty)
        scores = scores.scatter(1, generated, picked)
    if params.eos_token_id is not None and params.min_new_tokens > 0:
        n_generated = 0 if generated is None else generated.shape[1]
        if n_generated < params.min_new_tokens:
            scores = scores.clone()
            scores[:, params.eos_token_id] = -float("inf")
    if suppress_mask is not None:
        scores = scores.masked_fill(suppress_mask, -float("inf"))
    return scores


def warp_logits(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Step 5, in HF's order: temperature, top-k, top-p."""
    if params.temperature is not None and params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_k is not None and params.top_k != 0:
        k = min(max(params.top_k, 1), scores.shape[-1])
        threshold = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < threshold, -float("inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_scores, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - params.top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores
