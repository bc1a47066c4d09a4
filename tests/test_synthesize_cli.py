"""`q3tts synthesize` turns text into a wav on torch alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

BLOCKED = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('transformers', 'qwen_tts'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, _Block())
from q3tts.standalone.cli import main
main(sys.argv[1:])
"""


def _synthesize(*args):
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, "synthesize", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.reference
def test_synthesize_writes_upstreams_audio_without_transformers(checkpoints, load_models, tmp_path):
    out = tmp_path / "hello.wav"
    r = _synthesize(
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
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert "blocked" not in r.stderr
    wav, sr = sf.read(str(out), dtype="float32")
    assert sr == 24000 and len(wav) % 1920 == 0 and len(wav) > 0
    assert np.sqrt(np.mean(wav**2)) > 0.01
    # The same request through upstream's own wrapper, same seed: the same audio (16-bit wav).
    wrapper, _ = load_models("custom_voice", torch.float32)
    torch.manual_seed(3)
    (expected,), _ = wrapper.generate_custom_voice(
        "Hello world.", speaker="alice", language="english", max_new_tokens=30
    )
    assert expected.shape == wav.shape
    np.testing.assert_allclose(wav, np.clip(expected, -1, 1), atol=2 / 32768, rtol=0)


def test_synthesize_clone_and_design_modes(checkpoints, tmp_path):
    from q3tts.verify.cases.forward import speech_like_waveform

    ref = tmp_path / "ref.wav"
    sf.write(str(ref), speech_like_waveform(1), 24000)
    codes = tmp_path / "codes.npy"
    np.save(codes, np.random.default_rng(0).integers(0, 16, (6, 4)))
    runs = [
        ("voice_design", ["--instruct", "A calm voice."]),
        ("base", ["--ref-audio", ref]),
        ("base", ["--ref-audio", ref, "--ref-text", "Reference words.", "--ref-codes", codes]),
    ]
    for i, (kind, extra) in enumerate(runs):
        out = tmp_path / f"o{i}.wav"
        r = _synthesize(
            "--model", checkpoints[kind][1], "--text", "Hi.", "--out", out, "--greedy", "--max-new-tokens", "12", *extra
        )
        assert r.returncode == 0, r.stderr
        assert sf.info(str(out)).samplerate == 24000


@pytest.mark.slow_compile
def test_synthesize_fast_compiles_before_generating_and_matches_exact(
    checkpoints, tmp_path, monkeypatch, warm_compile_cache
):
    """--fast says it compiles, compiles before the first frame (into the cache named by
    Q3TTS_COMPILE_CACHE; the tests' cache kept between runs), and in fp32 writes the exact path's
    greedy audio (the fast path's fp32 codes equal upstream's in every measured case; the audio
    decoder is the same eager code)."""
    cache = warm_compile_cache / "synthesize"
    monkeypatch.setenv("Q3TTS_COMPILE_CACHE", str(cache))
    common = ["--model", checkpoints["custom_voice"][1], "--text", "Hello fast.", "--speaker", "alice"]
    common += ["--greedy", "--max-new-tokens", "16"]
    exact, quick = tmp_path / "exact.wav", tmp_path / "fast.wav"
    r = _synthesize(*common, "--out", exact)
    assert r.returncode == 0, r.stderr
    r = _synthesize(*common, "--fast", "--out", quick)
    assert r.returncode == 0, r.stderr
    assert f"compiling the fast path (graphs cached in {cache})" in r.stderr
    assert "fast path ready after" in r.stderr
    assert "No CUDA runtime" not in r.stderr  # torch's cpp_extension warning on CPU machines, silenced
    assert any(cache.iterdir())
    want, _ = sf.read(str(exact), dtype="float32")
    got, _ = sf.read(str(quick), dtype="float32")
    assert got.shape == want.shape and len(got) > 0
    np.testing.assert_allclose(got, want, atol=2 / 32768, rtol=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--speaker", "nobody"], "unsupported speakers"),
        ([], "--speaker is required"),
        (["--speaker", "alice", "--language", "klingon"], "unsupported languages"),
    ],
)
def test_synthesize_bad_input(checkpoints, tmp_path, args, message):
    out = tmp_path / "x.wav"
    r = _synthesize("--model", checkpoints["custom_voice"][1], "--text", "Hi.", "--out", out, *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr  # usage errors
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_synthesize_refuses_an_upstream_directory_with_no_convert(checkpoints, tmp_path):
    r = _synthesize(
        "--model",
        checkpoints["custom_voice"][0],
        "--text",
        "Hi.",
        "--speaker",
        "alice",
        "--out",
        tmp_path / "x.wav",
        "--no-convert",
    )
    assert r.returncode == 1 and "convert it first" in r.stderr
