"""The gate matrix: every upstream users run, one gate cell each, and the summary report.

    python -m q3tts.verify.gate.matrix --list
    python -m q3tts.verify.gate.matrix --cell qwen-tts-hf-0.1.1.post1-tf5.24.0 --out reports/gate-matrix
    python -m q3tts.verify.gate.matrix --summarize reports/gate-matrix --to reports/gate-matrix

Each cell runs ``run_gate`` (a fresh virtualenv, or one layered over ``--base-site``) and leaves
OUT/CELL/{gate.json,parity.md}; ``--summarize`` reads every OUT/*/gate.json and writes
gate-matrix.json and gate-matrix.md. The GitHub Actions workflow runs one cell per job and
summarizes in a last job.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

# (cell, --against-upstream, --transformers): every qwen-tts release on the index on its pin;
# qwen-tts-hf on its lowest allowed transformers (>=5.15.1), a middle one and the newest; and
# qwen-tts 0.1.1 with transformers 4.57.3 given explicitly (the --no-deps install path).
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
    (cell_dir / "parity.json").unlink(missing_ok=True)  # parity.md keeps it readable; gate.json has the failures
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


def summarize(cells_dir: Path, to: Path) -> dict:
    order = {c[0]: i for i, c in enumerate(CELLS)}
    gates = [json.loads(p.read_text()) for p in cells_dir.glob("*/gate.json")]
    gates.sort(key=lambda g: order.get(g.get("cell"), len(order)))
    rows = []
    for g in gates:
        v = g.get("installed") or {}
        rows.append(
            {
                "cell": g.get("cell"),
                "distribution": g["distribution"],
                "version": g.get("version"),
                "transformers_requested": g["requested"]["transformers"],
                "transformers": v.get("transformers"),
                "torch": v.get("torch"),
                "outcome": g["outcome"],
                "detail": g.get("detail", ""),
                "where": _where(g),
                "seconds": g["seconds"],
                "created": g.get("created"),
                "args": g.get("args"),
            }
        )
    summary = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cells": rows}
    to.mkdir(parents=True, exist_ok=True)
    (to / "gate-matrix.json").write_text(json.dumps(summary, indent=2) + "\n")
    notes = NOTES.read_text() if NOTES.is_file() else ""
    md = ["# Gate matrix", "", f"Measured {summary['created']}; one row per cell (verify/gate/matrix.py).", ""]
    (to / "gate-matrix.md").write_text("\n".join(md + render_table(summary)) + "\n" + ("\n" + notes if notes else ""))
    return summary


def render_table(summary: dict) -> list[str]:
    lines = [
        "| cell | distribution | version | transformers | outcome | parity / where | time (install + run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["cells"]:
        tf = r["transformers"] or "-"
        if r["transformers_requested"]:
            tf += " (requested)"
        s = r["seconds"]
        lines.append(
            f"| {r['cell']} | {r['distribution']} | {r['version']} | {tf} | **{r['outcome']}** | "
            f"{r['detail']}{'; ' + r['where'] if r['where'] else ''} | "
            f"{s['install']:.0f} + {s['total'] - s['install']:.0f} s |"
        )
    return lines


@click.command()
@click.option("--list", "list_cells", is_flag=True, help="Print the cells and exit.")
@click.option("--cell", "cells", multiple=True, help="Run this cell (repeatable; 'all' for every cell).")
@click.option("--out", type=click.Path(file_okay=False), default="gate-matrix", show_default=True)
@click.option("--base-site", default=None, help="Layer each cell's virtualenv over this site-packages (torch base).")
@click.option("--summarize", "summarize_dir", default=None, help="Summarize OUT/*/gate.json into --to.")
@click.option("--to", default="reports", show_default=True, help="Where gate-matrix.json goes.")
def main(list_cells, cells, out, base_site, summarize_dir, to) -> None:
    if list_cells:
        for name, spec, tf in CELLS:
            click.echo(f"{name}\t{spec}\t{tf or 'pin'}")
        return
    if summarize_dir:
        s = summarize(Path(summarize_dir), Path(to))
        click.echo("\n".join(render_table(s)))
        return
    names = [c[0] for c in CELLS] if "all" in cells else list(cells)
    if not names:
        raise click.UsageError("nothing to do: --list, --cell NAME or --summarize DIR")
    codes = [run_cell(n, Path(out), base_site, CELL_ARGS) for n in names]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
