"""README figures rendered from the committed reports, so a number in the README cannot drift from
the run that produced it.

A generated block in README.md sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``;
``BLOCKS[NAME]`` renders its lines from reports/. ``python -m q3tts.verify.report.readme`` rewrites
every block in place; ``--check`` only compares (exit 1 naming each stale block), which is what
tests/test_readme_figures.py runs. Prose around the blocks is written by hand.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.DOTALL)


def _json(reports: Path, name: str):
    return json.loads((reports / name).read_text())


def _parity_verdict(reports: Path) -> list[str]:
    r = _json(reports, "parity.json")
    s = r["summary"]
    return [
        f"`verdict: {r['verdict']} ({s['passed']}/{s['cases']} cases pass)` on {r['machine']['cpu']}, "
        f"{r['created'][:10]} (`reports/parity.json`)."
    ]


def _streaming_worst(reports: Path) -> list[str]:
    r = _json(reports, "parity.json")
    worst = {}
    for run in r["runs"]:
        for c in run["cases"]:
            if c["kind"] == "streaming":
                m = c["metrics"]
                w = worst.setdefault(run["dtype"], [0.0, math.inf])
                w[0], w[1] = max(w[0], float(m["max_abs"])), min(w[1], float(m["snr_db"]))
    parts = [
        f"{dn} worst {w[0]:.2g} / {w[1]:.1f} dB" for dn, w in sorted(worst.items(), key=lambda kv: kv[0] != "fp32")
    ]
    return [f"Streaming cases of the default run (`reports/parity.json`): {'; '.join(parts)}."]


def _knob_table(reports: Path) -> list[str]:
    from q3tts.verify.report.parity import render_sensitivity

    lines = render_sensitivity(_json(reports, "parity.json"))
    return lines[lines.index(next(x for x in lines if x.startswith("| knob |"))) :]


def _self_test_counts(reports: Path) -> list[str]:
    """Per self-test: faults caught by a divergence (a fault that only raised is not counted)."""
    rows = _json(reports, "faults.json")
    parts = []
    for dn in dict.fromkeys(r["dtype"] for r in rows):
        these = [r for r in rows if r["dtype"] == dn]
        caught = sum(r["outcome"] == "caught" for r in these)
        # the encoder's and training's self-tests run inside the exact one (verify/faults/encoder.py, training.py)
        groups = {
            g: [r for r in these if r["fault"].startswith(f"{p}_")]
            for g, p in (("encoder", "encoder"), ("training", "train"))
        }
        inner = ", ".join(
            f"{g} {sum(r['outcome'] == 'caught' for r in rs)}/{len(rs)}" for g, rs in groups.items() if rs
        )
        parts.append(f"{dn} {caught}/{len(these)}" + (f" (of which {inner})" if inner else ""))
    lines = [f"- exact (`reports/faults.json`): {', '.join(parts)} caught by divergence;"]
    fast = _json(reports, "fast_faults.json")
    told_apart = all("outcome" in r for r in fast)  # older records count a crash as a catch
    parts = []
    for dn in dict.fromkeys(r["dtype"] for r in fast):
        these = [r for r in fast if r["dtype"] == dn]
        caught = sum((r["outcome"] == "caught") if told_apart else r["detected"] for r in these)
        parts.append(f"{dn} {caught}/{len(these)}")
    how = "caught by divergence" if told_apart else "caught (a record from before crashes were told apart from catches)"
    lines.append(f"- fast (`reports/fast_faults.json`): {', '.join(parts)} {how};")
    stream = _json(reports, "streaming-faults.json")["runs"]
    due = [f for r in stream for f in r["faults"].values() if f["expected"]]
    lines.append(
        f"- streaming (`reports/streaming-faults.json`): {sum(f['caught'] for f in due)}/{len(due)} "
        "(fault, checkpoint, dtype) runs that must catch caught;"
    )
    engine = _json(reports, "gguf-engine-parity/engine-faults.json")["faults"]
    lines.append(
        f"- engine, qwentts.cpp (`reports/gguf-engine-parity/engine-faults.json`): "
        f"{sum(f['caught'] for f in engine)}/{len(engine)} (fault, quantisation) runs caught."
    )
    return lines


def _tolerance_table(reports: Path) -> list[str]:
    from q3tts.verify.report.bounds import table_lines

    return table_lines(reports)


BLOCKS: dict[str, Callable[[Path], list[str]]] = {
    "parity-verdict": _parity_verdict,
    "streaming-worst": _streaming_worst,
    "knob-table": _knob_table,
    "self-test-counts": _self_test_counts,
    "tolerance-table": _tolerance_table,
}


def render(text: str, reports: Path) -> str:
    """``text`` with every generated block re-rendered from ``reports``."""

    def block(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise KeyError(f"README block figures:{name} has no renderer in verify/report/readme.py")
        return m.group(1) + "\n".join(BLOCKS[name](reports)) + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def stale_blocks(text: str, reports: Path) -> list[str]:
    """Names of the blocks whose text differs from what the reports render, and of blocks missing."""
    fresh = {m.group("name"): m.group("body") for m in BLOCK.finditer(render(text, reports))}
    have = {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}
    missing = [f"{n} (missing)" for n in BLOCKS if n not in have]
    return missing + [n for n, body in have.items() if fresh.get(n) != body]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    readme, reports = ROOT / "README.md", ROOT / "reports"
    text = readme.read_text()
    if "--check" in args:
        stale = stale_blocks(text, reports)
        for name in stale:
            print(f"README.md: figures:{name} differs from reports/ (python -m q3tts.verify.report.readme)")
        return 1 if stale else 0
    readme.write_text(render(text, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
