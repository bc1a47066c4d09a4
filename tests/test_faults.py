"""Fault injection: every planted bug makes the parity suite fail, naming the right component
and, for layer faults, the right layer. 100% detection is required."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from q3tts.verify.cases.suite import run_suite
from q3tts.verify.faults.catalogue import (
    CATALOGUE,
    SAMPLER_FAULTS,
    CleanRunError,
    clean_run,
    forward_is_bit_identical,
    run_fault,
)

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


# --- honest self-tests: a clean pass first, and a crash is not a catch -------------------------


def _by_name(name):
    return next(f for f in CATALOGUE if f.name == name)


def _raises(_original, _model):
    def replacement(*args, **kwargs):
        raise RuntimeError("planted crash")

    return replacement


def test_a_fault_caught_against_the_clean_run_records_its_numbers(load_models):
    fault = _by_name("temperature_after_filters")
    wrapper, standalone = load_models(fault.model_type, torch.float32)
    clean = clean_run(wrapper, standalone, torch.float32, [0], 12, f"faults-{fault.model_type}")
    r = run_fault(fault, wrapper, standalone, [0], 12, f"faults-{fault.model_type}", clean=clean)
    assert r.outcome == "caught" and r.ok and not r.crashed_cases
    assert r.clean_cases and r.clean_cases >= len(r.failing_cases)
    assert set(r.failing_metrics) == set(r.failing_cases)
    assert all(m["first_divergence"] is not None for m in r.failing_metrics.values())


def test_a_fault_that_only_raises_is_crashed_not_caught(load_models):
    """The same seam replaced by one that raises: every generation case fails, by an exception,
    which must not count as catching anything."""
    fault = dataclasses.replace(_by_name("temperature_after_filters"), name="sampler_raises", make=_raises)
    wrapper, standalone = load_models(fault.model_type, torch.float32)
    clean = clean_run(wrapper, standalone, torch.float32, [0], 12, f"faults-{fault.model_type}")
    r = run_fault(fault, wrapper, standalone, [0], 12, f"faults-{fault.model_type}", clean=clean)
    assert r.outcome == "crashed" and not r.detected and not r.ok
    assert r.crashed_cases and all(c.startswith("generation.") for c in r.crashed_cases)
    assert r.failing_cases == []


def test_a_self_test_refuses_a_run_that_is_not_clean(load_models):
    fault = _by_name("swapped_qk")
    wrapper, standalone = load_models(fault.model_type, torch.float32)
    with fault.inject(standalone), pytest.raises(CleanRunError, match="clean run fails"):
        clean_run(wrapper, standalone, torch.float32, [0], 12, f"faults-{fault.model_type}")


def test_a_standalone_forward_that_raises_is_a_failed_case_not_a_crashed_run(load_models):
    fault = dataclasses.replace(_by_name("text_projection_gelu"), name="projection_raises", make=_raises)
    wrapper, standalone = load_models(fault.model_type, torch.float32)
    clean = clean_run(wrapper, standalone, torch.float32, [0], 12, f"faults-{fault.model_type}")
    r = run_fault(fault, wrapper, standalone, [0], 12, f"faults-{fault.model_type}", clean=clean)
    assert r.crash == "" and "forward" in r.crashed_cases
    assert r.outcome == "crashed" and not r.detected
