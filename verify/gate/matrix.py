"""The gate matrix: every upstream users run, one gate cell each, the alarm and the summary report.

    python -m q3tts.verify.gate.matrix --list
    python -m q3tts.verify.gate.matrix --cell qwen-tts-hf-0.1.1.post1-tf5.24.0 --out reports/gate-matrix
    python -m q3tts.verify.gate.matrix --check reports/gate-matrix [--cell NAME]
    python -m q3tts.verify.gate.matrix --accept reports/gate-matrix --cell NAME
    python -m q3tts.verify.gate.matrix --summarize reports/gate-matrix --to reports

Each cell runs ``run_gate`` (a fresh virtualenv, or one layered over ``--base-site``) and leaves
OUT/CELL/{gate.json,parity.md}; its exit code is its outcome's (EXIT_CODES). ``--check`` compares
the measured cells with reports/gate-matrix-expected.json (alarm.py) and exits 1 when any differs,
crashed or is missing: that, not the outcome, is the verdict, because some cells fail by design
(known upstream bugs). ``--accept`` records measured cells as expected. ``--summarize`` reads every
OUT/*/gate.json and writes gate-matrix.json and gate-matrix.md, each cell with its expected outcome
and the comparison. The GitHub Actions workflow runs one cell per job, checks it, and summarizes in
a last job.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from q3tts.verify.gate.alarm import EXPECTED, Expectation, Verdict, accept, check, compare, load_expected

# (cell, --against-upstream, --transformers): every qwen-tts release on the index on its pin;
# qwen-tts-hf on its lowest allowed transformers (>=5.15.1), a middle one and the newest; and
# qwen-tts 0.1.1 with transformers 4.57.3 given explicitly (the --no-deps install path).
# qwen-tts-compat, the other transformers-5 fork, on 5.24.0 (where qwen-tts-hf breaks) and on the
# newest: both break at load, the same way every run. Where it does load (5.6.0 and 5.9.0 run,
# 5.15.1 and 5.20.0 probed) its RoPE buffers are left uninitialised, so its outcome changes from run
# to run and no expected record could hold it (docs/gate-matrix-notes.md). Explicit pins, not
# "latest": a cell's expected outcome must not move with an upstream release nobody chose.
CELLS = [
    ("qwen-tts-0.0.2", "qwen-tts==0.0.2", None),
    ("qwen-tts-0.0.3", "qwen-tts==0.0.3", None),
    ("qwen-tts-0.0.4", "qwen-tts==0.0.4", None),
    ("qwen-tts-0.0.5", "qwen-tts==0.0.5", None),
    ("qwen-tts-0.1.0", "qwen-tts==0.1.0", None),
    ("qwen-tts-0.1.1", "qwen-tts==0.1.1", None),
    ("qwen-tts-hf-0.1.1.post1-tf5.15.1", "qwen-tts-hf==0.1.1.post1", "5.15.1"),
    ("qwen-tts-hf-0.1.1.post1-tf5.20.0", "qwen-tts-hf==0.1.1.post1", "5.20.0"),
    ("qwen-tts-hf-0.1.1.post1-tf5.24.0", "qwen-tts-hf==0.1.1.post1", "5.24.0"),
    ("qwen-tts-0.1.1-tf4.57.3", "qwen-tts==0.1.1", "4.57.3"),
    ("qwen-tts-compat-0.1.1.post1-tf5.24.0", "qwen-tts-compat==0.1.1.post1", "5.24.0"),
    ("qwen-tts-compat-0.1.1.post1-tf5.25.0", "qwen-tts-compat==0.1.1.post1", "5.25.0"),
]
# The parity settings of a cell: fp32, one seed, 8 frames (every case of the suite, shorter).
NOTES = Path(__file__).resolve().parents[2] / "docs" / "gate-matrix-notes.md"
CELL_ARGS = ["--dtype", "fp32", "--seeds", "0", "--frames", "8"]


def run_cell(name: str, out: Path, base_site: str | None, extra: list[str]) -> int:
    from q3tts.verify.gate.release import run_gate

    spec = {c[0]: c for c in CELLS}.get(name)
    if spec is None:
        raise click.BadParameter(f"unknown cell {name!r}; --list shows them", param_hint="--cell")
    click.echo(f"=== {name}: {spec[1]}" + (f" --transformers {spec[2]}" if spec[2] else ""))
    cell_dir = out / name
    code = run_gate(spec[1], cell_dir, transformers=spec[2], base_site=base_site, extra_args=extra)
    gate = json.loads((cell_dir / "gate.json").read_text())
    gate.update(cell=name, args=extra)
    (cell_dir / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
    # parity.md keeps the run readable and gate.json holds the failures or the error record in full.
    (cell_dir / "parity.json").unlink(missing_ok=True)
    (cell_dir / "error.json").unlink(missing_ok=True)
    return code


def _where(g: dict) -> str:
    from q3tts.verify.gate.outcome import where_it_fails

    kind = g["outcome"]
    if kind == "parity-fail":
        shown = g.get("failures", [])[:3]
        return "; ".join(f"{f['checkpoint']}/{f['case']}: {where_it_fails(f)}" for f in shown)
    if kind in ("upstream-broken", "error"):
        e = g["error"]
        fr = e.get("upstream_frame")
        at = f"at {fr['file']}:{fr['line']} (`{fr['code']}`)" if fr else "no upstream frame"
        fx = [v["note"] for v in (g.get("fixtures") or {}).values() if v.get("note")]
        return f"stage {e['stage']}, {at}" + (f"; before that, fixtures: {fx[0]}" if fx else "")
    if kind == "install-fail":
        return g["detail"].splitlines()[0]
    fx = {k: v for k, v in (g.get("fixtures") or {}).items() if v["written_from"] != "upstream classes"}
    return "fixtures from the recorded tensor specs: " + fx[next(iter(fx))]["note"] if fx else ""


def _row(g: dict, verdict: Verdict, expected: Expectation | None) -> dict:
    v = g.get("installed") or {}
    return {
        "cell": g.get("cell"),
        "distribution": g["distribution"],
        "version": g.get("version"),
        "transformers_requested": g["requested"]["transformers"],
        "transformers": v.get("transformers"),
        "torch": v.get("torch"),
        "outcome": g["outcome"],
        "detail": g.get("detail", ""),
        "where": _where(g),
        # The record it is held to (reports/gate-matrix-expected.json is the source) and the verdict.
        "expected": expected.to_json() if expected else None,
        "vs_expected": {"status": verdict.status, "red": verdict.red, "text": verdict.text},
        "seconds": g["seconds"],
        "created": g.get("created"),
        "args": g.get("args"),
    }


def summarize(cells_dir: Path, to: Path, expected_path: Path = EXPECTED) -> dict:
    order = {c[0]: i for i, c in enumerate(CELLS)}
    gates = [json.loads(p.read_text()) for p in cells_dir.glob("*/gate.json")]
    gates.sort(key=lambda g: order.get(g.get("cell"), len(order)))
    expected = load_expected(expected_path) if expected_path.is_file() else {}
    rows = []
    for g in gates:
        cell = g.get("cell") or "?"
        rows.append(_row(g, compare(cell, expected.get(cell), g), expected.get(cell)))
    summary = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cells": rows}
    to.mkdir(parents=True, exist_ok=True)
    (to / "gate-matrix.json").write_text(json.dumps(summary, indent=2) + "\n")
    notes = NOTES.read_text() if NOTES.is_file() else ""
    md = [
        "# Gate matrix",
        "",
        f"Measured {summary['created']}; one row per cell (verify/gate/matrix.py). The last column compares the "
        "outcome with the expected one (reports/gate-matrix-expected.json): the gate is red on any row that is "
        "not `as expected`.",
        "",
    ]
    (to / "gate-matrix.md").write_text("\n".join(md + render_table(summary)) + "\n" + ("\n" + notes if notes else ""))
    return summary


def render_table(summary: dict) -> list[str]:
    lines = [
        "| cell | distribution | version | transformers | outcome | parity / where | time (install + run) | vs expected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["cells"]:
        tf = r["transformers"] or "-"
        if r["transformers_requested"]:
            tf += " (requested)"
        s = r["seconds"]
        vs = r["vs_expected"]
        lines.append(
            f"| {r['cell']} | {r['distribution']} | {r['version']} | {tf} | **{r['outcome']}** | "
            f"{r['detail']}{'; ' + r['where'] if r['where'] else ''} | "
            f"{s['install']:.0f} + {s['total'] - s['install']:.0f} s | "
            + (f"**{vs['status']}**: {vs['text']} |" if vs["red"] else f"{vs['status']} |")
        )
    return lines


def cell_names(cells: tuple[str, ...]) -> list[str]:
    """The cells named by --cell ('all' for every one), each checked against CELLS."""
    known = [c[0] for c in CELLS]
    if "all" in cells:
        return known
    unknown = [c for c in cells if c not in known]
    if unknown:
        raise click.BadParameter(f"unknown cell {unknown[0]!r}; --list shows them", param_hint="--cell")
    return list(cells)


def alarm(cells_dir: Path, names: list[str], expected_path: Path) -> int:
    """One line per cell, the changed ones first; 1 when any cell is red (the workflow's verdict)."""
    if not cells_dir.is_dir():
        raise click.BadParameter(f"{cells_dir}: no such directory of gate cells", param_hint="--check")
    try:
        expected = load_expected(expected_path)
    except FileNotFoundError as e:
        raise click.BadParameter(str(e), param_hint="--expected") from None
    verdicts = check(cells_dir, names or [c[0] for c in CELLS], expected)
    # On GitHub Actions a red line becomes an annotation on the run's page.
    mark = "::error::" if os.environ.get("GITHUB_ACTIONS") == "true" else ""
    for v in sorted(verdicts, key=lambda v: not v.red):
        click.echo((mark if v.red else "") + v.line())
    red = sum(v.red for v in verdicts)
    click.echo(
        f"gate alarm: {len(verdicts) - red} of {len(verdicts)} cells as expected" + (f", {red} red" if red else "")
    )
    return 1 if red else 0


@click.command()
@click.option("--list", "list_cells", is_flag=True, help="Print the cells and exit.")
@click.option(
    "--cell", "cells", multiple=True, help="Run (or check, accept) this cell (repeatable; 'all' for every cell)."
)
@click.option("--out", type=click.Path(file_okay=False), default="gate-matrix", show_default=True)
@click.option("--base-site", default=None, help="Layer each cell's virtualenv over this site-packages (torch base).")
@click.option("--summarize", "summarize_dir", default=None, help="Summarize OUT/*/gate.json into --to.")
@click.option("--to", default="reports", show_default=True, help="Where gate-matrix.json goes.")
@click.option(
    "--check",
    "check_dir",
    default=None,
    help="Compare DIR/CELL/gate.json of the --cell cells (default: every cell) with the expected record; "
    "exit 1 when any changed, crashed (exit 2) or is missing.",
)
@click.option("--accept", "accept_dir", default=None, help="Record DIR/CELL/gate.json of the --cell cells as expected.")
@click.option(
    "--expected",
    "expected_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=EXPECTED,
    show_default=True,
    help="The expected record --check, --accept and --summarize use.",
)
def main(list_cells, cells, out, base_site, summarize_dir, to, check_dir, accept_dir, expected_path) -> None:
    names = cell_names(cells)
    if list_cells:
        for name, spec, tf in CELLS:
            click.echo(f"{name}\t{spec}\t{tf or 'pin'}")
        return
    if summarize_dir:
        s = summarize(Path(summarize_dir), Path(to), expected_path)
        click.echo("\n".join(render_table(s)))
        return
    if check_dir:
        sys.exit(alarm(Path(check_dir), names, expected_path))
    if accept_dir:
        if not names:
            raise click.UsageError("--accept records only the cells named with --cell ('all' for every cell)")
        try:
            lines = accept(Path(accept_dir), names, [c[0] for c in CELLS], expected_path)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        click.echo("\n".join(lines + [f"recorded in {expected_path}"]))
        return
    if not names:
        raise click.UsageError("nothing to do: --list, --cell NAME, --check DIR, --accept DIR or --summarize DIR")
    codes = [run_cell(n, Path(out), base_site, CELL_ARGS) for n in names]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
