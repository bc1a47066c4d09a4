"""How the fast path's code-predictor frame graph picks each group's code: ``pick_code``, an opaque
call inside the compiled graph that runs the decode loop's one sampling function eagerly.

Sampling stays the exact function (sampling.sample_next_token), not a compiled copy of it: inductor
would fuse the softmax and top-k differently (other last bits in the probabilities) and draw the
random numbers through its own generator, so a seeded run would no longer draw upstream's codes
from the same logits. As an opaque op it keeps the RNG order too: each step's input is the code the
step before picked, so the calls run in group order, one ``torch.multinomial`` draw each, as in the
exact path's CodePredictor.generate_frame.

The sampling knobs reach the graph as data (``pick_knobs``: one float64 tensor), not as Python
values dynamo would specialise on: one graph serves every request's knobs. The same graph also
runs teacher-forced (``FORCED``): the pick returns the given code and draws nothing.
"""

from __future__ import annotations

import functools
import math

import torch

from .sampling import SamplingParams, sample_next_token

GREEDY, SAMPLE, FORCED = 0.0, 1.0, 2.0

# top_k beyond any vocabulary means "keep all" exactly as the vocabulary's size does
# (sampling.warp_logits clamps k to V); clamped so every knob is exact in float64.
_TOP_K_CAP = 2**31


def _knob(value) -> float:
    return math.nan if value is None else float(value)


@functools.lru_cache(maxsize=256)
@torch.inference_mode()
def pick_knobs(params: SamplingParams | None) -> torch.Tensor:
    """The knobs of ``params`` (None: teacher-forced) as a float64 tensor [7]: mode, top_k,
    top_p, temperature, repetition_penalty, min_new_tokens, eos_token_id (NaN for None). Always an inference
    tensor, wherever it is first made: the cached tensor is a compiled graph's input, and a saved graph
    (precompiled.py) tells inference tensors from others."""
    if params is None:
        return torch.tensor([FORCED] + [math.nan] * 6, dtype=torch.float64)
    top_k = None if params.top_k is None else min(params.top_k, _TOP_K_CAP)
    values = (
        SAMPLE if params.do_sample else GREEDY,
        top_k,
        params.top_p,
        params.temperature,
        params.repetition_penalty,
        params.min_new_tokens,
        params.eos_token_id,
    )
    return torch.tensor([_knob(v) for v in values], dtype=torch.float64)


def _maybe_int(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


def _maybe_float(value: float) -> float | None:
    return None if math.isnan(value) else value


@functools.lru_cache(maxsize=256)
def _params_of(knobs: tuple) -> SamplingParams:
    mode, top_k, top_p, temperature, penalty, min_new, eos = knobs
    return SamplingParams(
        do_sample=mode == SAMPLE,
        top_k=_maybe_int(top_k),
        top_p=_maybe_float(top_p),
        temperature=_maybe_float(temperature),
        repetition_penalty=penalty,
        min_new_tokens=int(min_new),
        eos_token_id=_maybe_int(eos),
    )


@torch.library.custom_op("q3tts::pick_code", mutates_args=())
def pick_code(logits: torch.Tensor, knobs: torch.Tensor, forced: torch.Tensor, group: int) -> torch.Tensor:
    """The code of residual group ``group`` (1-based) for logits [B, V]: sampled (or argmax) with
    the knobs' parameters, or, teacher-forced, column group - 1 of ``forced`` [B, G-1]. [B] int64."""
    values = tuple(knobs.tolist())
    if values[0] == FORCED:
        return forced[:, group - 1].clone()
    # Looked up at call time, so a fault planted on the sampler's seam reaches the compiled frame.
    return sample_next_token(logits, None, _params_of(values))


@pick_code.register_fake
def _pick_code_shape(logits: torch.Tensor, knobs: torch.Tensor, forced: torch.Tensor, group: int) -> torch.Tensor:
    return logits.new_empty(logits.shape[0], dtype=torch.long)
