"""The verifier sees sampler bugs (issue 19) and its faults go through explicit seams (issue 14).

- every sampling knob, moved by a small step, changes the codes in some generation plan of the
  default run (so a future fixture or case change cannot silently blind the verifier again);
- the three sampler bugs that once passed everything fail the default generation cases, naming
  generation and the sampler or regime they hit;
- every fault and perturbation target resolves, and a stale one is an error naming it.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import q3tts.standalone.generation as gen_mod
import q3tts.standalone.model as model_mod
from q3tts.standalone import Qwen3TTS
from q3tts.verify.cases.suite import generation_results
from q3tts.verify.faults import catalogue as faults
from q3tts.verify.faults.catalogue import CATALOGUE, SAMPLER_FAULTS, SeamError, patch_target, resolve_target
from q3tts.verify.faults.sensitivity import PERTURBATIONS, blind_knobs, knob_sensitivity, merge_sensitivity
from q3tts.verify.fixtures.writer import MODEL_TYPES

# What `verify-parity` without arguments runs (verify/cli.py defaults).
DEFAULT_SEEDS, DEFAULT_FRAMES = [0, 1], 24


def test_every_fault_target_resolves(checkpoints):
    """Resolve every seam without running anything: a renamed runtime function, class attribute
    or model attribute fails here, not silently in the self-test."""
    models = {mt: Qwen3TTS.from_pretrained(checkpoints[mt][1]) for mt in MODEL_TYPES}
    for fault in CATALOGUE:
        for target, _ in fault.seams():
            owner, attr, _ = resolve_target(target, models[fault.model_type])
            assert hasattr(owner, attr)
    for p in PERTURBATIONS:
        if p.seam:
            resolve_target(p.seam[0])


@pytest.mark.parametrize(
    "target",
    [
        "q3tts.standalone.generation.decode_codes",  # renamed to generate_codes
        "q3tts.standalone.generation.positions_3d",  # moved to layers.mrope_positions
        "q3tts.standalone.nonexistent.thing",
    ],
)
def test_stale_target_is_an_error_naming_it(target):
    with pytest.raises(SeamError, match=target.split(".")[-1]):
        resolve_target(target)


def test_model_target_needs_a_model_and_names_the_missing_part(checkpoints):
    with pytest.raises(SeamError, match="needs a loaded model"):
        resolve_target("talker.inv_freq")
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1])
    with pytest.raises(SeamError, match="'q_norms'"):
        resolve_target("talker.decoder.layers.1.attn.q_norms", model)


def test_faults_patch_through_seams_only():
    assert "mock.patch" not in inspect.getsource(faults)


def test_a_seam_reaches_every_alias_and_is_restored():
    real = gen_mod.generate_codes
    assert model_mod.generate_codes is real  # model.py holds a from-import alias
    with patch_target("q3tts.standalone.generation.generate_codes", lambda orig, _m: lambda *a, **k: orig(*a, **k)):
        assert gen_mod.generate_codes is not real and model_mod.generate_codes is gen_mod.generate_codes
    assert gen_mod.generate_codes is real and model_mod.generate_codes is real


def test_catalogue_has_the_sampler_mutants():
    names = set(SAMPLER_FAULTS)
    assert len(names) >= 8
    assert names >= {
        "subtalker_temperature",
        "top_k_plus_one",
        "penalty_divides_negative",
        "talker_subtalker_swapped",
        "top_p_strict",
        "top_k_ties",
        "min_new_tokens_off_by_one",
        "suppression_off_by_one",
        "temperature_twice",
    }
    assert all(f.component == "generation" for f in CATALOGUE if f.name in names)


def test_every_knob_changes_codes_in_the_default_run(load_models):
    per_type = []
    for mt in MODEL_TYPES:
        wrapper, standalone = load_models(mt, torch.float32)
        per_type.append(
            knob_sensitivity(
                wrapper,
                standalone,
                mt,
                torch.float32,
                DEFAULT_SEEDS,
                DEFAULT_FRAMES,
                f"default-{mt}",
                until_first_change=True,
            )
        )
    rows = merge_sensitivity(per_type)
    knobs = {r["knob"] for r in rows}
    assert knobs >= {
        "temperature",
        "subtalker_temperature",
        "top_k",
        "subtalker_top_k",
        "top_p",
        "subtalker_top_p",
        "do_sample",
        "subtalker_dosample",
        "repetition_penalty",
        "repetition_penalty (s<0: s*p)",
        "repetition_penalty (s>0: s/p)",
        "min_new_tokens",
        "EOS suppression range",
    }
    table = "\n".join(f"{r['knob']} {r['step']}: {r['changed']}/{r['applicable']}" for r in rows)
    assert not blind_knobs(rows), f"knobs no generation plan can see:\n{table}"
    assert all(r["applicable"] > 0 for r in rows), table


# The bugs of issue 19, and what the failing cases must name: the sampler that drew the first
# differing id, or the regime that makes the knob act.
PLANTED = {
    "subtalker_temperature": lambda r: "code predictor" in r.note,
    "top_k_plus_one": lambda r: ".split_top_k." in r.case and "top_k" in r.note,
    "penalty_divides_negative": lambda r: ".hot_penalty." in r.case and "penalty" in r.note,
}


def _default_generation(load_models, mt):
    wrapper, standalone = load_models(mt, torch.float32)
    return generation_results(wrapper, standalone, mt, torch.float32, DEFAULT_SEEDS, DEFAULT_FRAMES, f"default-{mt}")


@pytest.fixture(scope="module")
def clean_default_generation(load_models):
    """clean(model_type): the default generation cases without a fault, run once per model type
    for every planted bug below (only for the types a bug gets to): they must pass."""
    done: dict[str, list] = {}

    def clean(mt: str) -> list:
        if mt not in done:
            done[mt] = _default_generation(load_models, mt)
        return done[mt]

    return clean


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_sampler_bug_fails_the_default_generation_cases(load_models, clean_default_generation, name):
    fault = next(f for f in CATALOGUE if f.name == name)
    failing = []
    for mt in MODEL_TYPES:  # until a model type's cases catch it, naming the knob (the default run has all three)
        assert all(r.passed for r in clean_default_generation(mt)), mt
        with fault.inject(load_models(mt, torch.float32)[1]):
            results = _default_generation(load_models, mt)
        failing += [r for r in results if not r.passed]
        if any(PLANTED[name](r) for r in failing):
            break
    assert failing, f"{name} ({fault.description}) passes every generation case"
    assert {r.component for r in failing} == {"generation"}
    named = [r.case for r in failing if PLANTED[name](r)]
    assert named, f"{name}: no failing case names the knob or sampler: {[(r.case, r.note) for r in failing]}"
