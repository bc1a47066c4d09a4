"""The tolerance table: every approximate bound next to the clean worst case it must admit and the
weakest planted bug it must reject, all read from the committed reports.

A bound is defensible when both margins are measured: the clean worst at the default settings sits
inside it (headroom), and the smallest planted bug it is meant to catch sits outside it (margin).
``violations`` lists every row where either fails; tests/test_bounds_table.py requires none, and the
README's ``<!-- figures:tolerance-table -->`` block is ``table_lines`` (verify/report/readme.py).

Sources (each written by the run named in its own header):
- reports/parity.json and reports/faults.json: the exact path's bf16 bounds and the exact self-test;
- reports/streaming-faults.json: the streaming self-test (verify/faults/streaming.py), clean and faulty;
- the fast path's bounds are not in the table yet: its self-test now records every failing check's numbers
  (verify/faults/fast_selftest.py failing_metrics; FAST_ROWS below reads them from fast_faults-bf16.json), but
  the committed fast_faults.json predates that, and the run that would replace it (26 faults per dtype, each
  through a compile) did not fit the session that wrote this;
- reports/mixed-faults.json: the mixed-precision self-test (verify/faults/mixed.py), clean and faulty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from q3tts.verify.compare import AUDIO_TOLERANCES, FAST_STEP_TOLERANCES, STREAMING_TOLERANCES, TOLERANCES

Measure = Callable[[Path], float]
# The exact streaming case allows one float32 step per sample (verify/cases/streaming.py
# equal_up_to_float32_cast); in max-abs terms that is at most this for samples within +-2.
ONE_FLOAT32_STEP_AT_2 = 2.0**-22
FaultMeasure = Callable[[Path], tuple[str, float]]  # (the weakest planted bug, its value)


@dataclass(frozen=True)
class BoundRow:
    check: str
    dtype: str
    metric: str
    bound: float
    higher_is_worse: bool  # max abs / max rel: yes; SNR: no
    clean: Measure
    weakest_fault: FaultMeasure
    source: str

    def measured(self, reports: Path) -> dict:
        clean = self.clean(reports)
        fault, value = self.weakest_fault(reports)
        sign = 1 if self.higher_is_worse else -1
        return dict(
            check=self.check,
            dtype=self.dtype,
            metric=self.metric,
            bound=self.bound,
            clean=clean,
            fault=fault,
            fault_value=value,
            clean_inside=sign * (clean - self.bound) <= 0,
            fault_outside=sign * (value - self.bound) > 0,
            source=self.source,
        )


def _load(reports: Path, name: str):
    return json.loads((reports / name).read_text())


# --- the exact path: parity.json (clean) and faults.json (the exact self-test) ---------------------
def _parity_cases(reports: Path, dtype: str, kind: str):
    for run in _load(reports, "parity.json")["runs"]:
        if run["dtype"] == dtype:
            yield from (c for c in run["cases"] if c["kind"] == kind)


def _exact_forward_clean(dtype: str) -> Measure:
    return lambda reports: max(float(c["metrics"]["max_rel"]) for c in _parity_cases(reports, dtype, "forward"))


def _exact_audio_clean(dtype: str) -> Measure:
    return lambda reports: min(float(c["metrics"]["snr_db"]) for c in _parity_cases(reports, dtype, "audio"))


def _weakest(sizes: dict[str, float], higher_is_worse: bool) -> tuple[str, float]:
    """The planted bug whose size is nearest the clean side: the smallest max abs, the highest SNR."""
    if not sizes:
        return "none recorded", math.nan
    name = (min if higher_is_worse else max)(sizes, key=sizes.get)
    return name, sizes[name]


def _relative(m: dict, rtol: float) -> float:
    """A failing forward case's distance: absolute (rtol 0), else as a fraction of max |ref|."""
    if not rtol:
        return m["max_abs"]
    return m["max_abs"] / m["bound"] * rtol if m["bound"] else math.inf  # bound 0: max |ref| was 0


def _exact_forward_faults(dtype: str, rtol: float) -> FaultMeasure:
    """Each caught fault's largest forward distance, as a fraction of max |ref| (bf16: bound / rtol is
    max |ref|) or in absolute terms (fp32, rtol 0)."""

    def measure(reports: Path) -> tuple[str, float]:
        sizes = {}
        for f in _load(reports, "faults.json"):
            forward = [
                m for case, m in f.get("failing_metrics", {}).items() if "cosine" in m and not case.startswith("audio")
            ]
            if f["dtype"] == dtype and f.get("outcome") == "caught" and forward:
                sizes[f["fault"]] = max(_relative(m, rtol) for m in forward)
        return _weakest(sizes, True)

    return measure


def _exact_audio_faults(dtype: str) -> FaultMeasure:
    def measure(reports: Path) -> tuple[str, float]:
        sizes = {}
        for f in _load(reports, "faults.json"):
            audio = [m["snr_db"] for m in f.get("failing_metrics", {}).values() if "snr_db" in m]
            if f["dtype"] == dtype and f.get("outcome") == "caught" and audio:
                sizes[f["fault"]] = min(audio)
        return _weakest(sizes, False)

    return measure


# --- streaming: streaming-faults.json (clean and planted, same cases as the default run) -----------
def _stream_worst(runs, kind: str, metric: str) -> float:
    values = [r[kind][metric] for r in runs if kind in r]
    return max(values) if metric == "max_abs" else min(values)


def _streaming_clean(dtype: str, kind: str, metric: str) -> Measure:
    def measure(reports: Path) -> float:
        runs = [r["clean"] for r in _load(reports, "streaming-faults.json")["runs"] if r["dtype"] == dtype]
        return _stream_worst(runs, kind, metric)

    return measure


def _streaming_faults(dtype: str, kind: str, metric: str, faults: tuple[str, ...]) -> FaultMeasure:
    """Each named bug's size in these cases (its worst over the fixtures); the weakest of them."""

    def measure(reports: Path) -> tuple[str, float]:
        runs = [r for r in _load(reports, "streaming-faults.json")["runs"] if r["dtype"] == dtype]
        sizes = {n: _stream_worst([r["faults"][n]["worst"] for r in runs], kind, metric) for n in faults}
        return _weakest(sizes, metric == "max_abs")

    return measure


# --- the fast path: fast_parity*.json (clean) and fast_faults.json (its self-test) ------------------
def _fast_report(dtype: str) -> str:
    return "fast_parity.json" if dtype == "fp32" else f"fast_parity-{dtype}.json"


def _fast_runs(reports: Path, dtype: str) -> list[dict]:
    """The runs of ``dtype`` in its report (the default ``--fast`` run holds fp32 and bf16 both)."""
    return [r for r in _load(reports, _fast_report(dtype)) if r.get("dtype", dtype) == dtype]


def _fast_forward_clean(dtype: str) -> Measure:
    def measure(reports: Path) -> float:
        rows = [c for r in _fast_runs(reports, dtype) for c in r["forward"]]
        return max(c["max_abs"] / c["bound"] for c in rows)

    return measure


def _step_distance(key: str) -> Callable[[dict], float]:
    """A stepwise row's distance: max rel as it is, cosine as 1 - cosine (larger is worse for both)."""
    return (lambda m: 1.0 - m[key]) if "cosine" in key else (lambda m: m[key])


def _fast_step_clean(dtype: str, key: str) -> Measure:
    value = _step_distance(key)
    return lambda reports: max(value(s) for r in _fast_runs(reports, dtype) for s in r["stepwise"])


def _fast_faults(dtype: str, prefix: str, value: Callable[[dict], float], bound: float) -> FaultMeasure:
    """Each caught fault's largest distance over its failing checks named ``prefix``*, counting only
    checks this bound failed (a stepwise row can fail by its decisions, or by its other metric, alone).
    From the fast self-test of that dtype with its numbers (its rows of fast_faults.json)."""

    def measure(reports: Path) -> tuple[str, float]:
        sizes = {}
        for f in _load(reports, "fast_faults.json"):
            values = [
                value(m)
                for case, m in f.get("failing_metrics", {}).items()
                if case.startswith(prefix) and _has(m, value) and value(m) > bound
            ]
            if f["dtype"] == dtype and f.get("outcome") == "caught" and values:
                sizes[f["fault"]] = max(values)
        return _weakest(sizes, True)

    return measure


def _has(m: dict, value: Callable[[dict], float]) -> bool:
    try:
        value(m)
    except KeyError:
        return False
    return True


# --- mixed precision: mixed-faults.json (the forward cases of --mixed, clean and under the faults) ----
def _mixed_mode(reports: Path, mode: str) -> dict:
    return next(m for m in _load(reports, "mixed-faults.json")["modes"] if m["mode"] == mode)


def _mixed_clean(mode: str) -> Measure:
    return lambda reports: max(w["max_rel"] for w in _mixed_mode(reports, mode)["clean"].values())


def _mixed_faults(mode: str) -> FaultMeasure:
    def measure(reports: Path) -> tuple[str, float]:
        faults = _mixed_mode(reports, mode)["faults"]
        return _weakest({n: f["max_rel"] for n, f in faults.items() if f["expected"] and f["caught"]}, True)

    return measure


def _mixed_rows() -> list[BoundRow]:
    from q3tts.verify.cases.mixed import MIXED_FORWARD_BOUNDS

    return [
        BoundRow("--mixed forward vs upstream fp32", mode, "max rel", bound, True, _mixed_clean(mode),
                 _mixed_faults(mode), "mixed-faults.json")
        for mode, (bound, _cos) in MIXED_FORWARD_BOUNDS.items()
    ]  # fmt: skip


def fast_rows(dtype: str) -> list[BoundRow]:
    """The fast path's bounds in ``dtype``: the clean worst from fast_parity[-bf16].json (a default
    ``verify-parity --fast [--dtype bf16]``), the weakest catch from fast_faults.json (``verify-parity
    --fast --self-test`` of each dtype, which records every failing check's numbers)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    step = FAST_STEP_TOLERANCES[torch_dtype]
    src = f"{_fast_report(dtype)}, fast_faults.json"
    return [
        BoundRow("fast forward", dtype, "max abs / bound", 1.0, True, _fast_forward_clean(dtype),
                 _fast_faults(dtype, "fast.", _step_distance("over_bound"), 1.0), src),
        BoundRow("fast stepwise logits", dtype, "max rel", step.rtol, True, _fast_step_clean(dtype, "max_rel"),
                 _fast_faults(dtype, "stepwise.", _step_distance("max_rel"), step.rtol), src),
        BoundRow("fast stepwise logits", dtype, "1 - cosine", 1 - step.min_cosine, True,
                 _fast_step_clean(dtype, "min_cosine"),
                 _fast_faults(dtype, "stepwise.", _step_distance("min_cosine"), 1 - step.min_cosine), src),
    ]  # fmt: skip


def _rows() -> list[BoundRow]:
    bf16, fp32 = torch.bfloat16, torch.float32
    stream = {dt: STREAMING_TOLERANCES[t] for dt, t in (("fp32", fp32), ("bf16", bf16))}
    sf = "streaming-faults.json"
    return [
        BoundRow("exact forward", "fp32", "max abs", TOLERANCES[fp32].atol, True, _exact_forward_clean("fp32"),
                 _exact_forward_faults("fp32", 0.0), "parity.json, faults.json"),
        BoundRow("exact forward", "bf16", "max rel", TOLERANCES[bf16].rtol, True,
                 _exact_forward_clean("bf16"), _exact_forward_faults("bf16", TOLERANCES[bf16].rtol),
                 "parity.json, faults.json"),
        BoundRow("exact audio", "bf16", "SNR dB", AUDIO_TOLERANCES[bf16][1], False, _exact_audio_clean("bf16"),
                 _exact_audio_faults("bf16"), "parity.json, faults.json"),
        BoundRow("streaming, chunked", "fp32", "max abs", stream["fp32"][0], True,
                 _streaming_clean("fp32", "chunked", "max_abs"),
                 _streaming_faults("fp32", "chunked", "max_abs", ("less_context",)), sf),
        BoundRow("streaming, across frame 300", "fp32", "max abs", stream["fp32"][0], True,
                 _streaming_clean("fp32", "crossing", "max_abs"),
                 _streaming_faults("fp32", "crossing", "max_abs", ("less_context", "unsplit_300")), sf),
        BoundRow("streaming, float64 codec (exact)", "any", "max abs", ONE_FLOAT32_STEP_AT_2, True,
                 _streaming_clean("fp32", "exact", "max_abs"),
                 _streaming_faults("fp32", "exact", "max_abs", ("less_context", "unsplit_300")), sf),
        BoundRow("streaming, chunked", "bf16", "SNR dB", stream["bf16"][1], False,
                 _streaming_clean("bf16", "chunked", "snr_db"),
                 _streaming_faults("bf16", "chunked", "snr_db", ("half_context", "no_context")), sf),
        BoundRow("streaming, chunked", "bf16", "max abs", stream["bf16"][0], True,
                 _streaming_clean("bf16", "chunked", "max_abs"),
                 _streaming_faults("bf16", "chunked", "max_abs", ("no_context",)), sf),
        BoundRow("streaming, across frame 300", "bf16", "SNR dB", stream["bf16"][1], False,
                 _streaming_clean("bf16", "crossing", "snr_db"),
                 _streaming_faults("bf16", "crossing", "snr_db", ("half_context", "no_context")), sf),
        *_mixed_rows(),
        *fast_rows("fp32"),
        *fast_rows("bf16"),
    ]  # fmt: skip


ROWS = _rows()


def measure_rows(reports: Path) -> list[dict]:
    return [row.measured(reports) for row in ROWS]


def violations(reports: Path) -> list[str]:
    """Every row whose clean worst is outside its bound, or whose weakest planted bug is inside it."""
    out = []
    for m in measure_rows(reports):
        label = f"{m['check']} {m['dtype']} {m['metric']} (bound {m['bound']:.3g})"
        if not m["clean_inside"]:
            out.append(f"{label}: the clean worst {m['clean']:.3g} is outside the bound")
        if not m["fault_outside"]:
            out.append(f"{label}: the planted bug {m['fault']} ({m['fault_value']:.3g}) is inside the bound")
    return out


def _ratio(m: dict, value: float) -> str:
    if m["metric"] == "SNR dB":
        return f"{abs(value - m['bound']):.1f} dB"
    small, big = sorted((value, m["bound"]))
    return "exact" if small == 0 else f"{big / small:.3g}x"


def table_lines(reports: Path) -> list[str]:
    lines = [
        "| check | dtype | metric | clean worst | bound | headroom | weakest planted bug | its value | margin | reports |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measure_rows(reports):
        lines.append(
            f"| {m['check']} | {m['dtype']} | {m['metric']} | {m['clean']:.3g} | {m['bound']:.3g} | "
            f"{_ratio(m, m['clean'])} | {m['fault']} | {m['fault_value']:.3g} | {_ratio(m, m['fault_value'])} | "
            f"{m['source']} |"
        )
    return lines
