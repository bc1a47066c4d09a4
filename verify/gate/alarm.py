"""The gate alarm: each cell's observed outcome against the outcome recorded as expected.

A cell is green when it does what the record says: the same outcome kind and, for a parity-fail,
exactly the same failing cases (checkpoint/dtype/case); for upstream-broken, the same break (stage,
exception type, upstream file and line); for install-fail, the same failing install step. It is red
when any of that changes, when the verifier itself crashed (outcome ``error``, exit 2: a bug of ours
is never an expected outcome), when the cell left no gate.json, or when it has no record at all.

The record, reports/gate-matrix-expected.json, is the source of truth. It is written from measured
cells by ``python -m q3tts.verify.gate.matrix --accept DIR --cell NAME`` after a deliberate change
(a new cell, an upstream fix, a new case in the suite) and reviewed like code: its diff is the
change in what the gate tolerates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from q3tts.verify.gate.outcome import case_name

EXPECTED = Path(__file__).resolve().parents[2] / "reports" / "gate-matrix-expected.json"
AS_EXPECTED = "as expected"
# How many case names a changed cell's line shows; the rest are counted.
NAMES_SHOWN = 10
ABOUT = (
    "The expected outcome of every gate-matrix cell (verify/gate/alarm.py). The gate workflow is red when a "
    "cell's outcome or its failing cases differ from this, or when the verifier errs (exit 2). Update with "
    "`python -m q3tts.verify.gate.matrix --accept DIR --cell NAME` after a deliberate change. Only outcome, "
    "failing and signature are compared; detail and measured are for the reader."
)


@dataclass(frozen=True)
class Expectation:
    """What a cell does: its outcome kind and what identifies that outcome."""

    outcome: str
    failing: frozenset[str] = field(default_factory=frozenset)  # parity-fail: checkpoint/dtype/case
    signature: str = ""  # upstream-broken: where it breaks; install-fail: which install step fails

    def describe(self) -> str:
        if self.outcome == "parity-fail":
            return f"parity-fail ({len(self.failing)} failing cases)"
        return self.outcome + (f" ({self.signature})" if self.signature else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome}
        if self.failing:
            out["failing"] = sorted(self.failing)
        if self.signature:
            out["signature"] = self.signature
        return out

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Expectation:
        return cls(record["outcome"], frozenset(record.get("failing", [])), record.get("signature", ""))


@dataclass(frozen=True)
class Verdict:
    """One cell's comparison: ``status`` is "as expected" (green) or what went wrong (red)."""

    cell: str
    status: str
    text: str

    @property
    def red(self) -> bool:
        return self.status != AS_EXPECTED

    def line(self) -> str:
        return f"{self.cell}: {self.status}: {self.text}"


def failing_cases(gate: dict[str, Any]) -> list[str]:
    """Every failing case of a parity-fail gate.json, by name; refuses an incomplete list."""
    if "failing" in gate:
        return list(gate["failing"])
    # gate.json written before the uncapped list: its detailed list is complete only when short.
    listed = gate.get("failures", [])
    total = gate.get("failures_total", len(listed))
    if total != len(listed):
        raise ValueError(
            f"{gate.get('cell', 'gate.json')}: lists {len(listed)} of {total} failing cases and no complete "
            "'failing' list; rerun the cell to compare it"
        )
    return [case_name(f) for f in listed]


def break_signature(error: dict[str, Any]) -> str:
    """Where an upstream-broken cell breaks: stage, exception type, upstream file and line."""
    frame = error.get("upstream_frame") or {}
    at = f" at {frame['file']}:{frame['line']}" if frame else ""
    return f"{error.get('stage')}: {error['type']}{at}"


def observe(gate: dict[str, Any]) -> Expectation:
    """The Expectation a measured gate.json would record."""
    kind = gate["outcome"]
    if kind == "parity-fail":
        return Expectation(kind, failing=frozenset(failing_cases(gate)))
    if kind == "upstream-broken":
        return Expectation(kind, signature=break_signature(gate["error"]))
    if kind == "install-fail":
        return Expectation(kind, signature=gate["detail"].splitlines()[0])
    return Expectation(kind)


def _names(cases: set[str] | frozenset[str]) -> str:
    shown = sorted(cases)[:NAMES_SHOWN]
    more = len(cases) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def difference(expected: Expectation, observed: Expectation) -> str | None:
    """How ``observed`` differs from ``expected``, naming the cases; None when it does not."""
    if observed.outcome != expected.outcome:
        text = f"{expected.describe()} -> {observed.describe()}"
        return text + (f": {_names(observed.failing)}" if observed.failing else "")
    if observed.failing != expected.failing:
        now, gone = observed.failing - expected.failing, expected.failing - observed.failing
        parts = [f"parity-fail with {len(observed.failing)} failing cases instead of {len(expected.failing)}"]
        parts += [f"now failing: {_names(now)}"] if now else []
        parts += [f"no longer failing: {_names(gone)}"] if gone else []
        return "; ".join(parts)
    if observed.signature != expected.signature:
        return f"{observed.outcome} elsewhere: {observed.signature} (expected: {expected.signature})"
    return None


def compare(cell: str, expected: Expectation | None, gate: dict[str, Any] | None) -> Verdict:
    """One cell's verdict from its expected record and its gate.json (None when it left none)."""
    if gate is None:
        return Verdict(cell, "missing", "no gate.json: the cell did not finish")
    if gate["outcome"] == "error":
        return Verdict(cell, "our error", f"the verifier crashed (exit 2): {gate.get('detail', '')}")
    try:
        observed = observe(gate)
    except ValueError as e:
        return Verdict(cell, "cannot compare", str(e))
    if expected is None:
        return Verdict(cell, "unrecorded", f"{observed.describe()}; no expected record (record it with --accept)")
    change = difference(expected, observed)
    if change:
        return Verdict(cell, "changed", change)
    return Verdict(cell, AS_EXPECTED, observed.describe())


def read_gate(cells_dir: Path, cell: str) -> dict[str, Any] | None:
    path = cells_dir / cell / "gate.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_expected(path: Path = EXPECTED) -> dict[str, Expectation]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no expected record of the gate matrix")
    return {cell: Expectation.from_json(r) for cell, r in json.loads(path.read_text())["cells"].items()}


def check(cells_dir: Path, cells: list[str], expected: dict[str, Expectation]) -> list[Verdict]:
    """The verdict of every named cell measured under ``cells_dir`` (CELL/gate.json)."""
    return [compare(cell, expected.get(cell), read_gate(cells_dir, cell)) for cell in cells]


def accept(cells_dir: Path, cells: list[str], order: list[str], path: Path = EXPECTED) -> list[str]:
    """Record the measured outcome of ``cells`` as expected; returns what changed, one line each.

    Refuses a cell without gate.json or one whose verifier crashed: neither is a finding about
    upstream, so neither may become what the gate tolerates. Nothing is written then.
    """
    records = json.loads(path.read_text())["cells"] if path.is_file() else {}
    # A record of a cell that left the matrix would hold nothing to account; it goes with it.
    changed = [f"{cell}: dropped: no longer a cell of the matrix" for cell in records if cell not in order]
    records = {cell: r for cell, r in records.items() if cell in order}
    for cell in cells:
        gate = read_gate(cells_dir, cell)
        if gate is None or gate["outcome"] == "error":
            why = "no gate.json" if gate is None else f"the verifier crashed: {gate.get('detail', '')}"
            raise ValueError(f"{cell}: not recorded as expected ({why})")
        new = observe(gate)
        old = Expectation.from_json(records[cell]) if cell in records else None
        line = "new record" if old is None else (difference(old, new) or "unchanged")
        changed.append(f"{cell}: {line}: {new.describe()}")
        records[cell] = new.to_json() | {"detail": gate.get("detail", ""), "measured": gate.get("created")}
    rank = {c: i for i, c in enumerate(order)}
    ordered = dict(sorted(records.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")  # never a half-written record
    tmp.write_text(json.dumps({"about": ABOUT, "cells": ordered}, indent=2) + "\n")
    tmp.replace(path)
    return changed
