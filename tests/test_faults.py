"""Fault injection: every planted bug makes the parity suite fail, naming the right component
and, for layer faults, the right layer. 100% detection is required."""

from __future__ import annotations

import pytest
import torch

from q3tts.verify.faults import CATALOGUE, SAMPLER_FAULTS, run_fault
from q3tts.verify.suite import run_suite

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


def test_catalogue_is_broad():
    assert len(CATALOGUE) >= 29 and len(SAMPLER_FAULTS) >= 8
    assert len({f.name for f in CATALOGUE}) == len(CATALOGUE)
    assert {f.component for f in CATALOGUE} >= {
        "talker",
        "code_predictor",
        "speaker_encoder",
        "text_projection",
        "generation",
        "codec",
    }


@pytest.mark.parametrize("fault", CATALOGUE, ids=[f.name for f in CATALOGUE])
def test_fault_is_detected_and_located(load_models, fault):
    wrapper, standalone = load_models(fault.model_type, torch.float32)
    result = run_fault(fault, wrapper, standalone, seeds=[0], frames=12, cache_key=f"faults-{fault.model_type}")
    assert result.detected, f"{fault.name} ({fault.description}) went unnoticed"
    assert result.component_named, (
        f"{fault.name}: failing components {result.failing_components}, expected {fault.component}"
    )
    assert result.layer_named is not False, f"{fault.name}: layers {result.reported_layers}, expected {fault.layer}"


@pytest.mark.parametrize("model_type", ["base", "custom_voice", "voice_design"])
def test_faults_leave_no_trace(load_models, model_type):
    """After the catalogue ran, the models are intact: the suite passes again."""
    wrapper, standalone = load_models(model_type, torch.float32)
    results = run_suite(wrapper, standalone, model_type, torch.float32, [0], 12, f"faults-{model_type}")
    assert all(r.passed for r in results), [r.case for r in results if not r.passed]
