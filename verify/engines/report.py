"""The Markdown of ``verify-parity --engine qwentts.cpp``: one row per checkpoint and GGUF
quantisation, each run's failures, unchecked items and notes, and per quantisation the worst clean
measurement next to its bound (the headroom the bounds leave, from this very run)."""

from __future__ import annotations

from typing import Any

from q3tts.verify.compare import format_number
from q3tts.verify.engines.judge import group_name


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def run_verdict(reports: list[dict[str, Any]]) -> str:
    """PASS only when every run passed; FAIL when one failed; else INCOMPLETE (something was not
    checked, which never counts as a pass)."""
    if any(r["problems"] for r in reports):
        return "FAIL"
    if any(r["not_checked"] for r in reports) or not reports:
        return "INCOMPLETE"
    return "PASS"


def _codes_cell(r: dict[str, Any]) -> str:
    tf = r["teacher_forced"]
    if not tf.get("positions"):
        return "ERROR: " + tf["error"] if tf.get("error") else "not checked"
    worst = tf["worst_group"]
    cell = f"{tf['agreeing']}/{tf['positions']}; worst {group_name(worst['group'])} {worst['fraction']:.2f}"
    if tf["rule"] == "near-tie proof":
        ties = sum(d["near_tie"] for d in tf["disagreements"])
        bugs = len(tf["disagreements"]) - ties
        cell += f"; {ties} near-tie(s), {bugs} not (bound {_fmt(tf['near_tie_bound'])})"
    return cell


def _stages_cell(r: dict[str, Any]) -> str:
    st = r["stages"]
    names = [n for n in st["stages"] if n != "prompt-ids"]
    if st["first_bad"]:
        return f"FAIL at {st['first_bad']}"
    if st["not_checked"]:
        return "not dumped: " + ", ".join(st["not_checked"])
    return f"{len(names)} within" if names else "-"


def render_markdown(reports: list[dict[str, Any]]) -> str:
    """The runs' table, then each run's failures (bug), unchecked items and notes."""
    lines = [
        "| checkpoint | model type | quant | prompt ids | teacher-forced codes: agree / positions; worst group | "
        "free-running identical frames | spk-emb rel (bound) | audio SNR dB (floor) | log-mel L1 (max) | stages | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        c, a, p, t = r["codes"], r["audio_from_engine_codes"], r["prompt_ids"], r["tolerances"]
        spk = r["stages"]["stages"].get("spk-emb")
        ids = {True: "identical", False: f"DIFFER at {p['first_difference']}", None: "not dumped"}[p["identical"]]
        lines.append(
            f"| {r.get('checkpoint', '-')} | {r['model_type']} | {r['quant']} | {ids} ({p['engine_len']}) | "
            f"{_codes_cell(r)} | {c['identical_frames']} of {c['compared_frames']} | "
            f"{'-' if spk is None else _fmt(spk.get('rel_max_abs')) + ' (' + _fmt(spk.get('bound')) + ')'} | "
            f"{_fmt(a.get('snr_db'), '.1f')} ({t['audio_snr_db_min']}) | "
            f"{_fmt(a.get('log_mel_l1'))} ({t['log_mel_l1_max']}) | {_stages_cell(r)} | {r['verdict']} |"
        )
    lines.append("")
    for r in reports:
        tag = f"{r.get('checkpoint', r['model_type'])} {r['quant']}"
        lines += [f"- **bug** ({tag}): {m}" for m in r["problems"]]
        lines += [f"- **not checked** ({tag}): {m}" for m in r["not_checked"]]
        lines += [f"- note ({tag}): {m}" for m in r["notes"]]
    capped = [r for r in reports if r["codes"].get("length_note")]
    if capped:
        lines.append(
            f"- length ({len(capped)} of {len(reports)} runs): {capped[0]['codes']['length_note']} "
            "(upstream's last group-0 id gets no residual codes); not counted as a divergence"
        )
    return "\n".join(lines) + "\n"


def _worst(rows: list[dict[str, Any]], get, lowest: bool):
    values = [v for v in (get(r) for r in rows) if v is not None]
    if not values:
        return None
    return min(values) if lowest else max(values)


def headroom_table(reports: list[dict[str, Any]]) -> str:
    """Per quantisation, over the runs that passed: the worst measurement of each bounded check,
    its bound and the headroom (bound / worst for upper bounds, worst - floor for floors)."""
    lines = ["| quant | check | worst clean | bound | headroom |", "|---|---|---|---|---|"]
    checks = [
        ("log-mel L1", lambda r: r["audio_from_engine_codes"].get("log_mel_l1"), "log_mel_l1_max", False),
        ("audio SNR dB", lambda r: r["audio_from_engine_codes"].get("snr_db"), "audio_snr_db_min", True),
        ("teacher-forced agreement", lambda r: r["teacher_forced"].get("fraction"), "codes_agreement_min", True),
        (
            "worst group agreement",
            lambda r: (r["teacher_forced"].get("worst_group") or {}).get("fraction"),
            "codes_group_agreement_min",
            True,
        ),
    ]
    for quant in dict.fromkeys(r["quant"] for r in reports):
        rows = [r for r in reports if r["quant"] == quant and r["ok"]]
        for label, get, key, floor in checks:
            worst, bound = _worst(rows, get, lowest=floor), rows[0]["tolerances"][key] if rows else None
            if worst is not None and bound is not None:
                lines.append(_headroom_row(quant, label, worst, bound, floor))
        for name in dict.fromkeys(n for r in rows for n in r["stages"]["stages"] if n != "prompt-ids"):
            entries = [r["stages"]["stages"].get(name) or {} for r in rows]
            values = [e.get("max_abs", e.get("rel_max_abs")) for e in entries]
            if any(v is not None for v in values):
                metric = "rel max abs" if "rel_max_abs" in entries[0] else "max abs"
                worst = max(v for v in values if v is not None)
                lines.append(_headroom_row(quant, f"stage {name} ({metric})", worst, entries[0]["bound"], False))
    return "\n".join(lines) + "\n"


def _headroom_row(quant: str, label: str, worst: float, bound: float, floor: bool) -> str:
    room = f"{worst - bound:+.3g}" if floor else (f"{bound / worst:.3g}x" if worst else "inf")
    return f"| {quant} | {label} | {format_number(worst, '.3g')} | {bound} | {room} |"
