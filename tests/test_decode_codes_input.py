"""decode_codes: every bad input is a clear error; upstream's -1 padding is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3tts.standalone import Qwen3TTS


@pytest.fixture(scope="module")
def model(checkpoints):
    return Qwen3TTS.from_pretrained(checkpoints["base"][1])


def _codes(model, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.codec.cfg.codebook_size, (frames, model.config.talker.num_code_groups), generator=g)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (
            lambda c: torch.full_like(c, 99999),
            ValueError,
            r"codes\[0\] has code 99999 at frame 0, group 0; codes must be in 0\.\.\d+",
        ),
        (lambda c: torch.full_like(c, -3), ValueError, r"codes\[0\] has code -3 at frame 0, group 0"),
        (
            lambda c: torch.cat([torch.full_like(c[:1], -1), c]),
            ValueError,
            r"has code -1 at frame 0",
        ),  # -1 before real frames
        (lambda c: c.float() + 0.5, TypeError, r"codes\[0\] must hold integer codes, got dtype torch.float32"),
        (lambda c: c.bool(), TypeError, r"got dtype torch.bool"),
        (lambda c: c[:, :-1], ValueError, r"codes\[0\] must be \[frames, \d+\], got shape \(5, \d+\)"),
        (lambda c: c[:, 0], ValueError, r"must be \[frames, G\], \[batch, frames, G\] or a list"),
        (lambda c: [], ValueError, r"codes is empty"),
    ],
    ids=["past-codebook", "negative", "padding-first", "float", "bool", "groups", "1-d", "no-items"],
)
def test_bad_codes_are_named(model, bad, error, message):
    with pytest.raises(error, match=message):
        model.decode_codes(bad(_codes(model)))


def test_trailing_padding_is_upstreams(model, load_models):
    """Padding frames are decoded (as zeros) and cut, as upstream does; the samples equal
    upstream's for the same padded input, and the length is that of the real frames."""
    wrapper, _ = load_models("base", torch.float32)
    c = _codes(model)
    padded = torch.cat([c, torch.full_like(c[:2], -1)])
    (ours,), _ = model.decode_codes(padded)
    (theirs,), _ = wrapper.model.speech_tokenizer.decode([{"audio_codes": padded}])
    assert len(ours) == 5 * model.codec.cfg.decode_upsample_rate
    assert np.array_equal(ours, theirs)


def test_empty_item_decodes_to_no_samples(model):
    empty = torch.zeros(0, model.config.talker.num_code_groups, dtype=torch.long)
    (w,), sr = model.decode_codes(empty)
    assert w.dtype == np.float32 and w.shape == (0,)
    w1, w2 = model.decode_codes([_codes(model), empty])[0]  # beside a real item, as upstream does in a batch
    assert len(w1) == 5 * model.codec.cfg.decode_upsample_rate and w2.shape == (0,)


def test_numpy_codes_are_accepted(model):
    c = _codes(model)
    (a,), _ = model.decode_codes(c)
    (b,), _ = model.decode_codes(c.numpy().astype(np.int32))
    assert np.array_equal(a, b)
