"""Hypothesis over the runtime's public arguments: every call returns a valid result (codes in
range, finite float32 audio of the expected length) or raises one of the documented errors
(ValueError / TypeError, with a message). Bounded: 60 examples per property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from q3tts.standalone import Qwen3TTS

DOCUMENTED = (ValueError, TypeError)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
_models: dict = {}


@pytest.fixture(scope="module")
def cv(checkpoints):
    return _models.setdefault("cv", Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1]))


@pytest.fixture(scope="module")
def base(checkpoints):
    return _models.setdefault("base", Qwen3TTS.from_pretrained(checkpoints["base"][1]))


def _valid_codes(m, codes):
    t = m.config.talker
    for c in codes:
        assert c.dtype == torch.long and c.dim() == 2 and c.shape[1] == t.num_code_groups
        if c.numel():
            assert 0 <= int(c[:, 0].min()) and int(c[:, 0].max()) < t.vocab_size
            assert 0 <= int(c[:, 1:].min()) and int(c[:, 1:].max()) < t.code_predictor.vocab_size


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.none(), st.just("x"), st.booleans()
)


@FUZZ
@given(
    temperature=numbers,
    top_k=st.one_of(st.integers(-3, 2000), st.floats(-1, 5), st.none()),
    top_p=numbers,
    repetition_penalty=numbers,
    subtalker_temperature=numbers,
    do_sample=st.one_of(st.booleans(), st.just(1)),
    max_new_tokens=st.one_of(st.integers(-2, 4), st.just(2.0)),
    seed=st.integers(0, 3),
)
def test_sampling_arguments(
    cv, temperature, top_k, top_p, repetition_penalty, subtalker_temperature, do_sample, max_new_tokens, seed
):
    torch.manual_seed(seed)
    try:
        codes = cv.generate_custom_voice(
            "Hello there.",
            speaker="alice",
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            subtalker_temperature=subtalker_temperature,
            do_sample=do_sample,
            max_new_tokens=max_new_tokens,
            return_codes=True,
        )
    except DOCUMENTED as e:
        assert str(e)
        return
    _valid_codes(cv, codes)


@FUZZ
@given(
    text=st.one_of(
        st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
        st.integers(),
        st.lists(st.text(max_size=5), max_size=3),
    ),
    language=st.sampled_from(["auto", "english", "chinese", "German", "xx", None]),
    speaker=st.one_of(
        st.sampled_from(["alice", "BOB", "carol", "zed", ""]), st.lists(st.sampled_from(["alice", "bob"]), max_size=3)
    ),
)
def test_texts_languages_speakers(cv, text, language, speaker):
    try:
        codes = cv.generate_custom_voice(
            text,
            speaker=speaker,
            language=language,
            max_new_tokens=2,
            do_sample=False,
            subtalker_dosample=False,
            return_codes=True,
        )
    except DOCUMENTED as e:
        assert str(e)
        return
    _valid_codes(cv, codes)


@FUZZ
@given(
    frames=st.integers(0, 6),
    groups=st.integers(1, 6),
    low=st.integers(-5, 3000),
    span=st.integers(0, 3000),
    dtype=st.sampled_from([torch.long, torch.int32, torch.int16, torch.float32, torch.bool]),
    pad=st.integers(0, 2),
)
def test_decode_codes(base, frames, groups, low, span, dtype, pad):
    g = torch.Generator().manual_seed(frames * 7 + groups)
    codes = torch.randint(low, low + span + 1, (frames, groups), generator=g)
    codes = torch.cat([codes, torch.full((pad, groups), -1)]).to(dtype)
    try:
        (wav,), sr = base.decode_codes(codes)
    except DOCUMENTED as e:
        assert str(e)
        return
    assert wav.dtype == np.float32 and np.isfinite(wav).all() and sr == 24000
    assert len(wav) == frames * base.codec.cfg.decode_upsample_rate


@FUZZ
@given(
    n=st.sampled_from([0, 1, 100, 1279, 1280, 5000]),
    sr=st.one_of(st.sampled_from([24000, 16000, 0, -1, 24000.5]), st.none()),
    kind=st.sampled_from(["float", "int16", "nan", "stereo", "float64"]),
)
def test_reference_audio(base, n, sr, kind):
    wav = np.sin(np.arange(n) / 5.0).astype(np.float32) * 0.5
    if kind == "int16":
        wav = (wav * 32767).astype(np.int16)
    elif kind == "nan" and n:
        wav[n // 2] = np.nan
    elif kind == "stereo":
        wav = np.stack([wav, wav], axis=1)
    elif kind == "float64":
        wav = wav.astype(np.float64)
    try:
        items = base.create_voice_clone_prompt((wav, sr), x_vector_only_mode=True)
    except DOCUMENTED as e:
        assert str(e)
        return
    assert torch.isfinite(items[0].ref_spk_embedding).all()
