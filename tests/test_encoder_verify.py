"""verify: the encoder parity cases pass on the fixture, and every encoder fault is caught and
localised to its stage."""

from __future__ import annotations

import pytest
import torch

from q3tts.verify.cases.encoder import CASES, encoder_results
from q3tts.verify.faults.encoder import ENCODER_FAULTS, run_encoder_fault

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_encoder_cases_pass_with_identical_codes(load_models, dtype):
    wrapper, standalone = load_models("base", dtype)
    results = encoder_results(wrapper, standalone, dtype)
    assert [r.case for r in results] == [f"speech_encoder.{c}" for c in CASES]
    for r in results:
        assert r.passed and r.component == "speech_encoder", (r.case, r.note, r.metrics)
        assert r.metrics["codes_identical"] and r.metrics["codes"] > 0
        # Measured: every stage bit-identical on the fixture, fp32 and bf16.
        assert all(v == 0 for v in r.metrics["stage_max_abs"].values()), (r.case, r.metrics["stage_max_abs"])


def test_catalogue_has_the_required_encoder_faults():
    names = {f.name for f in ENCODER_FAULTS}
    assert {
        "encoder_downsample_padding",
        "encoder_l1_distance",
        "encoder_layer_scale",
        "encoder_downsample_stride",
    } <= names
    assert all(f.component == "speech_encoder" and f.model_type == "base" for f in ENCODER_FAULTS)


@pytest.mark.parametrize("fault", ENCODER_FAULTS, ids=[f.name for f in ENCODER_FAULTS])
def test_encoder_fault_is_caught_and_named(load_models, fault):
    wrapper, standalone = load_models("base", torch.float32)
    # A subset that reaches every stage: resampling (44.1 kHz) and beyond 250 frames (long).
    result = run_encoder_fault(fault, wrapper, standalone, ("short_0.3s", "44.1kHz", "padded_batch", "long_11s"))
    assert result.ok, result
    # The fault is gone once its context exits.
    assert all(r.passed for r in encoder_results(wrapper, standalone, torch.float32, ("speech_2s", "long_11s")))
