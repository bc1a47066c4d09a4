"""`q3tts synthesize` turns text into a wav on torch alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from q3tts.standalone.cli import main

_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('transformers', 'qwen_tts'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, _Block())
from q3tts.standalone.cli import main
"""
BLOCKED = _BLOCK + "main(sys.argv[1:])\n"
# Several `q3tts synthesize` runs, one after the other, in one such process (a process start costs
# seconds: torch's import): the exit code of each on stdout, as JSON; stderr is theirs.
BLOCKED_RUNS = (
    _BLOCK
    + """
import json
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as e:
        codes.append(e.code)
    else:
        codes.append('returned')
print(json.dumps(codes))
"""
)


def _synthesize(*args):
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, "synthesize", *map(str, args)], capture_output=True, text=True
    )


def _synthesize_runs(*runs) -> tuple[list, str]:
    """Each of ``runs`` (synthesize's arguments) in turn in one blocked process: (exit codes, stderr)."""
    argv = [["synthesize", *map(str, args)] for args in runs]
    r = subprocess.run([sys.executable, "-c", BLOCKED_RUNS, json.dumps(argv)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1]), r.stderr


def _synthesize_here(*args):
    """`q3tts synthesize ARGS` in this process (click's runner): its result (exit_code, stderr)."""
    return CliRunner().invoke(main, ["synthesize", *map(str, args)])


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
    outs = [tmp_path / f"o{i}.wav" for i in range(len(runs))]
    exits, err = _synthesize_runs(
        *(
            [
                "--model",
                checkpoints[kind][1],
                "--text",
                "Hi.",
                "--out",
                out,
                "--greedy",
                "--max-new-tokens",
                "12",
                *extra,
            ]
            for (kind, extra), out in zip(runs, outs)
        )
    )
    assert exits == [0] * len(runs), (exits, err)
    assert "blocked" not in err
    for out in outs:
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
    # Both in one process, the exact run first (its stderr is empty: the lines below are the fast run's)
    exits, err = _synthesize_runs([*common, "--out", exact], [*common, "--fast", "--out", quick])
    assert exits == [0, 0], (exits, err)
    assert f"compiling the fast path (graphs cached in {cache})" in err
    assert "fast path ready after" in err
    assert "No CUDA runtime" not in err  # torch's cpp_extension warning on CPU machines, silenced
    assert any(cache.iterdir())
    want, _ = sf.read(str(exact), dtype="float32")
    got, _ = sf.read(str(quick), dtype="float32")
    assert got.shape == want.shape and len(got) > 0
    np.testing.assert_allclose(got, want, atol=2 / 32768, rtol=0)


BAD_INPUT = [
    (["--speaker", "nobody"], "unsupported speakers"),
    ([], "--speaker is required"),
    (["--speaker", "alice", "--language", "klingon"], "unsupported languages"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_synthesize_bad_input(checkpoints, tmp_path, args, message):
    """In this process (click's runner): the usage error's one line and exit 2, no output file."""
    out = tmp_path / "x.wav"
    r = _synthesize_here("--model", checkpoints["custom_voice"][1], "--text", "Hi.", "--out", out, *args)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr, (r.stderr, r.exception)
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_synthesize_bad_input_in_a_process_is_one_line_and_exit_2(checkpoints, tmp_path):
    """The first of them in a real process: its exit status is 2, and its stderr holds that one
    line and nothing else (no warning from an import, no traceback)."""
    (args, message), out = BAD_INPUT[0], tmp_path / "x.wav"
    r = _synthesize("--model", checkpoints["custom_voice"][1], "--text", "Hi.", "--out", out, *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr  # usage errors
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_synthesize_refuses_an_upstream_directory_with_no_convert(checkpoints, tmp_path):
    r = _synthesize_here(
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
    assert r.exit_code == 1 and "convert it first" in r.stderr, (r.stderr, r.exception)
