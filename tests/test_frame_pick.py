"""The fast frame graph's code pick (standalone/frame_pick.py): the sampling knobs survive the trip
through a tensor, the pick draws exactly what the decode loop's sampling function draws, and a
teacher-forced pick draws nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from q3tts.standalone import frame_pick
from q3tts.standalone.frame_pick import FORCED, _params_of, pick_code, pick_knobs
from q3tts.standalone.sampling import SamplingParams, sample_next_token

PARAMS = [
    SamplingParams(do_sample=True, top_k=50, top_p=1.0, temperature=0.9),
    SamplingParams(do_sample=True, top_k=None, top_p=0.8, temperature=None),
    SamplingParams(do_sample=True, top_k=0, top_p=None, temperature=1.7),
    SamplingParams(do_sample=False, top_k=3, top_p=0.5, temperature=0.3),
    SamplingParams(
        do_sample=True, top_k=7, top_p=0.25, temperature=0.6, repetition_penalty=1.3, min_new_tokens=2, eos_token_id=5
    ),
]


@pytest.mark.parametrize("params", PARAMS, ids=range(len(PARAMS)))
def test_every_knob_survives_the_tensor(params):
    assert _params_of(tuple(pick_knobs(params).tolist())) == params


def test_every_field_is_a_knob():
    """A SamplingParams field the knobs left out would silently take its default inside the graph."""
    base = PARAMS[-1]
    changed = dict(
        do_sample=False, top_k=9, top_p=0.5, temperature=0.7, repetition_penalty=1.1, min_new_tokens=3, eos_token_id=6
    )
    assert set(changed) == {f.name for f in dataclasses.fields(SamplingParams)}
    for name, value in changed.items():
        other = dataclasses.replace(base, **{name: value})
        assert not torch.equal(pick_knobs(other), pick_knobs(base)), name
        assert _params_of(tuple(pick_knobs(other).tolist())) == other


def test_top_k_beyond_any_vocabulary_keeps_its_meaning():
    huge = SamplingParams(do_sample=True, top_k=10**30, top_p=None, temperature=None)
    logits = torch.randn(2, 64)
    torch.manual_seed(3)
    want = sample_next_token(logits, None, huge)
    torch.manual_seed(3)
    got = pick_code(logits, pick_knobs(huge), torch.zeros(2, 4, dtype=torch.long), 1)
    assert torch.equal(got, want)


@pytest.mark.parametrize("params", PARAMS, ids=range(len(PARAMS)))
def test_pick_draws_what_the_sampler_draws(params):
    logits = torch.randn(3, 257, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    forced = torch.zeros(3, 4, dtype=torch.long)
    torch.manual_seed(11)
    want = [sample_next_token(logits, None, params) for _ in range(4)]
    after_want = torch.rand(1)
    torch.manual_seed(11)
    got = [pick_code(logits, pick_knobs(params), forced, 2) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(torch.rand(1), after_want)  # the same number of draws


def test_forced_pick_returns_the_column_and_draws_nothing():
    forced, logits = torch.arange(12).view(3, 4), torch.randn(3, 10)
    assert pick_knobs(None)[0] == FORCED
    torch.manual_seed(5)
    got = pick_code(logits, pick_knobs(None), forced, 3)
    after = torch.rand(4)
    assert torch.equal(got, forced[:, 2]) and got.data_ptr() != forced[:, 2].data_ptr()
    torch.manual_seed(5)
    assert torch.equal(torch.rand(4), after)


def test_pick_looks_its_sampler_up_at_call_time(monkeypatch):
    """A fault planted on the sampler's seam (verify/faults) must reach the compiled frame graph."""
    monkeypatch.setattr(frame_pick, "sample_next_token", lambda logits, *_: torch.full((logits.shape[0],), 7))
    got = pick_code(torch.randn(2, 10), pick_knobs(PARAMS[0]), torch.zeros(2, 4, dtype=torch.long), 1)
    assert got.tolist() == [7, 7]
