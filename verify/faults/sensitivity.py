"""Knob sensitivity: would a bug in one sampling knob be visible in the generation cases?

Identical codes under seeded sampling prove little when a knob never decides which id a draw
picks (peaked fixture heads, a top-k larger than the vocabulary, equal talker and code-predictor
parameters). So for every knob of the sampler the standalone side is run with that knob moved by
the smallest meaningful step, on every generation plan of the run where the knob acts, and the
codes are compared with the standalone side's own unperturbed run: a plan whose codes change is
one in which a bug of that size would fail parity. A knob that changes no plan is a blind spot of
the verifier (``blind_knobs``); the tests require none.

Call arguments (temperatures, top-k, top-p, do_sample, the penalty) are perturbed as arguments.
What is not an argument goes through the runtime's seams, as the fault catalogue does: the two
branches of the repetition penalty (sampling.constrain_logits), min_new_tokens (the
GenerationParams that generation.generate_codes receives) and the suppressed range
(generation.suppress_mask_for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from q3tts.verify.cases.generation import CASES
from q3tts.verify.cases.suite import (
    generation_case_name,
    generation_plans,
    plan_inputs,
    run_standalone_generation,
)
from q3tts.verify.compare import DTYPE_NAMES, first_divergence
from q3tts.verify.faults.catalogue import (
    constrain_variant,
    generation_params_variant,
    patch_target,
    suppress_mask_variant,
)

# The plans measured: the plans of these cases at the first seed (the sampler regimes, the EOS
# cases and one left-padded batch per model type); of the batches only the sampler regimes.
SENSITIVITY_CASES = (
    "plain.streaming",
    "custom_voice.english",
    "voice_design.instruct",
    "clone.icl.streaming",
    "eos.second_draw",
    "eos.third_draw",
    "batch.custom_voice",
    "batch.voice_design",
    "batch.clone",
)

STEP = 0.05  # temperatures and the penalty: 5% of their usual values
TOP_P_STEP = 0.02


@dataclass(frozen=True)
class Perturbation:
    knob: str
    step: str
    applies: Callable[[dict], bool]  # on a plan's sampling kwargs
    arguments: Callable[[dict], dict] = lambda kw: kw  # perturbed call arguments
    seam: tuple[str, Callable[[Any, Any], Any]] | None = None  # or a seam-patched runtime

    @property
    def how(self) -> str:
        return f"seam {self.seam[0]}" if self.seam else "argument"

    def context(self, model):
        return patch_target(self.seam[0], self.seam[1], model) if self.seam else contextlib.nullcontext()


def _talker_samples(kw):
    return kw.get("do_sample", True)


def _subtalker_samples(kw):
    return kw.get("subtalker_dosample", True)


def _penalised(kw):
    return kw.get("repetition_penalty", 1.05) != 1.0


def _set(**changes):
    return lambda kw: {**kw, **{k: f(kw) for k, f in changes.items()}}


def _min_new_tokens(delta: int):
    return generation_params_variant(lambda p: dataclasses.replace(p, min_new_tokens=p.min_new_tokens + delta))


def _branch_off(negative: bool):
    """One branch of the penalty not taken (s < 0 left as s, or s > 0 left as s). A 5% change of
    the s < 0 branch alone changes at most 1 of 12 plans on the fixtures: penalised ids with
    negative logits rarely win a draw, and moving them by 5% of their logit rarely makes them."""
    if negative:
        return constrain_variant(negative=lambda s, p: s)
    return constrain_variant(positive=lambda s, p: s)


_GEN = "q3tts.standalone.generation"
_SAMPLING = "q3tts.standalone.sampling"

PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        "temperature", f"+{STEP}", _talker_samples, _set(temperature=lambda kw: kw.get("temperature", 0.9) + STEP)
    ),
    Perturbation(
        "subtalker_temperature",
        f"+{STEP}",
        _subtalker_samples,
        _set(subtalker_temperature=lambda kw: kw.get("subtalker_temperature", 0.9) + STEP),
    ),
    Perturbation(
        "top_k",
        "+1",
        lambda kw: _talker_samples(kw) and kw.get("top_k", 50) > 0,
        _set(top_k=lambda kw: kw.get("top_k", 50) + 1),
    ),
    Perturbation(
        "subtalker_top_k",
        "+1",
        lambda kw: _subtalker_samples(kw) and kw.get("subtalker_top_k", 50) > 0,
        _set(subtalker_top_k=lambda kw: kw.get("subtalker_top_k", 50) + 1),
    ),
    Perturbation(
        "top_p",
        f"-{TOP_P_STEP}",
        lambda kw: _talker_samples(kw) and kw.get("top_p", 1.0) < 1.0,
        _set(top_p=lambda kw: kw["top_p"] - TOP_P_STEP),
    ),
    Perturbation(
        "subtalker_top_p",
        f"-{TOP_P_STEP}",
        lambda kw: _subtalker_samples(kw) and kw.get("subtalker_top_p", 1.0) < 1.0,
        _set(subtalker_top_p=lambda kw: kw["subtalker_top_p"] - TOP_P_STEP),
    ),
    Perturbation("do_sample", "flipped", lambda kw: True, _set(do_sample=lambda kw: not _talker_samples(kw))),
    Perturbation(
        "subtalker_dosample", "flipped", lambda kw: True, _set(subtalker_dosample=lambda kw: not _subtalker_samples(kw))
    ),
    Perturbation(
        "repetition_penalty",
        f"+{STEP}",
        _penalised,
        _set(repetition_penalty=lambda kw: kw.get("repetition_penalty", 1.05) + STEP),
    ),
    Perturbation(
        "repetition_penalty (s<0: s*p)",
        "branch off",
        _penalised,
        seam=(f"{_SAMPLING}.constrain_logits", _branch_off(negative=True)),
    ),
    Perturbation(
        "repetition_penalty (s>0: s/p)",
        "branch off",
        _penalised,
        seam=(f"{_SAMPLING}.constrain_logits", _branch_off(negative=False)),
    ),
    Perturbation("min_new_tokens", "+1", lambda kw: True, seam=(f"{_GEN}.generate_codes", _min_new_tokens(+1))),
    Perturbation("min_new_tokens", "-1", lambda kw: True, seam=(f"{_GEN}.generate_codes", _min_new_tokens(-1))),
    Perturbation(
        "EOS suppression range",
        "start -1 id",
        lambda kw: True,
        seam=(f"{_GEN}.suppress_mask_for", suppress_mask_variant(-1)),
    ),
    Perturbation(
        "EOS suppression range",
        "start +1 id",
        lambda kw: True,
        seam=(f"{_GEN}.suppress_mask_for", suppress_mask_variant(+1)),
    ),
)


def sensitivity_plans(model_type: str, seeds: list[int]) -> list[tuple[Any, str, int]]:
    return [
        (case, mode, seed)
        for case in CASES
        if model_type in case.model_types and case.name in SENSITIVITY_CASES
        for mode, seed in generation_plans(case, seeds)
        if seed == seeds[0] and not (case.name.startswith("batch.") and mode in ("greedy", "sampled"))
    ]


def knob_sensitivity(
    wrapper,
    standalone,
    model_type: str,
    dtype: torch.dtype,
    seeds: list[int],
    frames: int,
    cache_key: str,
    until_first_change: bool = False,
) -> dict[str, Any]:
    """{"plans": n, "seconds": s, "rows": [{knob, step, how, applicable, changed, changed_cases}]}.

    ``until_first_change`` stops each knob at the first plan it changes (``changed`` is then 0 or
    1, ``applicable`` still counts every plan): enough to prove no knob is blind, at a fraction of
    the cost."""
    t0 = time.perf_counter()
    dname = DTYPE_NAMES[dtype]
    plans = []
    for case, mode, seed in sensitivity_plans(model_type, seeds):
        # Only the plan's inputs: the knobs move the standalone's codes against its own unperturbed run.
        _, _, st_kwargs, sampling, rng_seed = plan_inputs(
            wrapper, standalone, case, mode, seed, frames, dname, cache_key
        )
        codes, error = run_standalone_generation(standalone, st_kwargs, sampling, rng_seed)
        if error:
            raise RuntimeError(f"knob sensitivity: {generation_case_name(case, mode, seed)} fails unperturbed: {error}")
        plans.append((generation_case_name(case, mode, seed), st_kwargs, sampling, rng_seed, codes))
    # A change must come from the perturbation: the unperturbed side reproduces itself.
    name, st_kwargs, sampling, rng_seed, codes = plans[-1]
    if first_divergence(codes, run_standalone_generation(standalone, st_kwargs, sampling, rng_seed)[0]) is not None:
        raise RuntimeError(f"knob sensitivity: {name} is not reproducible from its seed")
    rows = []
    for p in PERTURBATIONS:
        applicable, changed = 0, []
        with p.context(standalone):
            for name, st_kwargs, sampling, rng_seed, base in plans:
                if not p.applies(sampling):
                    continue
                applicable += 1
                if until_first_change and changed:
                    continue
                codes, error = run_standalone_generation(standalone, st_kwargs, p.arguments(sampling), rng_seed)
                if error or first_divergence(base, codes) is not None:
                    changed.append(name)
        rows.append(
            {
                "knob": p.knob,
                "step": p.step,
                "how": p.how,
                "applicable": applicable,
                "changed": len(changed),
                "changed_cases": changed,
            }
        )
    return {"plans": len(plans), "seconds": time.perf_counter() - t0, "rows": rows}


def merge_sensitivity(per_run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum rows over runs (checkpoints), keyed by (knob, step)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for run in per_run:
        for r in run["rows"]:
            m = merged.setdefault((r["knob"], r["step"]), {**r, "applicable": 0, "changed": 0, "changed_cases": []})
            m["applicable"] += r["applicable"]
            m["changed"] += r["changed"]
            m["changed_cases"] = m["changed_cases"] + r["changed_cases"]
    return list(merged.values())


def blind_knobs(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{r['knob']} {r['step']}" for r in rows if r["changed"] == 0]
