"""The fault self-test in fast mode: every catalogue fault on the generation side is planted in the
standalone model, a fast engine is compiled on the faulty model (module attributes are traced into the
graphs as constants, so it must be built under the fault), and the fast-path
checks of verify/cases/fast.py must fail.

A fast path that hides a real bug is worse than a slow one: this proves the fast checks see every
fault the exact checks see, through the compiled graphs. Codec and speaker-encoder faults are not
run here: decoding codes to audio and the x-vector are the same eager code in both modes with no
fast variant, and the exact self-test's component forward cases catch them (measured: the speaker
mel-hop fault moves the x-vector too little to change 12 frames of tiny-model codes, so only the
encoder's own forward case sees it); likewise the speech-tokenizer encoder faults.

    verify-parity --fast --self-test [--dtype fp32] [--faults NAMES]
    verify-parity --fast --self-test --quant int8|int4 [--faults NAMES]

With ``--quant`` the faults are planted in the plain fp32 model and a weight-only quantized copy of
the faulty model is made (standalone/quant.py), so a weight fault is one the quantizer sees, as a
bug in a checkpoint or a loader would be. The checks are the sharp ones: against upstream on the
clean model's dequantized weights, with the plain fp32 bounds and codes judged (dequantized.py);
the mode's own wide bounds (its fidelity) measured int4 missing two of the first eight faults.
Faults outside the graphs are planted in the clean quantized model its shared engine runs.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import torch

from q3tts.standalone.fast import FastEngine
from q3tts.standalone.quant import parse_quant, quantize_model
from q3tts.verify.cases.fast import run_fast_parity
from q3tts.verify.cases.generation import MODES
from q3tts.verify.machine import describe, machine
from q3tts.verify.report.console import echo

# Components the fast path does not replace: the same eager code runs in both modes, and the exact
# self-test's forward cases of that component are what catch their faults.
OFF_FAST_PATH = ("codec", "speaker_encoder")


@dataclass
class FastFaultResult:
    fault: str
    description: str
    component: str
    dtype: str
    detected: bool  # a fast check that passed clean failed by its numbers (not by the standalone raising)
    failing: list[str]  # the failing fast checks (forward cases, teacher-forced and generation cases)
    compile_seconds: float
    crashed: list[str] = field(default_factory=list)  # failing checks whose standalone side raised
    crash: str = ""  # the whole fast run raised under the fault (type: message)
    failing_metrics: dict = field(default_factory=dict)  # failing check -> its numbers (fast_failing_metrics)
    quant: str | None = None  # the weight-only mode checked (None: the plain dtype)

    @property
    def outcome(self) -> str:
        return "caught" if self.detected else "crashed" if self.crashed or self.crash else "missed"


# Faults of these components live outside the compiled graphs (the decode loop, prompt building,
# the sampler): an engine compiled on the clean model computes exactly what one compiled under the
# fault would, so one engine per model serves all of them (saves a compile per fault).
OUTSIDE_GRAPHS = ("generation",)


def quantized_copy(model, quant: str):
    """A weight-only quantized copy of the plain ``model``: made under a planted fault, the faulty
    weights and attributes are what get quantized and compiled. The original stays plain."""
    out = copy.deepcopy(model)
    quantize_model(out, parse_quant(quant))
    return out


def run_fast_fault(
    fault,
    wrapper,
    standalone,
    dtype,
    dtype_name,
    frames: int,
    options,
    engine: FastEngine | None = None,
    engine_options: dict | None = None,
    case_names: tuple[str, ...] | None = None,
    modes: tuple[str, ...] = tuple(MODES),
    quant: str | None = None,
) -> FastFaultResult:
    """``engine``: a clean engine to reuse, only for faults in OUTSIDE_GRAPHS. ``engine_options``:
    FastEngine keywords of the engines built here (e.g. compile_prefill). ``case_names`` and
    ``modes`` narrow the generation cases (the self-test runs them all; a test may aim at one).
    ``quant``: judge that weight-only mode, ``wrapper`` being upstream on the clean quantized
    model's dequantized weights (dequantized.load_dequantized_reference); a plain ``standalone`` is
    quantized under the fault (quantized_copy), a quantized one (the shared engine's) used as it is."""
    if engine is not None and fault.component not in OUTSIDE_GRAPHS:
        raise ValueError(f"{fault.name}: a {fault.component} fault needs an engine compiled under the fault")
    own = engine is None
    crash = ""
    report = {"failing": [], "raised": []}
    with fault.inject(standalone):
        try:
            model = quantized_copy(standalone, quant) if quant and standalone.quant is None else standalone
            if own:
                engine = FastEngine(model.talker, model.code_predictor, options=options, **(engine_options or {}))
            # Every sampler regime of the exact suite: some faults only show when the talker and the code
            # predictor sample differently (split_do_sample) or on tied top-k scores (split_top_k).
            report = run_fast_parity(
                wrapper,
                model,
                dtype,
                dtype_name,
                engine=engine,
                max_new_tokens=frames,
                modes=modes,
                case_names=case_names,
                quant=quant,
                dequantized_reference=bool(quant),
            )
        except Exception as e:  # a fault that only makes the run raise is a crash, never a catch
            crash = f"{type(e).__name__}: {e}"
    if own:
        torch._dynamo.reset()  # the next fault compiles a fresh engine; drop this one's graphs
    raised = set(report["raised"])
    return FastFaultResult(
        fault.name,
        fault.description,
        fault.component,
        dtype_name,
        any(name not in raised for name in report["failing"]),
        report["failing"],
        engine.compile_seconds if engine is not None else 0.0,
        crashed=sorted(raised),
        crash=crash,
        failing_metrics=fast_failing_metrics(report),
        quant=quant,
    )


def fast_failing_metrics(report: dict) -> dict[str, dict]:
    """The numbers of every failing fast check of ``run_fast_parity``'s report: forward cases (max rel,
    cosine, max abs over the bound), stepwise rows (max rel, min cosine, whether decisions held),
    teacher-forced agreement, and the first divergence of a generation case."""
    failing = set(report["failing"])
    out: dict[str, dict] = {}
    for c in report.get("forward", []):
        if c["case"] in failing:
            ratio = c["max_abs"] / c["bound"] if c["bound"] else float("inf")
            out[c["case"]] = dict(max_rel=c["max_rel"], cosine=c["cosine"], over_bound=ratio)
    for s in report.get("stepwise", []):
        name = f"stepwise.{s['case']}.{s['mode']}"
        if name in failing:
            keys = ("max_rel", "min_cosine", "decisions_identical")
            out[name] = {k: s[k] for k in keys if k in s}
    for a in report.get("teacher_forced", []):
        if f"teacher_forced.{a['case']}" in failing:
            out[f"teacher_forced.{a['case']}"] = {k: a.get(k) for k in ("fraction", "min_agreement")}
    for g in report.get("generation", []):
        name = f"generation.{g['case']}.{g['mode']}"
        if name in failing:
            out[name] = dict(first_divergence=g.get("first_divergence"))
    return out


def _clean_engines(pairs, dtype, dtype_name, frames, options, engine_options, quant=None) -> dict:
    """{model type: clean engine} after the fast checks pass on it without a fault; raises
    CleanRunError otherwise (a self-test needs a clean pass of the same checks). ``pairs`` holds
    the models the engines run (quantized ones for a ``quant`` self-test)."""
    from q3tts.verify.faults.catalogue import CleanRunError

    engines = {}
    for mt, (wrapper, st) in pairs.items():
        engine = FastEngine(st.talker, st.code_predictor, options=options, **(engine_options or {}))
        report = run_fast_parity(
            wrapper, st, dtype, dtype_name, engine=engine, max_new_tokens=frames, modes=tuple(MODES), quant=quant,
            dequantized_reference=bool(quant),
        )  # fmt: skip
        if not report["passed"]:
            label = f"{dtype_name}{f' {quant}' if quant else ''}"
            raise CleanRunError(f"{mt} {label}: the clean fast checks fail {report['failing'][:5]}")
        engines[mt] = engine
    return engines


def run_fast_self_test(
    report_dir: Path,
    dtype_names=("fp32",),
    fault_names: list[str] | None = None,
    options: dict | None = None,
    frames: int = 12,
    engine_options: dict | None = None,
    quant: str | None = None,
) -> bool:
    """Every fault of the catalogue on the fast path's side, in each dtype (fp32 only with ``quant``);
    writes fast_faults.{json,md} (fast_faults-QUANT.* with ``quant``). True when all are caught."""
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.fixtures.writer import MODEL_TYPES, write_upstream_checkpoint

    if quant and tuple(dtype_names) != ("fp32",):
        raise click.BadParameter(
            "the quantized fast modes are checked with fp32 activations only", param_hint="--dtype"
        )
    catalogue = [f for f in CATALOGUE if f.component not in OFF_FAST_PATH]
    if fault_names:
        unknown = sorted(set(fault_names) - {f.name for f in CATALOGUE})
        if unknown:
            raise click.BadParameter(f"unknown fault(s) {unknown}", param_hint="--faults")
        catalogue = [f for f in catalogue if f.name in fault_names]
    skipped = [f.name for f in CATALOGUE if f.component in OFF_FAST_PATH and (not fault_names or f.name in fault_names)]
    rows: list[FastFaultResult] = []
    with tempfile.TemporaryDirectory(prefix="verify-fast-selftest-") as work:
        work = Path(work)
        dirs = {}
        for i, mt in enumerate(MODEL_TYPES):
            if any(f.model_type == mt for f in catalogue):
                up = write_upstream_checkpoint(work / f"up-{mt}", mt, seed=10 + i)
                convert_checkpoint(up, work / f"st-{mt}")
                dirs[mt] = (up, work / f"st-{mt}")
        for dn in dtype_names:
            rows += _self_test_dtype(dirs, catalogue, dn, frames, options, engine_options, quant)
    _write(report_dir, dtype_names, rows, skipped, frames, options, engine_options, quant)
    caught = sum(r.detected for r in rows)
    stem = f"fast_faults-{quant}" if quant else "fast_faults"
    echo(f"\nfast self-test: {caught}/{len(rows)} faults caught; report: {report_dir / f'{stem}.md'}")
    return caught == len(rows)


def _self_test_dtype(dirs, catalogue, dn, frames, options, engine_options, quant) -> list[FastFaultResult]:
    """The clean pass, then every fault, in one dtype: {model type: (upstream dir, standalone dir)}."""
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.dequantized import load_dequantized_reference
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.compare import DTYPES

    dtype = DTYPES[dn]
    torch._dynamo.reset()
    plain = {mt: Qwen3TTS.from_pretrained(st, dtype=dtype) for mt, (_up, st) in dirs.items()}
    if quant:  # quantized copies run the clean engines (faults outside the graphs go there); upstream
        # on their dequantized weights is the reference of every fault (one upstream load per type)
        models = {mt: quantized_copy(st, quant) for mt, st in plain.items()}
        refs = {mt: load_dequantized_reference(dirs[mt][0], models[mt]) for mt in plain}
    else:
        models = plain
        refs = {mt: load_upstream_wrapper(dirs[mt][0], dtype) for mt in plain}
    clean = {mt: (refs[mt], models[mt]) for mt in plain}  # what the clean engines run
    pairs = {mt: (refs[mt], plain[mt]) for mt in plain}  # where faults inside the graphs are planted
    # The same checks clean first, on clean engines (kept for the faults outside the graphs).
    shared = _clean_engines(clean, dtype, dn, frames, options, engine_options, quant)
    label = f"{dn}{f' {quant}' if quant else ''}"
    echo(f"  clean  {label} " + ", ".join(f"{mt}: every fast check passes" for mt in shared))
    rows = []
    for fault in sorted(catalogue, key=lambda f: f.component not in OUTSIDE_GRAPHS):
        wrapper, st = pairs[fault.model_type]
        engine = None
        if fault.component in OUTSIDE_GRAPHS:
            st = clean[fault.model_type][1]
            engine = shared.get(fault.model_type) or FastEngine(
                st.talker, st.code_predictor, options=options, **(engine_options or {})
            )
            shared[fault.model_type] = engine
        elif shared:
            shared.clear()
            torch._dynamo.reset()
        r = run_fast_fault(
            fault, wrapper, st, dtype, dn, frames, options, engine=engine, engine_options=engine_options, quant=quant
        )
        rows.append(r)
        echo(
            f"  {r.outcome.upper() if not r.detected else r.outcome}  {label} {fault.name:26} {fault.description}; "
            f"failing: {', '.join(r.failing[:4]) or 'nothing'}{' ...' if len(r.failing) > 4 else ''}"
        )
    return rows


def _write(
    report_dir: Path, dtype_names, rows, skipped, frames, options, engine_options: dict | None = None, quant=None
) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"fast_faults-{quant}" if quant else "fast_faults"
    records = [asdict(r) | {"outcome": r.outcome} for r in rows]
    (report_dir / f"{stem}.json").write_text(json.dumps(records, indent=2) + "\n")
    md = ["# Fault-injection self-test in fast mode" + (f", weight-only {quant}" if quant else ""), ""]
    for dn in dtype_names:
        these = [r for r in rows if r.dtype == dn]
        label = f"{dn} activations, {quant} weights" if quant else dn
        md.append(
            f"**{label}: {sum(r.detected for r in these)} of {len(these)} planted faults caught by the fast checks.**  "
        )
    if quant:
        md += [
            "",
            f"Each fault is planted in the plain fp32 model and a weight-only {quant} copy of the faulty model is "
            f"compiled (standalone/quant.py), so weight faults pass through the quantizer. The checks are judged "
            f"against upstream in fp32 on the clean quantized model's dequantized weights (verify/cases/dequantized.py) "
            f"with the plain fp32 bounds, generated codes included.",
        ]
    md += [
        "",
        f"Each fault is planted (verify/faults/catalogue.py), a fast engine is compiled on the faulty model (inductor options "
        f"{options if options is not None else 'standalone/fast.py COMPILE_OPTIONS'}), and verify/cases/fast.py's "
        f"checks run: forward cases within the fast tolerances, teacher-forced argmax agreement, the stepwise "
        f"check in every sampler regime (verify/cases/fast_stepwise.py: decisions on upstream's logits must equal upstream's "
        f"codes, the compiled graphs' logits at every step within FAST_STEP_TOLERANCES; judged in every dtype), and "
        f"(where the dtype requires identical codes) free-running generation, {frames} frames, seed 0. Faults outside "
        f"the compiled graphs (component generation: loop, prompt, sampler) share one engine compiled on the clean model.",
        "",
        f"{describe(machine())}.",
        "",
    ]
    if engine_options:
        md += [
            f"Engine options {engine_options}"
            + (
                ": the talker's prompt prefill is a compiled graph too, so the free-running codes of the regimes "
                "calibrated on upstream's exact first draw (compare.EXACT_FIRST_DRAW_MODES) are reported, not "
                "judged; their decisions are still judged by the stepwise check."
                if engine_options.get("compile_prefill")
                else "."
            ),
            "",
        ]
    if skipped:
        md += [
            f"Not run in fast mode (codec and speaker encoder: eager in both modes, no fast variant; the exact self-test's forward cases catch them): {', '.join(skipped)}.",
            "",
        ]
    md += ["| fault | planted bug | component | dtype | caught | failing fast checks |", "|---|---|---|---|---|---|"]
    for r in rows:
        shown = ", ".join(r.failing[:3]) + (f" (+{len(r.failing) - 3})" if len(r.failing) > 3 else "")
        md.append(
            f"| {r.fault} | {r.description} | {r.component} | {r.dtype} | {'yes' if r.detected else r.outcome.upper()} "
            f"| {shown} |"
        )
    (report_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
