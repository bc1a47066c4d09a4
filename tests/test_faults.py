"""Fault injection: every planted bug makes the parity suite fail, naming the right component
and, for layer faults, the right layer. 100% detection is required."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from q3tts.verify.cases.suite import run_suite
from q3tts.verify.faults.catalogue import CATALOGUE, SAMPLER_FAULTS, forward_is_bit_identical, run_fault

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


# --- localisation: a fault must be named at the layer where it enters, in both dtypes ---------

LAYER_FAULTS = [f for f in CATALOGUE if f.layer is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model_type", ["base", "custom_voice", "voice_design"])
def test_fault_free_forward_is_bit_identical(load_models, model_type, dtype):
    """The precondition of locating at the first differing layer (run_self_test checks it too)."""
    wrapper, standalone = load_models(model_type, dtype)
    assert forward_is_bit_identical(wrapper.model, standalone, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("fault", LAYER_FAULTS, ids=[f.name for f in LAYER_FAULTS])
def test_layer_fault_is_located_where_it_enters(load_models, fault, dtype):
    wrapper, standalone = load_models(fault.model_type, dtype)
    r = run_fault(fault, wrapper, standalone, [0], 12, f"faults-{fault.model_type}", dtype, generation=False)
    assert r.detected and r.component_named, (fault.name, r.failing_cases)
    assert r.layer_named, f"{fault.name}: located at {r.reported_layers}, expected {fault.layer}"


def _other_layer(layer: str) -> str:
    head, i = layer.rsplit(".", 1)
    return f"{head}.{1 - int(i)}"  # 0 <-> 1: the neighbouring layer or block


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "name", ["rope_theta", "mrope_split", "rmsnorm_eps", "swapped_qk", "gate_up_swapped", "se_gate"]
)
def test_a_fault_expected_at_another_layer_is_not_located(load_models, name, dtype):
    """The check is sharp: expecting the neighbouring layer fails it. (bf16 over tolerance named
    talker.layers.1 for rope_theta and mrope_split, which this rejects.)"""
    fault = next(f for f in CATALOGUE if f.name == name)
    wrong = dataclasses.replace(fault, layer=_other_layer(fault.layer))
    wrapper, standalone = load_models(fault.model_type, dtype)
    r = run_fault(wrong, wrapper, standalone, [0], 12, f"faults-{fault.model_type}", dtype, generation=False)
    assert r.detected and r.layer_named is False, (name, r.reported_layers)
