"""The streaming self-test: planted streaming bugs against the streaming cases' bounds.

Each fault patches the standalone's streaming module (q3tts.standalone.streaming), the cases of the
default run (verify/cases/streaming.py ``streaming_results``) run clean first on exactly the same
checkpoints and dtypes (and must all pass), then under each fault. A fault is caught in a dtype when
a case that passed clean fails by its numbers (a case whose stream raised is counted apart). The
report keeps, per case kind, the worst clean and faulty distances: the tolerance table in the README
(verify/report/bounds.py) reads its "smallest planted bug" from here.

Case kinds: ``chunked`` (every voice mode at every chunk size), ``crossing`` (330 frames across
upstream's 300-frame chunk, model dtype, against upstream's decode) and ``exact`` (the same codes
through the standalone's codec in float64 against its own offline decode; fp32 pass only).

    python -m q3tts.verify.faults.streaming --report-dir reports
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# name -> (planted bug, the dtypes whose bounds must catch it, patch(streaming module) -> None)
StreamingFault = tuple[str, tuple[str, ...], Callable]


def _less_context(m):
    derived = m.tail_context_frames
    m.tail_context_frames = lambda codec: derived(codec) - 1


def _half_context(m):
    derived = m.tail_context_frames
    m.tail_context_frames = lambda codec: derived(codec) // 2


def _no_context(m):
    m.tail_context_frames = lambda codec: 0


def _unsplit(m):
    m.UPSTREAM_CHUNK_FRAMES = 10**6


FAULTS: dict[str, StreamingFault] = {
    # fp32 and the exact float64 case see it; in bf16 its error is the size of the clean rounding
    # noise (measured: the bf16 worst is unchanged), so bf16 is not asked to catch it.
    "less_context": ("one latent frame less left context than the decoder's receptive field", ("fp32",), _less_context),
    "unsplit_300": ("chunks not split at upstream's 300-frame boundary", ("fp32",), _unsplit),
    "half_context": ("half the derived left context", ("fp32", "bf16"), _half_context),
    "no_context": ("no left context: every chunk decoded from scratch", ("fp32", "bf16"), _no_context),
}


PATCHED = ("tail_context_frames", "UPSTREAM_CHUNK_FRAMES")  # the module names the faults replace


@contextlib.contextmanager
def planted(name: str):
    """The streaming module with fault ``name`` applied, restored afterwards."""
    import q3tts.standalone.streaming as streaming

    saved = {key: getattr(streaming, key) for key in PATCHED}
    try:
        FAULTS[name][2](streaming)
        yield
    finally:
        for key, value in saved.items():
            setattr(streaming, key, value)


def case_kind(case: str) -> str:
    if case.startswith("streaming.exact_float64."):
        return "exact"
    return "crossing" if case.startswith("streaming.codec_") else "chunked"


@dataclass
class Worst:
    max_abs: float = 0.0
    snr_db: float = math.inf

    def add(self, metrics: dict) -> None:
        self.max_abs = max(self.max_abs, float(metrics["max_abs"]))
        self.snr_db = min(self.snr_db, float(metrics["snr_db"]))


def worst_by_kind(results) -> dict[str, dict]:
    out: dict[str, Worst] = {}
    for r in results:
        out.setdefault(case_kind(r.case), Worst()).add(r.metrics)
    return {k: dict(max_abs=w.max_abs, snr_db=w.snr_db) for k, w in sorted(out.items())}


def run_pair(wrapper, standalone, model_type: str, dtype, dtype_name: str, frames: int, seed: int) -> dict:
    """Clean, then every fault, on one checkpoint in one dtype."""
    from q3tts.verify.cases.streaming import streaming_results
    from q3tts.verify.faults.catalogue import CleanRunError

    key = f"streaming-selftest-{model_type}"
    clean = streaming_results(wrapper, standalone, model_type, dtype, seed, frames, key)
    if not clean or not all(r.passed for r in clean):
        raise CleanRunError(
            f"{model_type} {dtype_name}: clean streaming cases fail {[r.case for r in clean if not r.passed]}"
        )
    faults = {}
    for name, (_, expected, _) in FAULTS.items():
        with planted(name):
            got = streaming_results(wrapper, standalone, model_type, dtype, seed, frames, key)
        failing = sorted(r.case for r in got if not r.passed and not r.error)
        crashed = sorted(r.case for r in got if r.error)
        faults[name] = dict(
            caught=bool(failing),
            expected=dtype_name in expected,
            failing=failing,
            crashed=crashed,
            worst=worst_by_kind(got),
        )
    return dict(
        checkpoint=f"tiny-{model_type}",
        dtype=dtype_name,
        clean_cases=len(clean),
        clean=worst_by_kind(clean),
        faults=faults,
    )


def run_self_test(dtype_names=("fp32", "bf16"), frames: int = 24, seed: int = 0) -> dict:
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.checkpoints import checkpoint_pairs
    from q3tts.verify.compare import DTYPES
    from q3tts.verify.machine import machine
    from q3tts.verify.report.console import Progress, UpstreamOutput, echo, maybe_captured

    quiet = UpstreamOutput()  # upstream's prints and warnings stay off the console
    runs = []
    with tempfile.TemporaryDirectory(prefix="verify-streaming-selftest-") as work:
        pairs, frames, _ = checkpoint_pairs(None, None, frames, Path(work), Progress())
        for dn in dtype_names:
            for name, _source, up, st in pairs:
                t0 = time.perf_counter()
                with maybe_captured(quiet):
                    wrapper = load_upstream_wrapper(up, DTYPES[dn])
                    standalone = Qwen3TTS.from_pretrained(st, dtype=DTYPES[dn])
                    run = run_pair(wrapper, standalone, name.removeprefix("tiny-"), DTYPES[dn], dn, frames, seed)
                runs.append(run)
                echo(f"  {name} {dn}: clean {run['clean_cases']} cases pass; " + _fault_line(run))
                echo(f"    ({time.perf_counter() - t0:.0f} s)")
    missed = [
        f"{r['checkpoint']} {r['dtype']} {n}"
        for r in runs
        for n, f in r["faults"].items()
        if f["expected"] and not f["caught"]
    ]
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return dict(
        created=created, machine=machine(), frames=frames, seed=seed, runs=runs, missed=missed, passed=not missed
    )


def _fault_line(run: dict) -> str:
    return ", ".join(f"{n} {'caught' if f['caught'] else 'not caught'}" for n, f in run["faults"].items())


def render_markdown(report: dict) -> str:
    from q3tts.verify.machine import describe

    lines = [
        "# Streaming self-test",
        "",
        f"`python -m q3tts.verify.faults.streaming` on {describe(report['machine'])}, {report['created'][:10]}: "
        f"the streaming cases of the default run (tiny fixtures, {report['frames']} frames, seed {report['seed']}), "
        "clean first, then under each planted streaming bug. A fault is caught when a case that passed clean fails "
        "by its numbers. Worst per case kind: max abs / SNR dB.",
        "",
        f"**Verdict: {'PASS' if report['passed'] else 'FAIL: not caught ' + ', '.join(report['missed'])}**",
        "",
        "| checkpoint | dtype | run | must catch | caught | chunked | crossing | exact (float64) | failing cases |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        rows = [("clean", None)] + list(r["faults"].items())
        for name, f in rows:
            worst = r["clean"] if f is None else f["worst"]
            cells = [_cell(worst.get(k)) for k in ("chunked", "crossing", "exact")]
            must = "" if f is None else "yes" if f["expected"] else "no"
            caught = f"{r['clean_cases']} pass" if f is None else "yes" if f["caught"] else "no"
            failing = "" if f is None else f"{len(f['failing'])}"
            lines.append(
                f"| {r['checkpoint']} | {r['dtype']} | {name} | {must} | {caught} | {' | '.join(cells)} | {failing} |"
            )
    lines += ["", "Planted bugs:", ""] + [
        f"- `{n}`: {d} (must catch in {', '.join(e)})" for n, (d, e, _) in FAULTS.items()
    ]
    return "\n".join(lines) + "\n"


def _cell(w: dict | None) -> str:
    return "" if w is None else f"{w['max_abs']:.3g} / {w['snr_db']:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m q3tts.verify.faults.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--dtypes", default="fp32,bf16")
    args = parser.parse_args(argv)
    report = run_self_test(tuple(args.dtypes.split(",")), args.frames)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "streaming-faults.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.report_dir / "streaming-faults.md").write_text(render_markdown(report))
    print(
        f"streaming self-test: {'PASS' if report['passed'] else 'FAIL'}; report: {args.report_dir / 'streaming-faults.md'}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
