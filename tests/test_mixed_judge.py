"""verify-parity --mixed judges every mode against upstream fp32 with bounds from measurement
(verify/cases/mixed.py). The judge on summaries shaped like the committed report's: a clean set passes,
and each planted finding is named."""

from __future__ import annotations

import copy

import pytest

from q3tts.verify.cases.mixed import MIXED_FORWARD_BOUNDS, MODES, judge

# The worst of reports/mixed-precision.md per mode, with the generated-audio figures of the mode's codec.
MEASURED = {
    "fp32": (0.0, 1.0, 1.0, float("inf"), float("inf")),
    "bf16": (1.79e-2, 0.999930, 0.752, 15.7, 18.0),
    "bf16-mixed": (9.71e-3, 0.999956, 0.797, float("inf"), float("inf")),
    "fp16": (2.28e-3, 0.999999, 0.935, 27.2, 30.0),
    "fp16-mixed": (1.35e-3, 0.999999, 0.959, float("inf"), float("inf")),
}


def _runs() -> list[dict]:
    runs = []
    for mode in MODES:
        max_rel, cosine, frames, snr, gen_snr = MEASURED[mode]
        summary = {
            "forward_max_rel": max_rel,
            "forward_min_cosine": cosine,
            "forward_finite": True,
            "generation_identical": 20 if mode == "fp32" else 12,
            "generation_cases": 20,
            "generation_frame_fraction": frames,
            "audio_min_snr_db": snr,
            "audio_finite": True,
            "generated_audio_min_snr_db": gen_snr,
            "generated_audio_decoded": 1,
            "generation_errors": 0,
        }
        runs.append({"checkpoint": "tiny-base", "mode": mode, "summary": summary})
    return runs


def _with(mode: str, **change) -> list[dict]:
    runs = copy.deepcopy(_runs())
    next(r for r in runs if r["mode"] == mode)["summary"].update(change)
    return runs


def test_the_measured_modes_pass():
    assert judge(_runs()) == []


@pytest.mark.parametrize(
    "mode, change, named",
    [
        ("bf16", {"forward_max_rel": 3.5e-2}, "tiny-base bf16: forward max rel 0.035"),
        ("fp16", {"forward_min_cosine": 0.9999}, "tiny-base fp16: forward max rel"),
        # the split lost: bf16-mixed computing like plain bf16 is over its bound and no closer than bf16
        (
            "bf16-mixed",
            {"forward_max_rel": 1.79e-2},
            "tiny-base bf16-mixed: forwards not closer to fp32 than plain bf16",
        ),
        ("fp16-mixed", {"generation_frame_fraction": 0.1}, "tiny-base fp16-mixed: identical frames 0.100 < 0.5"),
        (
            "bf16-mixed",
            {"generated_audio_min_snr_db": 18.0},
            "tiny-base bf16-mixed: generated audio SNR 18.0 dB < 80.0",
        ),
        ("fp16", {"generated_audio_decoded": 0}, "tiny-base fp16: no generated codes were decoded"),
        ("fp32", {"generated_audio_min_snr_db": 120.0}, "tiny-base fp32: not exact against upstream fp32"),
        ("bf16", {"generation_errors": 1}, "tiny-base bf16: non-finite output or a generation error"),
    ],
)
def test_each_finding_is_named(mode, change, named):
    failing = judge(_with(mode, **change))
    assert any(f.startswith(named) for f in failing), failing


def test_the_bounds_sit_above_the_measured_worst():
    for mode, (max_rel, min_cos) in MIXED_FORWARD_BOUNDS.items():
        measured_rel, measured_cos = MEASURED[mode][:2]
        assert measured_rel < max_rel and measured_cos > min_cos, mode


def test_the_mixed_self_test_asks_each_mode_only_what_its_noise_lets_it_see():
    """A fault is due in a mode when its own size (the fp32 mode's distance) is over twice the mode's
    clean distance from fp32; a fault of size 0 is invisible to the forward cases."""
    from q3tts.verify.faults.mixed import mark_expected

    def mode(name, noise, faults):
        return {
            "mode": name,
            "clean": {"tiny-base": {"max_rel": noise}},
            "faults": {n: {"max_rel": v} for n, v in faults},
        }

    modes = [
        mode("fp32", 0.0, [("big", 0.5), ("small", 0.016), ("unseen", 0.0)]),
        mode("bf16", 0.018, [("big", 0.5), ("small", 0.02), ("unseen", 0.018)]),
        mode("fp16", 0.002, [("big", 0.5), ("small", 0.017), ("unseen", 0.002)]),
    ]
    mark_expected(modes)
    due = {m["mode"]: sorted(n for n, f in m["faults"].items() if f["expected"]) for m in modes}
    assert due == {"fp32": ["big", "small"], "bf16": ["big"], "fp16": ["big", "small"]}
