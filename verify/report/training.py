"""The training section of verify-parity (``--training``) and the training faults' self-test rows.

The section holds the upstream-recipe parity (loss, logits, every gradient and one row per
parameter group, in each dtype) and the teacher-forcing consistency check of both recipes. It
passes when the parity passes, the aligned recipe is consistent with generation, and the upstream
recipe is not: a consistency check that stops seeing upstream's misalignment has lost its edge,
and that is reported as a failure too.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from q3tts.verify.compare import DTYPE_NAMES

# The training fixture: a tiny Base model whose text width equals the talker width (so
# upstream's recipe, which adds raw text embeddings, runs on it, as it does at 1.7B).
TRAINING_FIXTURE_GROUPS = 4


def training_section(work: Path, dtypes) -> dict:
    """Build the training fixture in ``work`` and run everything the section reports."""
    from q3tts.verify.cases.training import run_training_parity, write_training_fixture

    t0 = time.perf_counter()
    up, st = write_training_fixture(work, num_code_groups=TRAINING_FIXTURE_GROUPS)
    section = run_training_parity(up, st, dtypes=tuple(dtypes))
    section["fixture"] = (
        f"tiny Base checkpoint, {TRAINING_FIXTURE_GROUPS} code groups, text width = talker width "
        "(verify/cases/training.py write_training_fixture)"
    )
    aligned = next(c for c in section["consistency"] if c["recipe"] == "aligned")
    upstream = next(c for c in section["consistency"] if c["recipe"] == "upstream")
    section["checks"] = {
        "upstream_recipe_parity": all(p["passed"] for p in section["parity"]),
        "aligned_consistent_with_generation": aligned["passed"],
        # Inconsistent by its numbers: a forward that raised proves nothing about the check's edge.
        "upstream_recipe_inconsistent_with_generation": not upstream["passed"] and not upstream.get("error"),
    }
    section["passed"] = all(section["checks"].values())
    section["seconds"] = time.perf_counter() - t0
    return section


def training_dtypes(dtype_names) -> list[torch.dtype]:
    from q3tts.verify.compare import DTYPES

    return [DTYPES[d] for d in dtype_names]


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    verdict = "" if c["passed"] else " **FAIL**"
    return f"{_num(c['max_abs'])} (bound {_num(c['bound'])}){verdict}"


def _num(x) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, ".2e")


def render_training(report: dict) -> list[str]:
    sec = report.get("training")
    if not sec:
        return []
    checks = sec["checks"]
    lines = [
        "",
        f"## Training: {'PASS' if sec['passed'] else 'FAIL'}",
        "",
        f"{sec['fixture']}; upstream's step is sft_12hz.py at {sec['sft_commit'][:7]} on upstream's own model "
        f"methods, the batch laid out as its dataset.py does; {sec['seconds']:.1f} s.",
        "",
        f"- upstream-recipe parity (loss, logits, every gradient): {'pass' if checks['upstream_recipe_parity'] else 'FAIL'}",
        f"- aligned recipe consistent with generation: {'yes' if checks['aligned_consistent_with_generation'] else 'NO'}",
        f"- upstream recipe inconsistent with generation (expected): "
        f"{'yes' if checks['upstream_recipe_inconsistent_with_generation'] else 'NO (the check lost its edge)'}",
        "",
        "### Upstream-recipe parity (max |upstream - standalone|)",
        "",
        "| dtype | verdict | loss | talker loss | code-predictor loss | talker logits | code-predictor logits "
        "| per-parameter gradients |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sec["parity"]:
        by = {c["case"]: c for c in p["comparisons"]}
        grads = [c for c in p["comparisons"] if c["case"].startswith("grad.")]
        bad = [c for c in grads if not c["passed"]]
        worst = max((c["max_abs"] for c in grads), default=0.0)
        g_cell = f"{len(grads)} compared, max {_num(worst)}" + (f", **{len(bad)} FAIL**" if bad else "")
        if p["missing_gradients"]:
            g_cell += f", **{len(p['missing_gradients'])} missing on one side**"
        lines.append(
            f"| {p['dtype']} | {'PASS' if p['passed'] else 'FAIL'} | "
            + " | ".join(
                _cell(by.get(f"train.{n}"))
                for n in ("loss", "talker_loss", "code_predictor_loss", "talker_logits", "code_predictor_logits")
            )
            + f" | {g_cell} |"
        )
    lines += ["", "| dtype | parameter group | max abs | bound | cosine |", "|---|---|---|---|---|"]
    for p in sec["parity"]:
        for c in p["comparisons"]:
            if c["case"].startswith("grad_group."):
                lines.append(
                    f"| {p['dtype']} | {c['case'].removeprefix('grad_group.')} | {_num(c['max_abs'])}"
                    f"{'' if c['passed'] else ' **FAIL**'} | {_num(c['bound'])} | {c['cosine']:.7f} |"
                )
    failing = [(p["dtype"], c) for p in sec["parity"] for c in p["comparisons"] if not c["passed"]]
    if failing:
        lines += ["", "Failing comparisons: " + ", ".join(f"{d} {c['case']}" for d, c in failing[:40])]
    raised = [f"- {p['dtype']}: {p['error']}" for p in sec["parity"] if p.get("error")]
    if raised:
        lines += ["", "The standalone's training step raised (no comparison could be made):", *raised]
    lines += [
        "",
        "### Teacher-forcing consistency with generation (fp32)",
        "",
        "Greedy generation with the standalone decode loop; then one training forward over the generated codes. "
        "Every logit a recipe scores against a target must equal the logit generation sampled that target from.",
        "",
        "| recipe | expected | result | frames x groups | talker max abs diff | code-predictor max abs diff "
        "| bound | where it differs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in sec["consistency"]:
        expected = "consistent" if c["recipe"] == "aligned" else "inconsistent"
        result = "consistent" if c["passed"] else "inconsistent"
        finite = [v for v in c["code_predictor_max_abs"].values() if not _is_inf(v)]
        cp = _num(max(finite)) if finite else "inf"
        if len(finite) < len(c["code_predictor_max_abs"]):
            cp += f" (groups {c['untrained_groups']} never trained)"
        where = _where(c)
        shown = result if result == expected else f"**{result}**"
        lines.append(
            f"| {c['recipe']} | {expected} | {shown} | {c['frames']} x "
            f"{c['groups']} | {_num(c['talker_max_abs'])} | {cp} | {_num(c['bound'])} | {where} |"
        )
    return lines


def _is_inf(v) -> bool:
    return v in ("inf", "-inf") or (isinstance(v, float) and math.isinf(v))


def _where(c: dict) -> str:
    if c.get("error"):
        return c["error"]
    parts = []
    if c["talker_first_bad"] is not None:
        parts.append(f"group 0 from frame {c['talker_first_bad']}")
    if c["code_predictor_first_bad"] is not None:
        f, g = c["code_predictor_first_bad"]
        parts.append(f"code predictor from frame {f} group {g}")
    bad = {k: v for k, v in c["loss_diffs"].items() if not _is_inf(v) and v > c["bound"]}
    if bad:
        parts.append("losses off by " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()))
    return "; ".join(parts) or "-"


# --------------------------------------------------------------------------------------------
# Self-test
def training_fault_rows(fault_names, say) -> list:
    """Each training fault planted in the standalone training forward, run through the training
    section's checks (fp32); one ``FaultResult`` per fault. Caught = the upstream-recipe parity
    fails on the comparisons the fault must break and the aligned consistency check fails."""
    import tempfile

    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.forward import load_upstream, speech_like_waveform
    from q3tts.verify.cases.training import (
        greedy_generate_recorded,
        make_items,
        run_consistency_check,
        run_upstream_recipe_parity,
        standalone_speaker_embedding,
        write_training_fixture,
    )
    from q3tts.verify.faults.catalogue import CleanRunError, FaultResult
    from q3tts.verify.faults.training import TRAINING_FAULTS

    faults = [f for f in TRAINING_FAULTS if fault_names is None or f.name in fault_names]
    if not faults:
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="verify-selftest-train-") as work:
        up_dir, st_dir = write_training_fixture(Path(work), num_code_groups=TRAINING_FIXTURE_GROUPS)
        up, st = load_upstream(up_dir, torch.float32), Qwen3TTS.from_pretrained(st_dir, dtype=torch.float32)
        wav = speech_like_waveform(0)
        spk = standalone_speaker_embedding(st, wav, 1)[0]
        tok = st.text_tokenizer
        record = greedy_generate_recorded(st, torch.tensor([tok.encode(tok.assistant_text("hello there"))]), spk)
        items = make_items(st, 0)

        def checks():
            parity = run_upstream_recipe_parity(up, st, items, wav, torch.float32)
            return parity, run_consistency_check(st, "aligned", record=record, speaker_embedding=spk)

        clean_parity, clean_consistency = checks()  # the same checks without a fault must pass first
        if not (clean_parity.passed and clean_consistency.passed):
            raise CleanRunError(
                f"the clean training checks fail ({sorted(c.case for c in clean_parity.failing())}, aligned "
                f"consistency {'passes' if clean_consistency.passed else 'fails'}): a self-test needs a clean pass"
            )
        say("  clean  fp32 training: upstream-recipe parity and aligned consistency pass")
        for fault in faults:
            try:
                with fault.inject():
                    parity, consistency = checks()
            except Exception as e:  # crashed, not caught
                rows.append((DTYPE_NAMES[torch.float32], _crashed_row(fault, e)))
                say(f"  CRASHED  fp32 {fault.name:26} {fault.description}; the checks raised {type(e).__name__}: {e}")
                continue
            failing = sorted(c.case for c in parity.failing())
            named = [c for c in fault.parity_cases if c in failing]
            cases = failing + ([] if consistency.passed else ["consistency.aligned"])
            r = FaultResult(
                fault.name,
                fault.description,
                detected=not parity.passed and not consistency.passed,
                component_named=len(named) == len(fault.parity_cases),
                layer_named=None,
                failing_components=["training"] if cases else [],
                reported_layers=named,
                failing_cases=cases,
            )
            rows.append((DTYPE_NAMES[torch.float32], r))
            say(
                f"  {'caught' if r.ok else 'MISSED'}  fp32 {fault.name:26} {fault.description}; failing: "
                f"{len(failing)} parity comparisons ({', '.join(named) or 'not the expected ones'}); aligned "
                f"consistency {'fails' if not consistency.passed else 'PASSES'}"
            )
    return rows


def _crashed_row(fault, e: Exception):
    from q3tts.verify.faults.catalogue import FaultResult

    return FaultResult(fault.name, fault.description, False, False, None, [], [], crash=f"{type(e).__name__}: {e}")
