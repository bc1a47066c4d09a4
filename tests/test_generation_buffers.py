"""The decode loop's buffers start small and grow: results are bit-identical to a run whose
buffers never grow, and a huge max_new_tokens costs nothing up front."""

from __future__ import annotations

import pytest
import torch

import q3tts.standalone.generation as generation
from q3tts.standalone import Qwen3TTS


@pytest.fixture(scope="module")
def model(checkpoints):
    return Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1])


def _batch(model):
    tok = model.text_tokenizer
    ids = [
        torch.tensor([tok.encode(tok.assistant_text(t))])
        for t in ("Hello there.", "A much longer second sentence, padded.")
    ]
    return dict(input_ids=ids, languages=["english", "auto"], speakers=["alice", "bob"])


@pytest.mark.parametrize("initial", [1, 2, 3])
def test_growing_buffers_change_nothing(model, monkeypatch, initial):
    kwargs = dict(_batch(model), max_new_tokens=24, do_sample=True, subtalker_dosample=True, repetition_penalty=1.3)
    torch.manual_seed(0)
    ref_codes, ref_hidden = model.generate(**kwargs)
    monkeypatch.setattr(generation, "INITIAL_FRAMES", initial)  # the KV cache, history and mask all grow
    torch.manual_seed(0)
    codes, hidden = model.generate(**kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ref_codes, codes))
    assert all(torch.equal(a, b) for a, b in zip(ref_hidden, hidden))
    assert max(c.shape[0] for c in codes) > initial  # it did grow


def test_huge_max_new_tokens_runs_until_eos(model):
    greedy = dict(do_sample=False, subtalker_dosample=False)
    (codes,), _ = model.generate(
        **{
            **_batch(model),
            "input_ids": _batch(model)["input_ids"][:1],
            "languages": ["english"],
            "speakers": ["alice"],
        },
        max_new_tokens=12,
        **greedy,
    )
    stop = int(codes[5, 0])  # a group-0 id greedy decoding reaches: the loop stops there
    (long,), _ = model.generate(
        input_ids=_batch(model)["input_ids"][:1],
        languages=["english"],
        speakers=["alice"],
        max_new_tokens=10**12,
        eos_token_id=stop,
        **greedy,
    )
    assert 2 <= long.shape[0] <= 6 and torch.equal(long, codes[: long.shape[0]])
