"""What a gate run found, in one of four kinds (and a fifth for a crash of the verifier itself).

- ``pass``: every parity case passes.
- ``parity-fail``: some cases fail; gate.json names them with the first diverging layer or frame.
- ``upstream-broken``: upstream cannot build, load or run a model in that environment; the
  exception and the innermost frame of upstream's code (qwen_tts or transformers) it came from.
- ``install-fail``: the environment could not be installed (pip's own message).
- ``error``: verify-parity crashed outside upstream's code: a bug here, not a finding about upstream.

The inner verify-parity leaves parity.json on a completed run and error.json (written by
``write_error``) when it stops on an exception; ``classify`` reads whichever is there. The fixture
factory is kept out of the way by ``write_fixture``: when upstream's classes cannot build the tiny
checkpoint, it is written from the recorded tensor specs instead, so what fails next is upstream's
own loader on a checkpoint in its released format, and that is what gets reported.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

EXIT_CODES = {"pass": 0, "parity-fail": 1, "error": 2, "upstream-broken": 3, "install-fail": 4}
UPSTREAM_PACKAGES = ("qwen_tts", "transformers")
SPECS_ENV = "Q3TTS_FIXTURE_TENSOR_SPECS"
_SOURCE_SPECS = Path(__file__).resolve().parents[2] / "tests" / "golden" / "fixture_tensors.json"
MAX_LISTED_FAILURES = 20


def _package_of(filename: str) -> str | None:
    parts = Path(filename).parts
    for pkg in UPSTREAM_PACKAGES:
        if pkg in parts and {"site-packages", "dist-packages"} & set(parts[: parts.index(pkg)]):
            return pkg
    return None


def describe_exception(exc: BaseException, stage: str | None) -> dict[str, Any]:
    """The exception, its stage and the innermost traceback frame inside upstream's packages."""
    frames = traceback.extract_tb(exc.__traceback__)
    upstream = [f for f in frames if _package_of(f.filename)]
    # The release under test (qwen_tts) is what a gate cell varies: its innermost frame names the
    # line at fault (e.g. its transformers-compat shim reading config.rope_theta) better than the
    # transformers internals below it, which are kept as raised_in.
    own = [f for f in upstream if _package_of(f.filename) == "qwen_tts"]
    inner = (own or upstream or [None])[-1]
    deepest = upstream[-1] if upstream else None
    return {
        "stage": stage,
        "type": type(exc).__name__,
        "message": str(exc),
        "upstream_frame": _frame(inner),
        "raised_in": _frame(deepest) if deepest is not inner else None,
        "traceback": "".join(traceback.format_exception(exc)).splitlines()[-40:],
    }


def _frame(f) -> dict[str, Any] | None:
    if f is None:
        return None
    rel = f.filename.replace("dist-packages/", "site-packages/").split("site-packages/", 1)[-1]
    return {"package": _package_of(f.filename), "file": rel, "line": f.lineno, "function": f.name, "code": f.line}


def write_error(report_dir: Path, exc: BaseException, stage: str | None, fixtures: dict | None = None) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    record = describe_exception(exc, stage) | {"fixtures": fixtures}
    (report_dir / "error.json").write_text(json.dumps(record, indent=2) + "\n")


def _recorded_specs() -> Path | None:
    path = Path(os.environ[SPECS_ENV]) if os.environ.get(SPECS_ENV) else _SOURCE_SPECS
    return path if path.is_file() else None


def write_fixture(dst: Path, model_type: str, seed: int) -> tuple[Path, dict[str, str]]:
    """write_upstream_checkpoint with upstream's classes; if they raise, from the recorded specs."""
    from q3tts.verify.fixtures.writer import load_tensor_specs, write_upstream_checkpoint

    try:
        return write_upstream_checkpoint(dst, model_type, seed=seed), {"written_from": "upstream classes", "note": ""}
    except Exception as e:
        specs = _recorded_specs()
        if specs is None:
            raise
        d = describe_exception(e, "fixture")
        where = d["upstream_frame"]
        note = (
            f"upstream's classes cannot build it ({d['type']}: {d['message']}"
            + (f" at {where['file']}:{where['line']}" if where else "")
            + "); written from the recorded tensor specs"
        )
        shutil.rmtree(dst, ignore_errors=True)  # nothing half-written by upstream's classes stays
        path = write_upstream_checkpoint(dst, model_type, seed=seed, tensor_specs=load_tensor_specs(specs))
        return path, {"written_from": "recorded tensor specs", "note": note}


def _failure(run: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    div = (case.get("metrics") or {}).get("first_divergence")
    return {
        "checkpoint": run["checkpoint"],
        "dtype": run["dtype"],
        "case": case["case"],
        "first_bad_layer": case.get("first_bad_layer"),
        "first_divergence": div,
        "note": case.get("note", ""),
    }


def case_name(failure: dict[str, Any]) -> str:
    """A failing case's name across runs: checkpoint/dtype/case."""
    return f"{failure['checkpoint']}/{failure['dtype']}/{failure['case']}"


def classify(report_dir: Path, install_error: str | None = None, child_rc: int | None = None) -> dict[str, Any]:
    """The outcome of one gate run from what its inner verify-parity left in ``report_dir``."""
    if install_error is not None:
        return {"outcome": "install-fail", "detail": install_error}
    error = report_dir / "error.json"
    parity = report_dir / "parity.json"
    if error.is_file():
        e = json.loads(error.read_text())
        kind = "upstream-broken" if e.get("upstream_frame") else "error"
        out = {"outcome": kind, "detail": f"{e['type']}: {e['message']}", "error": e}
        if e.get("fixtures"):
            out["fixtures"] = e["fixtures"]
        return out
    if not parity.is_file():
        return {"outcome": "error", "detail": f"verify-parity exited {child_rc} without a report"}
    report = json.loads(parity.read_text())
    failures = [_failure(r, c) for r in report["runs"] for c in r["cases"] if not c["passed"]]
    s = report["summary"]
    out = {"outcome": "pass" if report["verdict"] == "PASS" else "parity-fail", "cases": s}
    if failures:
        out["failures"] = failures[:MAX_LISTED_FAILURES]
        out["failures_total"] = len(failures)
        # Every failing case by name, uncapped: the gate alarm compares the whole set with the
        # expected one, and a case beyond the detailed list must not slip through.
        out["failing"] = [case_name(f) for f in failures]
        out["detail"] = f"{s['failed']} of {s['cases']} cases fail"
    else:
        out["detail"] = f"{s['passed']}/{s['cases']} cases pass"
    if report.get("fixtures"):
        out["fixtures"] = report["fixtures"]
    return out


def where_it_fails(f: dict[str, Any]) -> str:
    """A failing case's location for the console: first bad layer, or first diverging frame."""
    if f.get("first_bad_layer"):
        return f"first bad layer {f['first_bad_layer']}"
    div = f.get("first_divergence")
    if div:
        group = f", group {div['group']}" if div.get("group", -1) >= 0 else " (length)"
        return f"first diverging frame {div['frame']} (item {div['item']}{group})"
    return f.get("note") or "-"


def console_lines(outcome: dict[str, Any]) -> list[str]:
    """The outcome for a person: one line, plus where it fails."""
    kind = outcome["outcome"]
    lines = [f"outcome: {kind}: {outcome.get('detail', '')}"]
    if kind == "parity-fail":
        shown = outcome.get("failures", [])[:8]
        lines += [f"  {f['checkpoint']} / {f['dtype']}: {f['case']}: {where_it_fails(f)}" for f in shown]
        more = outcome.get("failures_total", 0) - len(shown)
        if more > 0:
            lines.append(f"  ... {more} more in gate.json")
    elif kind in ("upstream-broken", "error"):
        e = outcome["error"]
        fr = e.get("upstream_frame")
        lines.append(f"  stage: {e.get('stage')}")
        if fr:
            lines.append(f"  upstream frame: {fr['file']}:{fr['line']} in {fr['function']}: {fr['code']}")
        deeper = e.get("raised_in")
        if deeper:
            lines.append(f"  raised in: {deeper['file']}:{deeper['line']} in {deeper['function']}")
    elif kind == "install-fail":
        lines = [lines[0].splitlines()[0]] + ["  " + x for x in outcome["detail"].splitlines()[1:8]]
    return lines
