"""verify-parity reports: DIR/parity.json (machine) and DIR/parity.md (a person, in ten seconds).

parity.json schema (schema_version 1):

    {
      "schema_version": 1,
      "verdict": "PASS" | "FAIL",            # PASS only if every case of every run passed
      "created": ISO-8601 UTC time,
      "versions": {"torch", "transformers", "qwen-tts", "qwen-tts-hf", "qwen-tts-compat",
                   "qwen3-tts-standalone", "python"},
      "machine": {"cpu", "family", "simulated", "cores"},
      "fixtures": {model type: {"written_from", "note"}} | null,   # how the tiny checkpoints were made
      "upstream_output": {"lines": int, "distinct": [{"text", "count"}]},  # kept off the console
      "seeds": [int], "frames": int,          # sampling seeds; frames generated per case
      "summary": {"cases": int, "passed": int, "failed": int},
      "runs": [                               # one per checkpoint and dtype
        {
          "checkpoint": str, "source": str, "dtype": "fp32" | "bf16",
          "config": {...},                    # summary of the model config
          "seconds_upstream": float, "seconds_standalone": float,   # wall time of each side
          "passed": bool,
          "cases": [
            {"case": str, "component": str,
             "kind": "forward" | "generation" | "audio" | "encoder" | "streaming" | "icl_audio",
             "dtype": str, "passed": bool,
             "metrics": {...},                # forward: max_abs, max_rel, cosine, bound
                                              # generation: frames_upstream, frames_standalone,
                                              #   first_divergence {item, frame, group} | null
                                              # audio: max_abs, snr_db, bound, min_snr_db, rms
                                              # streaming: via, chunk_frames, first_chunk_frames,
                                              #   frames, chunks, codes_identical, first_divergence,
                                              #   max_abs, snr_db, bound, min_snr_db, ...
                                              # icl_audio: ref_codes_identical, ref_codes(_differing),
                                              #   frames_*, first_divergence, max_abs, snr_db, bound
             "first_bad_layer": str | null,   # forward cases that fail: first layer over tolerance
             "first_diff_layer": str | null,  # ... and first layer whose output differs at all
             "note": str, "seconds_upstream": float, "seconds_standalone": float}
          ],
          "knob_sensitivity": {               # optional (fp32 runs of the embedded default)
            "plans": int, "seconds": float,
            "rows": [{"knob": str, "step": str, "how": "argument" | "seam <target>",
                      "applicable": int, "changed": int, "changed_cases": [str]}]
          }
        }
      ],
      "knob_sensitivity": {                   # present when a run measured it: rows summed over runs
        "rows": [...], "blind": [str],        # blind: knobs whose perturbation changed no plan
        "plans": int, "seconds": float
      },
      "training": {                           # present with --training (verify/report/training.py)
        "sft_commit": str, "fixture": str, "seconds": float, "passed": bool,
        "checks": {"upstream_recipe_parity", "aligned_consistent_with_generation",
                   "upstream_recipe_inconsistent_with_generation": bool},
        "parity": [{"dtype", "recipe", "sft_commit", "passed", "missing_gradients": [str],
                    "comparisons": [{"case", "dtype", "max_abs", "max_rel", "cosine", "bound", "passed", ...}]}],
                                              # cases: train.{loss,talker_loss,code_predictor_loss,
                                              #   talker_logits,code_predictor_logits}, grad.<upstream
                                              #   parameter>, grad_group.<group>
        "consistency": [{"recipe", "passed", "frames", "groups", "talker_max_abs", "talker_first_bad",
                         "code_predictor_max_abs": {group: float}, "code_predictor_first_bad",
                         "bound", "untrained_groups", "loss_diffs", "codes", "logit_scale"}]
      }
    }

Generation notes of failing cases name the sampler that drew the first differing id (talker =
group 0, code predictor = group >= 1) and the knobs the case's mode turns.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from q3tts.verify.cases.icl_audio import icl_audio_cell
from q3tts.verify.compare import format_number
from q3tts.verify.machine import describe, machine
from q3tts.verify.report.training import render_training

SCHEMA_VERSION = 1


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    import torch

    def v(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "torch": torch.__version__,
        "transformers": v("transformers"),
        "qwen-tts": v("qwen-tts"),
        # the same qwen_tts package, built for transformers 5 by two forks
        "qwen-tts-hf": v("qwen-tts-hf"),
        "qwen-tts-compat": v("qwen-tts-compat"),
        "qwen3-tts-standalone": v("qwen3-tts-standalone"),
        "python": platform.python_version(),
    }


def build_report(
    runs: list[dict[str, Any]], seeds: list[int], frames: int, training: dict[str, Any] | None = None
) -> dict[str, Any]:
    cases = [c for r in runs for c in r["cases"]]
    failed = sum(1 for c in cases if not c["passed"])
    report = {
        "schema_version": SCHEMA_VERSION,
        "verdict": "PASS" if cases and not failed and (training is None or training["passed"]) else "FAIL",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "machine": machine(),
        "seeds": seeds,
        "frames": frames,
        "summary": {"cases": len(cases), "passed": len(cases) - failed, "failed": failed},
        "runs": runs,
    }
    measured = [r["knob_sensitivity"] for r in runs if r.get("knob_sensitivity")]
    if measured:
        from q3tts.verify.faults.sensitivity import blind_knobs, merge_sensitivity

        rows = merge_sensitivity(measured)
        report["knob_sensitivity"] = {
            "rows": rows,
            "blind": blind_knobs(rows),
            "plans": sum(m["plans"] for m in measured),
            "seconds": sum(m["seconds"] for m in measured),
        }
    if training is not None:
        report["training"] = training
    return report


def verdict_line(report: dict[str, Any]) -> str:
    """The console's verdict, naming every section that decides it (cases, and training when run):
    a run whose cases all pass but whose training section fails must not read as all-pass."""
    s = report["summary"]
    parts = [f"{s['passed']}/{s['cases']} cases pass"]
    if report.get("training") is not None:
        parts.append(f"training {'passes' if report['training']['passed'] else 'FAILS'}")
    return f"verdict: {report['verdict']} ({'; '.join(parts)})"


def metric_cell(c: dict[str, Any]) -> str:
    m = c["metrics"]
    if c["kind"] == "forward":
        return f"max abs {format_number(m['max_abs'])} (bound {format_number(m['bound'])}), max rel {format_number(m['max_rel'])}, cos {m['cosine']:.7f}"
    if c["kind"] == "audio":
        if m.get("samples_standalone", 0) != m.get("samples_upstream", 0):  # the note says what differs
            return (
                f"lengths differ: standalone {m['samples_standalone']} vs upstream {m['samples_upstream']} samples "
                "(no sample-wise comparison)"
            )
        return f"max abs {format_number(m['max_abs'])} (bound {format_number(m['bound'])}), SNR {format_number(m['snr_db'], '.1f')} dB, RMS {m['rms']:.3f}"
    if c["kind"] == "streaming":
        codes = "identical codes" if m["codes_identical"] else f"codes differ at {m['first_divergence']}"
        if m.get("samples_upstream", 0) - m.get("leading_samples_skipped", 0) != m.get("samples_streamed", 0):
            return (
                f"{m['via']} chunks {m['chunk_frames']}/{m['first_chunk_frames']}: {codes}; lengths differ: streamed "
                f"{m['samples_streamed']} vs upstream {m['samples_upstream']} samples (no sample-wise comparison)"
            )
        return (
            f"{m['via']} chunks {m['chunk_frames']}/{m['first_chunk_frames']}, {m['frames']} frames in {m['chunks']}: "
            f"{codes}, max abs {format_number(m['max_abs'])} (bound {format_number(m['bound'])}), SNR {format_number(m['snr_db'], '.1f')} dB"
        )
    if c["kind"] == "encoder":
        if m["codes_identical"]:
            return f"identical codes ({m['codes']} codes)"
        return f"{m['codes_differing']} of {m['codes']} codes differ; first stage over tolerance: {c.get('first_bad_layer')}"
    if c["kind"] == "icl_audio":
        return icl_audio_cell(c)
    div = m["first_divergence"]
    frames = ",".join(map(str, m["frames_upstream"]))
    if div is None:
        return f"identical codes ({frames} frames)"
    where = f"item {div['item']}, frame {div['frame']}" + (
        f", group {div['group']}" if div["group"] >= 0 else " (length)"
    )
    return f"codes differ at {where}"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    v = report["versions"]
    lines = [
        f"# Parity: {report['verdict']}",
        "",
        f"**{s['passed']} of {s['cases']} cases pass**" + (f", {s['failed']} fail." if s["failed"] else "."),
        f"torch {v['torch']}, transformers {v['transformers']}, qwen-tts {v['qwen-tts']}, "
        + "".join(f"{fork} {v[fork]}, " for fork in ("qwen-tts-hf", "qwen-tts-compat") if v.get(fork))
        + f"qwen3-tts-standalone {v['qwen3-tts-standalone']}; seeds {report['seeds']}, {report['frames']} frames per "
        f"generation case; {report['created']}.",
        describe(report["machine"]) + "." if "machine" in report else "",
        "",
        "| checkpoint | dtype | cases | verdict | upstream s | standalone s |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        n_fail = sum(1 for c in r["cases"] if not c["passed"])
        lines.append(
            f"| {r['checkpoint']} | {r['dtype']} | {len(r['cases'])} | {'PASS' if r['passed'] else f'FAIL ({n_fail})'} "
            f"| {r['seconds_upstream']:.1f} | {r['seconds_standalone']:.1f} |"
        )
    failures = [(r, c) for r in report["runs"] for c in r["cases"] if not c["passed"]]
    if failures:
        lines += ["", "## Failures", "", "| checkpoint | dtype | case | where | numbers |", "|---|---|---|---|---|"]
        for r, c in failures:
            where = c["first_bad_layer"] or c["component"]
            if c.get("first_diff_layer") and c["first_diff_layer"] != c["first_bad_layer"]:
                where = f"{c['first_diff_layer']} (over tolerance from {c['first_bad_layer']})"
            lines.append(
                f"| {r['checkpoint']} | {c['dtype']} | {c['case']} | {where} | {metric_cell(c)}"
                + (f" ({c['note']})" if c["note"] else "")
                + " |"
            )
    lines += render_sensitivity(report)
    lines += render_training(report)
    from q3tts.verify.report.console import render_upstream_output

    lines += render_upstream_output(report.get("upstream_output"))
    for r in report["runs"]:
        cfg = r["config"]
        t = cfg["talker"]
        lines += [
            "",
            f"## {r['checkpoint']} / {r['dtype']}",
            "",
            f"{cfg['tts_model_type']}, talker {t['layers']} layers x {t['hidden']} ({t['heads']}/{t['kv_heads']} heads, "
            f"head_dim {t['head_dim']}), code predictor {cfg['code_predictor']['layers']} layers x "
            f"{cfg['code_predictor']['hidden']}, {cfg['code_predictor']['groups']} code groups.",
            "",
            "| case | verdict | numbers |",
            "|---|---|---|",
        ]
        for c in r["cases"]:
            lines.append(f"| {c['case']} | {'PASS' if c['passed'] else 'FAIL'} | {metric_cell(c)} |")
    return "\n".join(lines) + "\n"


def render_sensitivity(report: dict[str, Any]) -> list[str]:
    ks = report.get("knob_sensitivity")
    if not ks:
        return []
    measured = [r for r in report["runs"] if r.get("knob_sensitivity")]
    names = [r["checkpoint"].removeprefix("tiny-") for r in measured]
    runs = ", ".join(f"{r['checkpoint']} {r['dtype']}" for r in measured)
    lines = [
        "",
        "## Knob sensitivity",
        "",
        f"Each sampling knob moved by a small step on the standalone side only; the count is the generation "
        f"plans (of those where the knob acts) whose codes then change against the unperturbed standalone run, "
        f"i.e. where a bug of that size fails parity. {ks['plans']} plans "
        f"({runs}), {ks['seconds']:.0f} s. "
        + ("Every knob changes the codes somewhere." if not ks["blind"] else f"**Blind: {', '.join(ks['blind'])}.**"),
        "",
        "| knob | step | perturbed via | changed / plans | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    per_run = [{(x["knob"], x["step"]): x for x in r["knob_sensitivity"]["rows"]} for r in measured]
    for row in ks["rows"]:
        key = (row["knob"], row["step"])
        cells = [f"{p[key]['changed']}/{p[key]['applicable']}" if key in p else "-" for p in per_run]
        lines.append(
            f"| {row['knob']} | {row['step']} | {row['how']} | **{row['changed']}**/{row['applicable']} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    j, m = directory / "parity.json", directory / "parity.md"
    j.write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    m.write_text(render_markdown(report))
    return j, m


def _finite(x):
    """Strict JSON: infinities (an SNR of identical audio) become the strings "inf"/"-inf"."""
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
