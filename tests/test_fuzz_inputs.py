"""Hypothesis over the runtime's public arguments: every call returns a valid result (codes in
range, finite float32 audio of the expected length) or raises one of the documented errors
(ValueError / TypeError, with a one-line message). Bounded: at most ``max_examples`` per property
(the total per run is FUZZ_EXAMPLES_PER_RUN in tests/bad_inputs.py, which a test keeps equal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DOCUMENTED = (ValueError, TypeError)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def cv(load_standalone):
    return load_standalone("custom_voice")


@pytest.fixture(scope="module")
def base(load_standalone):
    return load_standalone("base")


MUTATIONS = ["none", "none", "none", "negative", "past", "float", "bool", "groups", "empty", "padding"]


def _codes(frames: int, groups: int, size: int, mutation: str, seed: int) -> torch.Tensor:
    """Valid codes [frames, groups] in 0..size-1, then one mutation (most examples stay valid, so
    the success side of each property is exercised as much as the error side)."""
    c = torch.randint(0, size, (frames, groups), generator=torch.Generator().manual_seed(seed))
    if mutation == "negative" and frames:
        c[frames // 2, seed % groups] = -1 - seed % 3
    elif mutation == "past" and frames:
        c[frames // 2, seed % groups] = size + seed
    elif mutation == "float":
        c = c.float() + 0.5
    elif mutation == "bool":
        c = c.bool()
    elif mutation == "groups":
        c = c[:, : max(1, groups - 1)] if seed % 2 else torch.cat([c, c[:, :1]], dim=1)
    elif mutation == "empty":
        c = c[:0]
    elif mutation == "padding":
        c = torch.cat([c, torch.full((1 + seed % 2, groups), -1)])
    return c


def _documented(e: Exception) -> None:
    assert isinstance(e, DOCUMENTED) and str(e) and "\n" not in str(e), repr(e)


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
        _documented(e)
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
        _documented(e)
        return
    _valid_codes(cv, codes)


@FUZZ
@given(
    frames=st.integers(0, 6),
    mutation=st.sampled_from(MUTATIONS),
    dtype=st.sampled_from([torch.long, torch.int32, torch.int16, torch.uint8]),
    batch=st.integers(1, 2),
    seed=st.integers(0, 50),
)
def test_decode_codes(base, frames, mutation, dtype, batch, seed):
    """Finite float32 audio of decode_upsample_rate samples per real frame, or a documented error."""
    groups, size = base.config.talker.num_code_groups, base.codec.cfg.codebook_size
    codes = _codes(frames, groups, size, mutation, seed)
    if not (codes.is_floating_point() or codes.dtype == torch.bool or mutation in ("negative", "padding", "past")):
        codes = codes.to(dtype)
    items = [codes, _codes(frames + 1, groups, size, "none", seed + 1)][:batch]
    try:
        wavs, sr = base.decode_codes(items if batch > 1 else codes)
    except DOCUMENTED as e:
        _documented(e)
        return
    assert sr == 24000 and len(wavs) == batch
    real = [frames if mutation != "empty" else 0, frames + 1]
    for wav, n in zip(wavs, real):
        assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()
        assert len(wav) == n * base.codec.cfg.decode_upsample_rate


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
        _documented(e)
        return
    assert torch.isfinite(items[0].ref_spk_embedding).all()


@FUZZ
@given(
    chunk_frames=st.one_of(st.integers(-1, 6), st.just(True), st.just(2.5), st.none()),
    first_chunk_frames=st.one_of(st.integers(-1, 6), st.just(False), st.none()),
    max_new_tokens=st.integers(-1, 12),
    batched=st.booleans(),
)
def test_streaming(cv, chunk_frames, first_chunk_frames, max_new_tokens, batched):
    """A stream's chunks are finite float32 and add up to the frames generate_custom_voice makes
    with the same (greedy) arguments."""
    args = dict(speaker="alice", max_new_tokens=max_new_tokens, do_sample=False, subtalker_dosample=False)
    text = ["Hello there.", "Hi."] if batched else "Hello there."
    try:
        chunks = list(
            cv.stream_custom_voice(text, chunk_frames=chunk_frames, first_chunk_frames=first_chunk_frames, **args)
        )
    except DOCUMENTED as e:
        _documented(e)
        return
    codes = cv.generate_custom_voice(text, return_codes=True, **args)
    rate = cv.codec.cfg.decode_upsample_rate
    for i, c in enumerate(codes):
        audio = [a for j, a in chunks if j == i] if batched else chunks
        assert all(a.dtype == np.float32 and a.ndim == 1 and np.isfinite(a).all() for a in audio)
        assert sum(len(a) for a in audio) == c.shape[0] * rate


@FUZZ
@given(
    n=st.sampled_from([0, 1, 7, 1919, 1920, 4000]),
    sr=st.one_of(st.sampled_from([24000, 16000, 44100, 0, -1, 24000.0, 24000.5, True]), st.none()),
    kind=st.sampled_from(["float", "int16", "nan", "inf", "stereo", "float64", "complex", "list", "torch"]),
    batch=st.integers(1, 2),
)
def test_encode_audio(base, n, sr, kind, batch):
    """Codes are int64 [frames, G] inside the codebook, one item per input, or a documented error."""
    wav = np.sin(np.arange(n) / 3.0).astype(np.float32) * 0.5
    if kind == "int16":
        wav = (wav * 32767).astype(np.int16)
    elif kind in ("nan", "inf") and n:
        wav[n // 2] = np.nan if kind == "nan" else np.inf
    elif kind == "stereo":
        wav = np.stack([wav, -wav], axis=1)
    elif kind in ("float64", "complex"):
        wav = wav.astype(np.float64 if kind == "float64" else np.complex64)
    item = wav.tolist() if kind == "list" else torch.from_numpy(wav) if kind == "torch" else wav
    try:
        codes = base.encode_audio([(item, sr)] * batch)
    except DOCUMENTED as e:
        _documented(e)
        return
    groups, size = base.config.talker.num_code_groups, base.codec.cfg.codebook_size
    assert len(codes) == batch
    for c in codes:
        assert c.dtype == torch.long and c.dim() == 2 and c.shape[1] == groups and c.shape[0] >= 1
        assert 0 <= int(c.min()) and int(c.max()) < size


@FUZZ
@given(
    frames=st.integers(0, 5),
    mutation=st.sampled_from(MUTATIONS),
    seed=st.integers(0, 50),
    ref_text=st.one_of(st.just("Reference words."), st.just(""), st.none(), st.just("a\ud800"), st.integers()),
    max_new_tokens=st.integers(1, 4),
)
def test_voice_clone_reference(base, frames, mutation, seed, ref_text, max_new_tokens):
    """ICL cloning with given reference codes: codes in range, or a documented error."""
    t = base.config.talker
    ref_code = _codes(frames, t.num_code_groups, t.code_predictor.vocab_size, mutation, seed)
    wav = np.sin(np.arange(24000) / 5.0).astype(np.float32) * 0.5
    try:
        codes = base.generate_voice_clone(
            "Clone me.",
            ref_audio=(wav, 24000),
            ref_text=ref_text,
            ref_code=ref_code,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            subtalker_dosample=False,
            return_codes=True,
        )
    except DOCUMENTED as e:
        _documented(e)
        return
    _valid_codes(base, codes)


@FUZZ
@given(
    frames=st.integers(0, 4),
    mutation=st.sampled_from(MUTATIONS),
    seed=st.integers(0, 50),
    text=st.one_of(st.just("Hello there."), st.text(max_size=8), st.integers()),
    recipe=st.sampled_from(["aligned", "aligned", "upstream", "x"]),
    spk_width=st.sampled_from([None, None, 3]),
)
def test_training_forward(base, frames, mutation, seed, text, recipe, spk_width):
    """collate + training_forward: a finite loss, or a documented error."""
    from q3tts.standalone.training import TrainingItem, collate, training_forward, training_text_ids

    t = base.config.talker
    codes = _codes(frames, t.num_code_groups, t.code_predictor.vocab_size, mutation, seed)
    hidden = base.config.talker.transformer.hidden_size
    try:
        item = TrainingItem(training_text_ids(base.text_tokenizer, text), codes)
        batch = collate([item], base.config)
        with torch.no_grad():
            out = training_forward(base, batch, torch.zeros(1, spk_width or hidden), recipe=recipe)
    except DOCUMENTED as e:
        _documented(e)
        return
    assert torch.isfinite(out.loss) and out.loss.dim() == 0
