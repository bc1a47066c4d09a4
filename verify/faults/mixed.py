"""The mixed-precision self-test: the exact self-test's model faults planted under every half and mixed
mode, judged by ``verify-parity --mixed``'s forward bounds (verify/cases/mixed.py MIXED_FORWARD_BOUNDS).

For each mode the forward cases run clean first (they must sit inside the mode's bounds), then under
each catalogue fault of the talker, code predictor and text projection. A fault is caught when its
forward distance to upstream fp32 leaves the mode's bound. What a mode's bound can be asked to catch is
measured too: the fp32 mode (exact when clean) gives each fault's own size in these cases, and a mode
must catch the faults whose size is over twice its own clean distance from fp32 (EXPECTED_OVER_NOISE);
a smaller one hides in the mode's rounding (the exact suite, half precision against upstream in the same
dtype, is where those are caught), and a fault of size 0 is one these forward cases cannot see (the
M-RoPE and small-RMS probes of the exact suite are there for them). The tolerance table
(verify/report/bounds.py) reads each mode's clean worst and weakest caught fault from the report.

    python -m q3tts.verify.faults.mixed --report-dir reports
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

FORWARD_COMPONENTS = ("talker", "code_predictor", "text_projection")
EXPECTED_OVER_NOISE = 2.0


def worst(rows: list[dict]) -> dict:
    return dict(max_rel=max(r["max_rel"] for r in rows), min_cosine=min(r["cosine"] for r in rows))


def outside(w: dict, mode: str) -> bool:
    from q3tts.verify.cases.mixed import MIXED_FORWARD_BOUNDS

    max_rel, min_cos = MIXED_FORWARD_BOUNDS.get(
        mode, (0.0, 0.999999)
    )  # fp32: exact (the cosine of equal tensors rounds)
    return not (w["max_rel"] <= max_rel and w["min_cosine"] >= min_cos)


def run_mode(pairs: dict, mode: str, faults, seed: int) -> dict:
    """Clean and faulty forward distances of ``mode`` on every checkpoint a fault is planted in."""
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.mixed import forward_rows
    from q3tts.verify.faults.catalogue import CleanRunError

    models = {mt: Qwen3TTS.from_pretrained(st, dtype=mode) for mt, (_, st) in pairs.items()}
    clean = {mt: worst(forward_rows(pairs[mt][0], models[mt], seed)) for mt in pairs}
    bad = [mt for mt, w in clean.items() if outside(w, mode)]
    if bad:
        raise CleanRunError(f"{mode}: clean forward cases outside the bounds on {bad}: {clean}")
    out = {}
    for fault in faults:
        model = models[fault.model_type]
        with fault.inject(model):
            w = worst(forward_rows(pairs[fault.model_type][0], model, seed))
        out[fault.name] = dict(caught=outside(w, mode), **w)
    return dict(mode=mode, clean=clean, faults=out)


def run_self_test(seed: int = 0) -> dict:
    import torch

    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.cases.mixed import HALF_OF, MODES
    from q3tts.verify.checkpoints import checkpoint_pairs
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.machine import machine
    from q3tts.verify.report.console import Progress, UpstreamOutput, echo, maybe_captured

    faults = [f for f in CATALOGUE if f.component in FORWARD_COMPONENTS]
    quiet = UpstreamOutput()
    modes = []
    with tempfile.TemporaryDirectory(prefix="verify-mixed-selftest-") as work:
        with maybe_captured(quiet):
            pairs, _, _ = checkpoint_pairs(None, None, None, Path(work), Progress())
            types = {f.model_type for f in faults}
            by_type = {
                name.removeprefix("tiny-"): (load_upstream_wrapper(up, torch.float32), st)
                for name, _, up, st in pairs
                if name.removeprefix("tiny-") in types
            }
        for mode in MODES:
            t0 = time.perf_counter()
            with maybe_captured(quiet):
                run = run_mode(by_type, mode, faults, seed)
            caught = sum(f["caught"] for f in run["faults"].values())
            echo(
                f"  {mode:10} clean inside its bounds; {caught}/{len(faults)} faults caught ({time.perf_counter() - t0:.0f} s)"
            )
            modes.append(run)
    mark_expected(modes)
    missed = [f"{m['mode']} {n}" for m in modes for n, f in m["faults"].items() if f["expected"] and not f["caught"]]
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return dict(
        created=created, machine=machine(), seed=seed, half_of=HALF_OF, modes=modes, missed=missed, passed=not missed
    )


def mark_expected(modes: list[dict]) -> None:
    """Each fault's size is its fp32-mode distance; a mode must catch it when that is over
    EXPECTED_OVER_NOISE times the mode's own clean distance (fp32: when it is over 0)."""
    size = {n: f["max_rel"] for m in modes if m["mode"] == "fp32" for n, f in m["faults"].items()}
    for m in modes:
        noise = max(w["max_rel"] for w in m["clean"].values())
        for name, f in m["faults"].items():
            f["size"] = size[name]
            f["expected"] = size[name] > EXPECTED_OVER_NOISE * noise and size[name] > 0


def render_markdown(report: dict) -> str:
    from q3tts.verify.cases.mixed import MIXED_FORWARD_BOUNDS
    from q3tts.verify.machine import describe

    lines = [
        "# Mixed-precision self-test",
        "",
        f"`python -m q3tts.verify.faults.mixed` on {describe(report['machine'])}, {report['created'][:10]}: the "
        "exact self-test's talker, code-predictor and text-projection faults planted under every half and mixed mode, "
        "the forward cases of `verify-parity --mixed` against upstream fp32, clean first. Cells: max rel / min cosine. "
        f"A mode must catch a fault whose fp32-mode size is over {EXPECTED_OVER_NOISE:g}x its own clean distance; "
        "'under the mode's noise' marks the others (the exact suite in that dtype catches them), 'invisible here' "
        "a fault these forward cases cannot see in any mode.",
        "",
        f"**Verdict: {'PASS' if report['passed'] else 'FAIL: not caught ' + ', '.join(report['missed'])}**",
        "",
        "| mode | bound | clean worst | " + " | ".join(report["modes"][0]["faults"]) + " |",
        "|---|---|---|" + "---|" * len(report["modes"][0]["faults"]),
    ]
    for m in report["modes"]:
        clean = {
            "max_rel": max(w["max_rel"] for w in m["clean"].values()),
            "min_cosine": min(w["min_cosine"] for w in m["clean"].values()),
        }
        cells = [_cell(f) + _flag(f) for f in m["faults"].values()]
        bound = "{:g} / {}".format(*MIXED_FORWARD_BOUNDS.get(m["mode"], (0, 0.999999)))
        lines.append(f"| {m['mode']} | {bound} | {_cell(clean)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _flag(f: dict) -> str:
    if f["expected"]:
        return "" if f["caught"] else " **missed**"
    return " (invisible here)" if f["size"] == 0 else " (under the mode's noise)"


def _cell(w: dict) -> str:
    return f"{w['max_rel']:.3g} / {w['min_cosine']:.6f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m q3tts.verify.faults.mixed", description=__doc__.split("\n")[0])
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    report = run_self_test()
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "mixed-faults.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.report_dir / "mixed-faults.md").write_text(render_markdown(report))
    print(f"mixed self-test: {'PASS' if report['passed'] else 'FAIL'}; report: {args.report_dir / 'mixed-faults.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
