"""How a qwentts.cpp run is judged, per GGUF quantisation.

Every check ends in one of three states: passed, failed (a **problem**), or **not checked** (the
engine did not dump what it needs, or gave nothing to compare). A run passes only when nothing
failed and nothing went unchecked; "not checked" makes the verdict INCOMPLETE, never a pass.

- Codes, teacher-forced (verify/engines/forcing.py): the standalone model is fed the engine's
  codes and picks at every position (frame, group). At F32 every engine code must be that pick or
  a proven near-tie: the standalone's logit margin between its pick and the engine's code is
  within twice the measured logit distance (each of the two logits may be off by the distance).
  The distance is the prefill logits' max abs difference, the one logit vector the binding dumps,
  capped at that stage's tolerance (beyond it the run fails anyway). Below F32 the distributions
  are judged: agreement over all positions and in the worst code group, each over a floor.
- Stages: the engine's dumps against the standalone's; at F32 the prefill stages and the talker
  state after the engine's frame 0, at every quantisation the Base case's x-vector (spk-emb).
- Audio: the engine's decode of its own codes against the standalone codec on the same codes
  (SNR floor, log-mel bound); no audio for frames the engine made is a failure.
- An engine error (loading or synthesis) is a failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from q3tts.verify.compare import ENGINE_AUDIO_SNR_DB_MIN as AUDIO_SNR_DB_MIN
from q3tts.verify.compare import ENGINE_LOG_MEL_MAX as LOG_MEL_MAX
from q3tts.verify.compare import ENGINE_SPK_EMB_REL_MAX as SPK_EMB_REL_MAX
from q3tts.verify.compare import ENGINE_STAGE_ATOL as STAGE_ATOL
from q3tts.verify.compare import ENGINE_TF_AGREEMENT_MIN as TF_AGREEMENT_MIN
from q3tts.verify.compare import ENGINE_TF_GROUP_MIN as TF_GROUP_MIN
from q3tts.verify.engines.forcing import ForcedLogits, disagreements

LOGITS_STAGE = "talker-logits-prefill"


def group_name(group: int) -> str:
    return "talker group 0" if group == 0 else f"code-predictor group {group}"


def tolerances(quant: str) -> dict[str, Any]:
    """The bounds a run at ``quant`` is held to (also written into its report)."""
    f32 = quant == "F32"
    return {
        "prompt_ids": "identical",
        "stage_atol": dict(STAGE_ATOL) if f32 else None,
        "spk_emb_rel_max": SPK_EMB_REL_MAX.get(quant),
        "codes": "every disagreement a proven near-tie" if f32 else None,
        "codes_agreement_min": TF_AGREEMENT_MIN.get(quant),
        "codes_group_agreement_min": TF_GROUP_MIN.get(quant),
        "audio_snr_db_min": AUDIO_SNR_DB_MIN.get(quant),
        "log_mel_l1_max": LOG_MEL_MAX.get(quant),
    }


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def expected_stages(quant: str, with_ref_audio: bool, with_frames: bool) -> dict[str, tuple[str, float]]:
    """Stage name -> (metric, bound) that a run at ``quant`` must dump and meet."""
    out: dict[str, tuple[str, float]] = {}
    if quant == "F32":
        out = {k: ("max_abs", v) for k, v in STAGE_ATOL.items() if k != "talker-hidden-step1" or with_frames}
    if with_ref_audio and quant in SPK_EMB_REL_MAX:
        out["spk-emb"] = ("rel_max_abs", SPK_EMB_REL_MAX[quant])
    return out


def compare_stages(ref: dict[str, Any], eng: dict[str, np.ndarray], expected: dict[str, tuple[str, float]]):
    """Prompt ids and each expected stage, against the standalone side ``ref``. A stage the engine
    did not dump (or the standalone could not compute) is ``ok: None`` and listed in
    ``not_checked``; ``first_bad`` names the first failing one."""
    ids = list(ref["prompt-ids"])
    out: dict[str, Any] = {"stages": {}, "first_bad": None, "not_checked": []}
    if "prompt-ids" not in eng:
        out["stages"]["prompt-ids"] = {"ok": None, "note": "not dumped by the engine"}
        out["not_checked"].append("prompt-ids")
    else:
        eng_ids = eng["prompt-ids"].astype(np.int64).tolist()
        diff = _first_difference(ids, eng_ids)
        out["stages"]["prompt-ids"] = {
            "ok": diff is None,
            "ref_len": len(ids),
            "engine_len": len(eng_ids),
            "first_difference": diff,
        }
    for name, (metric, bound) in expected.items():
        out["stages"][name] = _stage(ref.get(name), eng.get(name), metric, bound)
    for name, entry in out["stages"].items():
        if entry["ok"] is None and name not in out["not_checked"]:
            out["not_checked"].append(name)
        if entry["ok"] is False and out["first_bad"] is None:
            out["first_bad"] = name
    return out


def _stage(ref, eng, metric: str, bound: float) -> dict[str, Any]:
    if eng is None:
        return {"ok": None, "note": "not dumped by the engine"}
    if ref is None:
        return {"ok": None, "note": "not computed on the standalone side"}
    r = ref.float().cpu().numpy() if hasattr(ref, "float") else np.asarray(ref, np.float32)
    e = np.asarray(eng, np.float32)
    if r.size != e.size:
        return {"ok": False, "note": f"shape {r.shape} vs engine {e.shape}"}
    d = float(np.abs(r.reshape(e.shape) - e).max())
    if metric == "rel_max_abs":
        d /= max(float(np.abs(r).max()), 1e-12)
    ok = bool(np.isfinite(d) and d <= bound)
    return {"ok": ok, metric: d, "bound": bound}


def _first_difference(a, b) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def logit_distance(stages: dict[str, Any] | None) -> float | None:
    """The measured engine-vs-standalone logit distance near-ties are judged by: the prefill
    logits' max abs, capped at that stage's tolerance. None when the engine did not dump them."""
    entry = (stages or {}).get("stages", {}).get(LOGITS_STAGE) or {}
    d = entry.get("max_abs")
    return None if d is None else min(d, STAGE_ATOL[LOGITS_STAGE])


# --------------------------------------------------------------------------------------------
# Codes, teacher-forced
# --------------------------------------------------------------------------------------------


def teacher_forced(forced: ForcedLogits, codes: np.ndarray, quant: str, distance: float | None) -> dict[str, Any]:
    """Agreement of the engine's codes with the standalone's picks on the engine's history;
    at F32 each disagreement classified as a near-tie (margin <= 2 x distance) or not."""
    n, diffs = disagreements(forced, codes)
    groups = codes.shape[1]
    counts = np.zeros(groups, int)
    counts[0] = forced.group0.shape[0]
    counts[1:] = forced.residual.shape[0]
    wrong = np.zeros(groups, int)
    for d in diffs:
        wrong[d.group] += 1
    per_group = [float(1 - w / c) if c else None for w, c in zip(wrong, counts)]
    judged = [g for g in range(groups) if counts[g]]
    worst = min(judged, key=lambda g: per_group[g]) if judged else None
    bound = None if distance is None else 2 * distance
    rows = [{**d.__dict__, "near_tie": bound is not None and d.margin <= bound} for d in diffs]
    return {
        "positions": n,
        "agreeing": n - len(diffs),
        "fraction": (n - len(diffs)) / n if n else None,
        "per_group": per_group,
        "group_positions": counts.tolist(),
        "worst_group": None
        if worst is None
        else {"group": worst, "fraction": per_group[worst], "frames": int(counts[worst])},
        "logit_distance": distance,
        "near_tie_bound": bound,
        "disagreements": rows,
        "rule": "near-tie proof" if quant == "F32" else "floors",
    }


def judge_codes(tf: dict[str, Any], quant: str, problems: list[str], notes: list[str]) -> None:
    if quant == "F32":
        _judge_f32_codes(tf, problems, notes)
        return
    floor, group_floor = TF_AGREEMENT_MIN.get(quant), TF_GROUP_MIN.get(quant)
    frac, worst = tf["fraction"], tf["worst_group"]
    if frac is not None and floor is not None and frac < floor:
        problems.append(
            f"teacher-forced codes: {tf['agreeing']} of {tf['positions']} engine codes are the standalone's pick "
            f"on the engine's history ({frac:.3f} < floor {floor})"
        )
    low = [
        (g, f) for g, f in enumerate(tf["per_group"]) if f is not None and group_floor is not None and f < group_floor
    ]
    if low:
        n = tf["group_positions"]
        groups = ", ".join(f"{group_name(g)} ({f:.3f} of {n[g]} frames)" for g, f in low)
        problems.append(f"teacher-forced codes: agreement under the group floor {group_floor} in {groups}")
    if tf["disagreements"]:
        notes.append(
            f"teacher-forced codes: {tf['agreeing']} of {tf['positions']} agree ({frac:.3f}); worst "
            f"{group_name(worst['group'])} at {worst['fraction']:.3f} (floors {floor} overall, {group_floor} per group)"
        )


def _judge_f32_codes(tf: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    ties = [d for d in tf["disagreements"] if d["near_tie"]]
    bugs = [d for d in tf["disagreements"] if not d["near_tie"]]
    bound = tf["near_tie_bound"]
    if bugs:
        d = bugs[0]
        why = (
            "no measured logit distance (prefill logits not dumped)"
            if bound is None
            else f"> near-tie bound {bound:.3g}"
        )
        problems.append(
            f"teacher-forced codes: {len(bugs)} of {tf['positions']} engine codes are neither the standalone's pick "
            f"on the engine's history nor a near-tie; first at frame {d['frame']}, {group_name(d['group'])} "
            f"(engine {d['engine']}, standalone {d['standalone']}, logit margin {d['margin']:.3g} {why})"
        )
    for d in ties:
        notes.append(
            f"near-tie at frame {d['frame']}, {group_name(d['group'])}: engine {d['engine']}, standalone "
            f"{d['standalone']}, logit margin {d['margin']:.3g} <= {bound:.3g} (2 x logit distance {bound / 2:.3g})"
        )


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------


def classify(report: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(problems, notes, not checked) of one run's report."""
    quant, problems, notes, unchecked = report["quant"], [], [], []
    if quant not in LOG_MEL_MAX:
        unchecked.append(f"codes and audio: no measured bounds for {quant} (known: {', '.join(LOG_MEL_MAX)})")
    if report.get("engine_error"):
        problems.append(f"engine error: {report['engine_error']}")
    p = report["prompt_ids"]
    if p["identical"] is False:
        problems.append(
            f"prompt ids differ at position {p['first_difference']} ({p['ref_len']} vs {p['engine_len']} ids): "
            "tokenizer / special-token conversion"
        )
    audit = report.get("audit")
    if audit is None:
        unchecked.append("static audit: no upstream checkpoint given")
    else:
        problems += audit["problems"]
    stages = report["stages"]
    for name, entry in stages["stages"].items():
        if entry["ok"] is False and name != "prompt-ids":
            problems.append(f"stage {name}: {_stage_text(entry)}")
    unchecked += [f"stage {n}: {stages['stages'][n].get('note', 'not available')}" for n in stages["not_checked"]]
    _classify_codes(report, quant, problems, notes, unchecked)
    _classify_audio(report, quant, problems, unchecked)
    return problems, notes, unchecked


def _stage_text(entry: dict[str, Any]) -> str:
    if "note" in entry:
        return entry["note"]
    metric = "rel max abs" if "rel_max_abs" in entry else "max abs"
    value = entry.get("rel_max_abs", entry.get("max_abs"))
    return f"{metric} {value:.3g} > {entry['bound']:.3g}"


def _classify_codes(report, quant: str, problems: list[str], notes: list[str], unchecked: list[str]) -> None:
    tf = report["teacher_forced"]
    if tf.get("error"):
        problems.append(f"teacher-forced codes: {tf['error']}")
    elif not tf.get("positions"):
        unchecked.append("teacher-forced codes: the engine returned no codes")
    else:
        judge_codes(tf, quant, problems, notes)
    fd = report["codes"]["first_divergence"]
    if fd is not None:
        notes.append(
            f"free-running greedy codes diverge at frame {fd['frame']}, {group_name(fd['group'])} "
            "(each side then follows its own history; judged teacher-forced)"
        )


def _classify_audio(report, quant: str, problems: list[str], unchecked: list[str]) -> None:
    a = report["audio_from_engine_codes"]
    frames = report["codes"]["frames_engine"]
    if frames and not a.get("length_engine"):
        problems.append(f"the engine returned no audio for its {frames} frames")
        return
    if not frames:
        unchecked.append("audio: the engine produced no frames")
        return
    if a.get("length_engine") != a.get("length_ref"):
        problems.append(
            f"audio length {a.get('length_engine')} samples, the standalone decode of the same codes {a.get('length_ref')}"
        )
    floor, mel_max = AUDIO_SNR_DB_MIN.get(quant), LOG_MEL_MAX.get(quant)
    snr, mel = a.get("snr_db"), a.get("log_mel_l1")
    if snr is None or mel is None:
        unchecked.append("audio: too short for SNR and log-mel")
        return
    if floor is None or mel_max is None:
        return  # classify named the missing bounds
    if snr < floor:
        problems.append(f"audio from the engine's codes: SNR {snr:.1f} dB < {floor} dB (codec conversion)")
    if mel > mel_max:
        problems.append(f"audio from the engine's codes: log-mel L1 {mel:.3f} > {mel_max} (codec conversion)")
