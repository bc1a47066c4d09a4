"""Streaming synthesis: streamed chunks concatenate to the offline audio (upstream's 300-frame
chunked decode included), the decode loop's per-frame form keeps the codes, and closing a stream
stops generation and frees its caches."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from q3tts.standalone.codec import CodecConfig, CodecDecoder, load_codec
from q3tts.standalone.streaming import (
    UPSTREAM_CHUNK_CONTEXT,
    UPSTREAM_CHUNK_FRAMES,
    CodecStream,
    codec_latent,
    codec_waveform,
    latent_context_frames,
    stream_decode,
    tail_context_frames,
)
from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.cases.streaming import equal_up_to_float32_cast
from q3tts.verify.compare import STREAMING_TOLERANCES, snr_db
from q3tts.verify.fixtures.released import released_speech_tokenizer_config


def random_codes(frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 16, (frames, 4), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def codec64(checkpoints):
    """The fixture codec in float64: rounding noise vanishes, so any difference left between
    streamed and offline audio is a difference of context (the proof that the context suffices)."""
    return load_codec(checkpoints["base"][1], torch.float64, "cpu")


def offline(codec: CodecDecoder, codes: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        # float32 like every decode output (decode_codes, the stream), float64 for the arithmetic
        return codec.chunked(codes.T[None])[0, 0].to(torch.float32).numpy().astype(np.float64)


def assert_equal_up_to_the_float32_cast(got: np.ndarray, ref: np.ndarray) -> None:
    """Both decodes compute in float64 and return float32, as every decode does (the verifier's
    judgement, verify/cases/streaming.py equal_up_to_float32_cast)."""
    equal, what = equal_up_to_float32_cast(got, ref)
    assert equal, what


def streamed(codec, codes, chunk, first, **kw) -> tuple[np.ndarray, list[int]]:
    chunks = list(stream_decode(codec, codes, chunk, first, **kw))
    return np.concatenate(chunks).astype(np.float64), [len(c) for c in chunks]


# --------------------------------------------------------------------------------------------
def test_context_is_derived_from_the_config():
    with torch.device("meta"):
        released = CodecDecoder(CodecConfig.from_upstream(released_speech_tokenizer_config()))
    # 1920 samples per frame through k7 convs with dilations 1/3/9, transposed convs (2r, r) and
    # two ConvNeXt k7 stages: 10 latent frames. The transformer (2 + 8 x 71) outreaches an
    # upstream chunk (25 + 300), so the chunk start bounds it.
    assert tail_context_frames(released) == 10
    assert latent_context_frames(released) == 570 > UPSTREAM_CHUNK_FRAMES + UPSTREAM_CHUNK_CONTEXT
    assert CodecDecoder.chunked.__defaults__[:2] == (UPSTREAM_CHUNK_FRAMES, UPSTREAM_CHUNK_CONTEXT)


def test_halves_compose_to_forward(load_pair):
    _, model = load_pair("base", torch.float32)
    codes = random_codes(9, 0).T[None]
    with torch.inference_mode():
        assert torch.equal(codec_waveform(model.codec, codec_latent(model.codec, codes)), model.codec(codes))


# (frames, chunk, first chunk): shorter than the first chunk, shorter than one chunk, one frame at
# a time, a chunk larger than the clip, and odd sizes that leave a partial last chunk.
EXACT_CASES = [(3, 8, 4), (7, 8, 4), (13, 1, 1), (13, 5, 2), (13, 300, 300), (21, 8, 4)]


@pytest.mark.parametrize("frames,chunk,first", EXACT_CASES)
def test_stream_is_exact_in_float64(codec64, frames, chunk, first):
    codes = random_codes(frames, frames)
    ref = offline(codec64, codes)
    got, sizes = streamed(codec64, codes, chunk, first)
    assert got.shape == ref.shape
    expected_sizes = [min(first, frames)] + [chunk] * ((max(frames - first, 0)) // chunk)
    if sum(expected_sizes) < frames:
        expected_sizes.append(frames - sum(expected_sizes))
    assert sizes == [n * 1920 for n in expected_sizes]
    assert_equal_up_to_the_float32_cast(got, ref)


def test_stream_is_exact_across_the_300_frame_chunk(codec64):
    """Frames 290..309 streamed in chunks that straddle upstream's boundary at 300 (which decodes
    from 275): equal to upstream's chunked decode, and unlike an unchunked decode."""
    codes = random_codes(310, 1)
    ref = offline(codec64, codes)
    got, _ = streamed(codec64, codes[290:], 8, 3, prefix=codes[:290], push_frames=4)
    assert_equal_up_to_the_float32_cast(got, ref[290 * 1920 :])
    with torch.inference_mode():
        whole = codec64(codes.T[None])[0, 0].to(torch.float32).numpy()
    assert np.abs(whole[300 * 1920 :] - got[10 * 1920 :]).max() > 1e-2


@pytest.mark.parametrize("chunk,first", [(8, 3), (64, 40)])
def test_a_stream_from_frame_0_crosses_the_300_frame_chunk_exactly(codec64, chunk, first):
    """330 frames streamed from the start, one frame pushed at a time, with a chunk that spans
    frame 300 (3 + 8k and 40 + 64k both step over it): the stream splits it there and the whole
    clip equals upstream's chunked decode bit for bit."""
    assert (UPSTREAM_CHUNK_FRAMES - first) % chunk != 0  # a chunk spans the boundary
    codes = random_codes(330, 2)
    ref = offline(codec64, codes)
    got, sizes = streamed(codec64, codes, chunk, first)
    assert sizes[0] == first * 1920 and len(sizes) == 1 + -(-(330 - first) // chunk)
    assert_equal_up_to_the_float32_cast(got, ref)


def test_one_frame_less_context_breaks_equality(codec64):
    """The equality test can fail: with one latent frame less than derived, the streamed audio
    leaves rounding noise far behind."""
    codes = random_codes(21, 21)
    ref = offline(codec64, codes)
    got, _ = streamed(codec64, codes, 8, 4, tail_context=tail_context_frames(codec64) - 1)
    assert np.abs(got - ref).max() > 1e-3
    with pytest.raises(AssertionError, match="more than one float32 step apart"):
        assert_equal_up_to_the_float32_cast(got, ref)
    got, _ = streamed(codec64, codes, 8, 4, tail_context=tail_context_frames(codec64))
    assert_equal_up_to_the_float32_cast(got, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("frames,chunk,first", [(13, 1, 1), (21, 8, 4)])
def test_stream_within_bound_in_model_dtypes(load_pair, dtype, frames, chunk, first):
    """fp32/bf16 pick conv kernels by input size, so streamed windows round differently from the
    offline chunk: equal within the measured bound, not bit for bit."""
    _, model = load_pair("base", dtype)
    codes = random_codes(frames, frames)
    (ref,), _ = model.decode_codes([codes])
    got, _ = streamed(model.codec, codes, chunk, first)
    bound, min_snr = STREAMING_TOLERANCES[dtype]
    max_abs = float(np.abs(got - ref).max())
    print(f"\n{dtype} frames={frames} chunk={chunk}/{first}: max abs {max_abs:.3e} SNR {snr_db(ref, got):.1f} dB")
    assert got.shape == ref.shape and max_abs <= bound and snr_db(ref, got) >= min_snr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_stream_within_bound_across_the_300_frame_chunk(load_pair, dtype):
    _, model = load_pair("base", dtype)
    codes = random_codes(310, 1)
    (ref,), _ = model.decode_codes([codes])
    got, _ = streamed(model.codec, codes[290:], 8, 3, prefix=codes[:290], push_frames=4)
    ref = ref[290 * 1920 :]
    bound, min_snr = STREAMING_TOLERANCES[dtype]
    max_abs = float(np.abs(got - ref).max())
    print(f"\n{dtype} frames 290..309 chunks 8/3: max abs {max_abs:.3e} SNR {snr_db(ref, got):.1f} dB")
    assert got.shape == ref.shape and max_abs <= bound and snr_db(ref, got) >= min_snr


def test_codec_stream_rejects_bad_chunk_sizes(load_pair):
    _, model = load_pair("base", torch.float32)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="chunk_frames"):
            CodecStream(model.codec, chunk_frames=bad)
    with pytest.raises(ValueError, match="first_chunk_frames"):
        CodecStream(model.codec, 8, 0)


# --------------------------------------------------------------------------------------------
# Voice modes
# --------------------------------------------------------------------------------------------
GEN = dict(do_sample=True, subtalker_dosample=True, max_new_tokens=30)
REF_CODE = torch.randint(0, 16, (5, 4), generator=torch.Generator().manual_seed(0))
MODES = {
    "custom_voice": ("custom_voice", "custom_voice", dict(text="Hi there.", speaker="alice", language="auto")),
    "voice_design": ("voice_design", "voice_design", dict(text="Hello.", instruct="Calm and deep.")),
    "clone_xvector": ("base", "voice_clone", dict(text="Clone me.", language="english", x_vector_only_mode=True)),
    "clone_icl": (
        "base",
        "voice_clone",
        dict(text="Clone me.", language="english", ref_text="Reference words.", ref_code=REF_CODE),
    ),
    # ICL from the recording: the reference codes come from the standalone encoder.
    "clone_icl_from_audio": (
        "base",
        "voice_clone",
        dict(text="Clone me.", language="english", ref_text="Reference words."),
    ),
}


def _run_both(model, method, kwargs, seed=5, **stream_kw):
    if method == "voice_clone":
        kwargs = dict(kwargs, ref_audio=(speech_like_waveform(3), 24000))
    torch.manual_seed(seed)
    wavs, sr = getattr(model, f"generate_{method}")(**kwargs, **GEN)
    torch.manual_seed(seed)
    chunks = list(getattr(model, f"stream_{method}")(**kwargs, **GEN, **stream_kw))
    return wavs, sr, chunks


@pytest.mark.parametrize("mode", list(MODES))
def test_every_voice_mode_streams_the_offline_audio(load_models, mode):
    model_type, method, kwargs = MODES[mode]
    _, model = load_models(model_type, torch.float32)
    (ref,), sr, chunks = _run_both(model, method, kwargs, chunk_frames=3, first_chunk_frames=2)
    assert sr == 24000 and all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert len(chunks) > 2 and len(chunks[0]) == 2 * 1920
    got = np.concatenate(chunks).astype(np.float64)
    if mode == "clone_icl":
        # Upstream cuts int(ref / total * samples), one sample short of ref * 1920 for some totals;
        # the stream starts exactly at the end of the reference.
        total = REF_CODE.shape[0] + len(got) // 1920
        cut = int(REF_CODE.shape[0] / total * total * 1920)
        assert len(ref) == len(got) + (REF_CODE.shape[0] * 1920 - cut)
        ref = ref[len(ref) - len(got) :]
    if mode == "clone_icl_from_audio":
        assert len(ref) - len(got) in (0, 1)  # upstream's float cut, as above
        ref = ref[len(ref) - len(got) :]
    bound, min_snr = STREAMING_TOLERANCES[torch.float32]
    assert got.shape == ref.shape
    max_abs = float(np.abs(got - ref).max())
    print(f"\n{mode}: {len(got) // 1920} frames, max abs {max_abs:.3e} SNR {snr_db(ref, got):.1f} dB")
    assert max_abs <= bound and snr_db(ref, got) >= min_snr


def test_batches_stream_per_item(load_models):
    _, model = load_models("custom_voice", torch.float32)
    kwargs = dict(text=["Hi there.", "Second one, longer!"], speaker=["alice", "bob"], language="auto")
    torch.manual_seed(7)
    wavs, _ = model.generate_custom_voice(**kwargs, **GEN)
    torch.manual_seed(7)
    items: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for i, chunk in model.stream_custom_voice(**kwargs, **GEN, chunk_frames=4, first_chunk_frames=2):
        items[i].append(chunk)
    bound, _ = STREAMING_TOLERANCES[torch.float32]
    for i, ref in enumerate(wavs):
        got = np.concatenate(items[i])
        assert got.shape == ref.shape and np.abs(got - ref).max() <= bound


def test_stream_codes_equal_generate_codes(load_models):
    """The per-frame loop yields the codes generate() returns (same RNG draws, same order)."""
    _, model = load_models("custom_voice", torch.float32)
    kwargs = dict(text="Hi there.", speaker="alice", language="auto")
    torch.manual_seed(3)
    (codes,) = model.generate_custom_voice(**kwargs, return_codes=True, **GEN)
    torch.manual_seed(3)
    got = np.concatenate(list(model.stream_custom_voice(**kwargs, **GEN, chunk_frames=300, first_chunk_frames=300)))
    (ref,), _ = model.decode_codes([codes])
    np.testing.assert_array_equal(got, ref)  # one chunk decoded exactly as offline: same codes


def _instrumented(model, monkeypatch):
    """Count talker steps and keep weak references to every KV cache and codec stream created."""
    import q3tts.standalone.streaming as streaming

    steps, alive = [], []
    real_step = model.talker.step

    def counting_step(*a, **k):
        steps.append(1)
        return real_step(*a, **k)

    def tracking(factory):
        def make(*a, **k):
            obj = factory(*a, **k)
            alive.append(weakref.ref(obj))
            if hasattr(obj, "k"):  # a KV cache: its tensors are the memory that must go
                alive.extend([weakref.ref(obj.k), weakref.ref(obj.v)])
            return obj

        return make

    monkeypatch.setattr(model.talker, "step", counting_step)
    monkeypatch.setattr(model.talker.decoder, "new_cache", tracking(model.talker.decoder.new_cache))
    monkeypatch.setattr(model.code_predictor.decoder, "new_cache", tracking(model.code_predictor.decoder.new_cache))
    monkeypatch.setattr(streaming, "CodecStream", tracking(streaming.CodecStream))
    return steps, alive


@pytest.mark.parametrize("chunks_before_close", [1, 3])
def test_closing_a_stream_stops_generation_and_frees_caches(load_models, monkeypatch, chunks_before_close):
    """Cancel right after the first chunk and mid-way (after three): the talker takes no
    further step, and the KV caches (talker and code predictor, their tensors) and the codec
    stream are released."""
    _, model = load_models("custom_voice", torch.float32)
    steps, alive = _instrumented(model, monkeypatch)
    torch.manual_seed(5)
    stream = model.stream_custom_voice(
        "A long sentence to speak.",
        speaker="alice",
        language="auto",
        max_new_tokens=200,
        chunk_frames=4,
        first_chunk_frames=1,
    )
    got = [next(stream) for _ in range(chunks_before_close)]
    frames = 1 + 4 * (chunks_before_close - 1)
    assert [len(c) for c in got] == [1920] + [4 * 1920] * (chunks_before_close - 1)
    assert len(alive) == 7 and all(ref() is not None for ref in alive)  # 2 caches x 3, 1 stream
    n_steps = len(steps)
    assert n_steps == frames  # a chunk's audio comes right after its last frame (prefill = step 1)
    stream.close()
    gc.collect()
    assert len(steps) == n_steps, "generation continued after close"
    assert stream.gi_frame is None
    leaked = [ref() for ref in alive if ref() is not None]
    assert not leaked, f"still alive after close: {[type(x).__name__ for x in leaked]}"
    with pytest.raises(StopIteration):
        next(stream)


# --------------------------------------------------------------------------------------------
# Progressive output and the CLI
# --------------------------------------------------------------------------------------------
def test_progressive_wav_is_valid_after_every_chunk(tmp_path):
    import soundfile as sf

    from q3tts.standalone.streaming import ProgressiveWav

    path = tmp_path / "p.wav"
    chunks = [np.sin(np.arange(n, dtype=np.float32) / 7) * 0.5 for n in (1920, 3840, 7)]
    with ProgressiveWav(path, 24000) as wav:
        assert sf.info(str(path)).frames == 0
        written = 0
        for c in chunks:
            wav.write(c)
            written += len(c)
            got, sr = sf.read(str(path), dtype="float32")  # a reader in the middle of the stream
            assert sr == 24000 and len(got) == written
    sf.write(str(tmp_path / "ref.wav"), np.concatenate(chunks), 24000)  # soundfile's own 16-bit wav
    assert path.read_bytes() == (tmp_path / "ref.wav").read_bytes()


def _cli(*args):
    import subprocess
    import sys

    code = "import sys; from q3tts.standalone.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, "synthesize", *map(str, args)], capture_output=True)


def _cli_here(*args):
    """`q3tts synthesize ARGS` in this process (click's runner; torch's RNG state is restored after)."""
    from click.testing import CliRunner

    from q3tts.standalone.cli import main

    with torch.random.fork_rng():
        return CliRunner().invoke(main, ["synthesize", *map(str, args)])


def test_cli_streams_a_wav_and_pcm_to_stdout(checkpoints, tmp_path):
    """The offline and the streamed wav in this process; the PCM to stdout in a real process, whose
    stdout must carry nothing else."""
    import soundfile as sf

    common = [
        "--model",
        checkpoints["custom_voice"][1],
        "--text",
        "Hello world.",
        "--speaker",
        "alice",
        "--language",
        "english",
        "--seed",
        "3",
        "--max-new-tokens",
        "30",
    ]
    r = _cli_here(*common, "--out", tmp_path / "offline.wav")
    assert r.exit_code == 0, (r.stderr, r.exception)
    r = _cli_here(*common, "--stream", "--chunk-frames", "3", "--first-chunk-frames", "2", "--out", tmp_path / "s.wav")
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert "first audio after" in r.stderr
    ref, _ = sf.read(str(tmp_path / "offline.wav"), dtype="int16")
    got, sr = sf.read(str(tmp_path / "s.wav"), dtype="int16")
    assert sr == 24000 and got.shape == ref.shape
    assert np.abs(got.astype(int) - ref).max() <= 1 + STREAMING_TOLERANCES[torch.float32][0] * 32767
    r = _cli(*common, "--stream", "--chunk-frames", "3", "--first-chunk-frames", "2", "--out", "-")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.frombuffer(r.stdout, dtype="<i2"), got)  # stdout carries only the PCM
    r = _cli_here(*common, "--out", "-")
    assert r.exit_code != 0 and "needs --stream" in r.stderr, (r.stderr, r.exception)


# --------------------------------------------------------------------------------------------
# verify: streamed audio against upstream's offline audio
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["custom_voice", "voice_design", "base"])
def test_verify_parity_streaming_cases_pass(load_models, model_type):
    """The streaming cases of the default verify-parity run: every voice mode at every chunk
    size (the stream's own and the replays, a smaller first chunk, one longer than the clip) and
    the 300-frame crossing, codes identical to upstream's, audio within the bound."""
    from q3tts.verify.cases.streaming import CHUNK_SIZES, streaming_results

    wrapper, model = load_models(model_type, torch.float32)
    results = streaming_results(wrapper, model, model_type, torch.float32, 0, 24, f"stream-{model_type}")
    table = "\n".join(f"{r.case} {r.passed} {r.metrics} {r.note}" for r in results)
    print("\n" + table)
    assert results and all(r.passed and r.kind == "streaming" for r in results), table
    assert all(r.metrics["codes_identical"] and r.metrics["frames"] > 0 for r in results)
    sizes = {(r.metrics["chunk_frames"], r.metrics["first_chunk_frames"]) for r in results}
    assert set(CHUNK_SIZES) <= sizes and (26, 26) in sizes  # 24 frames: a chunk longer than any clip
    assert any(r.metrics["via"].startswith("stream_") for r in results)
    assert sum(r.case.startswith("streaming.codec_330_frames") for r in results) == 1
    # the streaming logic judged exactly: the standalone's codec in float64 against its own offline decode
    assert [r.case for r in results if r.case.startswith("streaming.exact_float64")] == [
        "streaming.exact_float64.codec_330_frames.8_3"
    ]


def _failing(results) -> set[str]:
    return {r.case for r in results if not r.passed}


def test_verify_parity_streaming_cases_catch_too_little_context(load_models, monkeypatch):
    """A planted streaming bug: one latent frame less left context than the decoder's receptive
    field. Every case that decodes more than one chunk fails (the first chunk starts at frame 0
    and has nothing to miss); a single-chunk case cannot see it and passes."""
    import q3tts.standalone.streaming as streaming
    from q3tts.verify.cases.streaming import streaming_results

    wrapper, model = load_models("custom_voice", torch.float32)
    derived = streaming.tail_context_frames(model.codec)
    monkeypatch.setattr(streaming, "tail_context_frames", lambda codec: derived - 1)
    results = streaming_results(wrapper, model, "custom_voice", torch.float32, 0, 24, "stream-custom_voice")
    multi = {r.case for r in results if r.metrics["chunks"] > 1}
    assert multi and _failing(results) == multi, sorted(_failing(results) ^ multi)
    assert "streaming.codec_330_frames.8_3" in multi
    assert all(r.metrics["codes_identical"] for r in results)  # the bug is in the decode, not the codes


def test_verify_parity_streaming_cases_catch_an_unsplit_300_frame_chunk(load_models, monkeypatch):
    """A planted streaming bug: chunks are not split at upstream's 300-frame boundary (the
    stream decodes as one long window). Only the crossing case can see it, and it fails."""
    import q3tts.standalone.streaming as streaming
    from q3tts.verify.cases.streaming import streaming_results

    wrapper, model = load_models("custom_voice", torch.float32)
    monkeypatch.setattr(streaming, "UPSTREAM_CHUNK_FRAMES", 10**6)
    results = streaming_results(wrapper, model, "custom_voice", torch.float32, 0, 24, "stream-custom_voice")
    assert _failing(results) == {"streaming.codec_330_frames.8_3", "streaming.exact_float64.codec_330_frames.8_3"}


def test_verify_parity_runs_the_streaming_cases_by_default(monkeypatch):
    """verify-parity's default run asks the suite for the streaming cases; --no-streaming and
    --no-generation turn them off (the fault self-test never runs them: run_suite defaults off)."""
    import inspect

    from click.testing import CliRunner

    from q3tts.verify import cli
    from q3tts.verify.cases.suite import run_suite

    assert inspect.signature(run_suite).parameters["streaming"].default is False
    calls = []
    monkeypatch.setattr(cli, "run", lambda *a, **k: calls.append(k["streaming"]) or True)
    for args, expected in (([], True), (["--no-streaming"], False), (["--no-generation"], False)):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 0 and calls.pop() is expected, (args, result.output)


def test_a_sampler_bug_that_breaks_the_codec_fails_cases_instead_of_the_run(load_models):
    """The EOS suppression range off by one lets the first special id through as a code; the
    codec cannot embed it and raises. The streaming cases must report that as failed cases with
    the exception named, and return: a FAIL verdict, not exit 2 (issue 27)."""
    from q3tts.verify.cases.streaming import streaming_results
    from q3tts.verify.faults.catalogue import CATALOGUE

    fault = next(f for f in CATALOGUE if f.name == "suppression_off_by_one")
    wrapper, model = load_models(fault.model_type, torch.float32)
    with fault.inject(model):
        results = streaming_results(wrapper, model, fault.model_type, torch.float32, 0, 24, "stream-suppress")
    failed = [r for r in results if not r.passed]
    assert failed, "the planted sampler bug went unnoticed"
    raised = [r for r in failed if r.error]
    assert raised and all(r.error in r.note for r in raised), [(r.case, r.error) for r in failed]
