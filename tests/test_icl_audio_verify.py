"""verify: the ICL-from-audio generation cases (cloning from a recording, end to end) pass on the
Base fixture in fp32 and bf16, are part of the suite for Base checkpoints only, and fail, naming
the stage, when the standalone's path from the recording is broken."""

from __future__ import annotations

import pytest
import torch

import q3tts.verify.cases.suite as suite
from q3tts.verify.cases.icl_audio import CASES, icl_audio_results
from q3tts.verify.faults.encoder import ENCODER_FAULTS

pytestmark = pytest.mark.reference  # drives upstream qwen-tts

SEEDS = [0]
FRAMES = 12
FAULTS = {f.name: f for f in ENCODER_FAULTS}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_icl_audio_cases_pass(load_models, dtype):
    wrapper, standalone = load_models("base", dtype)
    results = icl_audio_results(wrapper, standalone, dtype, SEEDS, FRAMES, cache_key="test-icl")
    assert len(results) == 2 * len(CASES) == 8  # greedy and one seeded sampled plan per case
    for r in results:
        m = r.metrics
        assert r.passed and r.kind == "icl_audio", (r.case, r.note, m)
        assert m["ref_codes_identical"] and m["ref_codes"] > 0 and m["first_divergence"] is None
        assert m["frames_upstream"] == m["frames_standalone"] and m["frames_upstream"][0] > 0
        # Measured: the waveform is bit-identical on the fixture, fp32 and bf16.
        assert m["max_abs"] == 0.0, (r.case, m["max_abs"])


def _run(load_models, cases=None):
    wrapper, standalone = load_models("base", torch.float32)
    return icl_audio_results(wrapper, standalone, torch.float32, SEEDS, FRAMES, "test-icl", cases)


# Where each encoder fault shows end to end on the fixture (measured): the stage the failing cases
# name, and the cases that must fail. Resampling reaches the x-vector too (the 44.1 kHz reference's
# codes survive it, its x-vector does not); the sliding window only bites past 250 encoder frames.
ALL = tuple(c.name for c in CASES)
FAULT_SHOWS = {
    "encoder_downsample_padding": {c: "speech_encoder" for c in ALL},
    "encoder_downsample_stride": {c: "speech_encoder" for c in ALL},
    "encoder_l1_distance": {c: "speech_encoder" for c in ALL},
    "encoder_layer_scale": {c: "speech_encoder" for c in ALL},
    "encoder_sliding_window": {"wav_24k_11s.streaming": "speech_encoder"},
    "encoder_resampler": {"wav_44k_stereo.non_streaming": "speaker_encoder", "array_16k.streaming": "speech_encoder"},
}


@pytest.mark.parametrize("fault", sorted(FAULT_SHOWS))
def test_encoder_fault_fails_the_cloning_cases(load_models, fault):
    _, standalone = load_models("base", torch.float32)
    with FAULTS[fault].inject(standalone):
        results = _run(load_models)
    expected = FAULT_SHOWS[fault]
    for r in results:
        name = r.case.removeprefix("icl_audio.").rsplit(".greedy", 1)[0].rsplit(".sampled", 1)[0]
        if name in expected:
            assert not r.passed and r.first_bad_layer == expected[name], (r.case, r.note)
        else:  # a fault that cannot reach this reference leaves it identical
            assert r.passed, (r.case, r.note)


def test_cases_pass_again_once_the_fault_is_gone(load_models):
    _, standalone = load_models("base", torch.float32)
    with FAULTS["encoder_l1_distance"].inject(standalone):
        assert not any(r.passed for r in _run(load_models, ("wav_24k.streaming",)))
    assert all(r.passed for r in _run(load_models, ("wav_24k.streaming",)))


def test_reference_transcript_fault_is_a_generation_failure(load_models, monkeypatch):
    """The recording is tokenised right but the transcript's template is wrong: the reference
    codes agree and the generated codes do not."""
    from q3tts.standalone import voices

    real = voices.TextTokenizer.ref_text
    monkeypatch.setattr(voices.TextTokenizer, "ref_text", staticmethod(lambda t: real(t + " ")))
    for r in _run(load_models, ("wav_24k.streaming",)):
        assert not r.passed and r.first_bad_layer == "generation", (r.case, r.note)
        assert r.metrics["ref_codes_identical"] and r.metrics["first_divergence"] is not None


@pytest.mark.parametrize("model_type,expected", [("base", True), ("custom_voice", False)])
def test_suite_runs_the_cases_for_base_checkpoints_only(load_models, monkeypatch, model_type, expected):
    calls = []
    for name in ("forward_results", "generation_results", "audio_results"):
        monkeypatch.setattr(suite, name, lambda *a, **k: [])
    monkeypatch.setattr("q3tts.verify.cases.encoder.encoder_results", lambda *a, **k: [])
    monkeypatch.setattr("q3tts.verify.cases.icl_audio.icl_audio_results", lambda *a, **k: calls.append(a) or [])
    wrapper, standalone = load_models(model_type, torch.float32)
    suite.run_suite(wrapper, standalone, model_type, torch.float32, SEEDS, FRAMES, "k")
    assert bool(calls) == expected
    calls.clear()
    suite.run_suite(wrapper, standalone, model_type, torch.float32, SEEDS, FRAMES, "k", generation=False)
    assert not calls


def test_bf16_rounded_rope_frequencies_fail_the_bf16_cases(load_models):
    """What made an earlier benchmark's bf16 codes differ (5-6% at released size): upstream's module
    cast with .to(bf16) rounds Mimi's RoPE inv_freq to bf16, while upstream's from_pretrained keeps
    it fp32, as the standalone does. The same rounding on the standalone side must fail here."""
    wrapper, standalone = load_models("base", torch.bfloat16)
    transformer = standalone.speech_encoder.transformer
    exact = transformer.inv_freq
    assert exact.dtype == torch.float32  # the model is bf16; its RoPE frequencies are not
    transformer.inv_freq = exact.to(torch.bfloat16).float()
    try:
        results = icl_audio_results(wrapper, standalone, torch.bfloat16, SEEDS, FRAMES, "test-icl")
    finally:
        transformer.inv_freq = exact
    failed = [r for r in results if not r.passed]
    # Measured on the fixture: the 24 kHz, 16 kHz and 11 s references (6 of 8 cases).
    assert len(failed) >= 4 and all(r.first_bad_layer == "speech_encoder" for r in failed), [
        (r.case, r.note) for r in results
    ]


def test_verify_parity_on_a_base_directory_reports_the_cases(checkpoints, tmp_path):
    """``verify-parity SRC`` on a Base checkpoint runs and reports the cloning cases."""
    import json

    from click.testing import CliRunner

    from q3tts.verify.cli import main as verify_cli

    args = [checkpoints["base"][0], "--dtype", "fp32", "--seeds", "0", "--frames", "4", "--report-dir", tmp_path]
    r = CliRunner().invoke(verify_cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    cases = json.loads((tmp_path / "parity.json").read_text())["runs"][0]["cases"]
    icl = [c for c in cases if c["kind"] == "icl_audio"]
    assert len(icl) == 2 * len(CASES) and all(c["passed"] for c in icl)
    assert (
        "| icl_audio.wav_24k_11s.streaming.greedy | PASS | reference codes identical"
        in (tmp_path / "parity.md").read_text()
    )
