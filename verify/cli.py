"""verify-parity: prove, with numbers, that the standalone model matches upstream qwen-tts."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from q3tts.verify.checkpoints import checkpoint_pairs
from q3tts.verify.report.console import echo

DTYPE_CHOICES = ("fp32", "bf16")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", required=False)
@click.option(
    "--standalone",
    "standalone_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Use this converted directory instead of converting SRC.",
)
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice(DTYPE_CHOICES),
    help="Dtypes to check (repeatable). Default: fp32 and bf16.",
)
@click.option("--seeds", default="0,1", show_default=True, help="Comma-separated seeds for sampled generation.")
@click.option(
    "--frames",
    type=int,
    default=None,
    help="Frames generated per generation case (default 24 on the fixtures, 6 on a real checkpoint).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False),
    default="parity-report",
    show_default=True,
    help="Where parity.json and parity.md are written.",
)
@click.option("--no-generation", is_flag=True, help="Only component forwards and audio.")
@click.option(
    "--no-streaming",
    is_flag=True,
    help="Skip the streaming cases (streamed audio at several chunk sizes against upstream's offline audio).",
)
@click.option(
    "--training",
    is_flag=True,
    help="Also check fine-tuning on a tiny training fixture: the upstream recipe against upstream's training "
    "step (loss, logits, every gradient, in each --dtype) and both recipes against generation (fp32).",
)
@click.option(
    "--sensitivity/--no-sensitivity",
    default=None,
    help="Measure knob sensitivity (each sampling knob perturbed on the standalone side; fp32 runs). "
    "Default: on for the embedded default, off for SRC (it regenerates every sampler plan ~15 times).",
)
@click.option(
    "--against-upstream",
    "against",
    default=None,
    metavar="VERSION",
    help="Build a fresh virtualenv with qwen-tts==VERSION, or DIST==VERSION for DIST qwen-tts, qwen-tts-hf or "
    "qwen-tts-compat ('latest' for the newest release), run the tiny parity there and write the report and gate.json. "
    "Exit 0 pass, 1 parity-fail, 3 upstream-broken, 4 install-fail, 2 anything else.",
)
@click.option(
    "--transformers",
    "transformers_version",
    default=None,
    metavar="VERSION",
    help="With --against-upstream: install this transformers instead of what the release pins "
    "(the release itself goes in with --no-deps, as projects escaping the pin do).",
)
@click.option(
    "--reuse-torch",
    is_flag=True,
    help="With --against-upstream: let the new environment see this one's packages (torch, ...) "
    "so only what VERSION needs differently is installed.",
)
@click.option(
    "--self-test",
    is_flag=True,
    help="Plant each fault of the catalogue in the standalone side of the tiny fixtures and check that "
    "the suite catches it and names the right component and layer (in each --dtype).",
)
@click.option(
    "--faults",
    "fault_names",
    default=None,
    metavar="NAMES",
    help="With --self-test: only these comma-separated faults (default: the whole catalogue).",
)
@click.option("--verbose", is_flag=True, help="Show upstream's own output (warnings, banners) as it comes.")
@click.option(
    "--fast",
    is_flag=True,
    help="Measure the compiled fast path instead (forward distances, teacher-forced agreement, generation "
    "agreement; fast_parity.md). With --self-test: the fault self-test through the fast path.",
)
@click.option(
    "--compile-prefill",
    is_flag=True,
    help="With --fast: measure the fast path with its compiled prompt prefill (FastEngine compile_prefill).",
)
@click.option(
    "--engine",
    type=click.Choice(["qwentts.cpp"]),
    default=None,
    help="Check another runtime instead of the standalone model: qwentts.cpp through its binding "
    "(pip install 'qwen3-tts-standalone[peers]'), on SRC's convert-ckpt --to gguf output per --quant.",
)
@click.option(
    "--quant",
    default=None,
    metavar="LIST",
    help="With --engine: GGUF types (default F32,F16,BF16,Q8_0). With --engine and --fast: our "
    "quantized fast modes, each against qwentts.cpp at the same bit width (int8: Q8_0, int4: Q4_K_M; "
    "bitwidth-agreement.md; --dtype picks the activations, default bf16). With --fast: weight-only quantized fast modes "
    "(int8, int8-g32, int8-g64, int8-g128, int4, int4-g32, int4-g64, int4-g128), each judged against upstream fp32 by the mode's bounds and against "
    "upstream on its dequantized weights by the plain ones (fast_parity-QUANT.md); with --self-test, its faults.",
)
@click.option(
    "--gguf",
    "gguf_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="With --engine and SRC: check this existing convert-ckpt --to gguf output instead of converting.",
)
@click.option(
    "--mixed",
    is_flag=True,
    help="Report the half-precision modes (bf16, fp16, bf16-mixed, fp16-mixed) against upstream fp32 instead: "
    "forward distances, code agreement, audio SNR (mixed-precision.md).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(**options) -> None:
    """Compare upstream qwen-tts and the standalone model on SRC (an upstream checkpoint directory or
    hub id). Without SRC, builds tiny random checkpoints of all three model types (the embedded
    default). Exits 0 only when every case passes."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    o = Options(**options)
    mode = pick_mode(o)
    try:
        o.check()
        ok = run_mode(mode, o)
    except click.ClickException:
        raise
    except Exception as e:  # one line unless --debug
        # The gate reads error.json to tell upstream breakage from a crash of ours.
        if mode == "parity":
            from q3tts.verify.gate.outcome import write_error

            write_error(Path(o.report_dir), e, STAGE["stage"], STAGE.get("fixtures"))
        if o.debug:
            raise
        click.echo(f"verify-parity: error: {type(e).__name__}: {e}", err=True)
        sys.exit(2)
    sys.exit(0 if ok else 1)


# Modes that run upstream without their own accounting of its output: the whole mode runs captured
# (unless --verbose), our lines reach the console past the capture (console.echo, Progress), and
# upstream's lines are counted into REPORT_DIR/upstream-output.json. The parity mode counts them per
# case group into parity.json; the gate runs verify-parity in a child process.
CAPTURED_MODES = ("mixed", "engine", "fast", "self_test")


def run_mode(mode: str, o: Options) -> bool:
    from q3tts.verify.report.console import UpstreamOutput

    if mode not in CAPTURED_MODES or o.verbose:
        return MODES[mode](o)
    output = UpstreamOutput()
    with output.captured():
        ok = MODES[mode](o)
    summary = output.summary()
    if summary["lines"]:
        path = Path(o.report_dir) / "upstream-output.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
        echo(
            f"upstream output kept off the console: {summary['lines']} lines ({len(summary['distinct'])} distinct): {path}"
        )
    return ok


@dataclass(frozen=True)
class Options:
    """verify-parity's options, as click parses them."""

    src: str | None
    standalone_dir: str | None
    dtypes: tuple[str, ...]
    seeds: str
    frames: int | None
    report_dir: str
    no_generation: bool
    no_streaming: bool
    training: bool
    sensitivity: bool | None
    against: str | None
    reuse_torch: bool
    self_test: bool
    fault_names: str | None
    verbose: bool
    transformers_version: str | None
    fast: bool
    compile_prefill: bool
    engine: str | None
    quant: str | None
    gguf_dir: str | None
    mixed: bool
    debug: bool

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]

    @property
    def dtype_list(self) -> tuple[str, ...]:
        return self.dtypes or DTYPE_CHOICES

    def check(self) -> None:
        if not self.seed_list:
            raise click.BadParameter("at least one seed", param_hint="--seeds")
        if self.compile_prefill and not self.fast:
            raise click.BadParameter("measures the fast path: use it with --fast", param_hint="--compile-prefill")
        if self.fast and self.quant and not self.engine:
            check_fast_quant(self.fast_quants, self.dtypes)

    @property
    def fast_quants(self) -> tuple[str | None, ...]:
        """--fast: the weight-only modes to measure, (None,) for the plain fast path."""
        return tuple(q.strip() for q in self.quant.split(",") if q.strip()) if self.quant else (None,)


def check_fast_quant(quants, dtypes) -> None:
    """--fast --quant: known modes, fp32 activations (what their bounds are measured at); with
    --self-test too (the faults planted under the quantizer, fast_selftest.py)."""
    from q3tts.standalone.quant import QUANT_NAMES

    bad = [q for q in quants if q not in QUANT_NAMES]
    if bad or not quants:
        raise click.BadParameter(
            f"{', '.join(map(repr, bad)) or 'empty'}: with --fast, one or more of {', '.join(QUANT_NAMES)}",
            param_hint="--quant",
        )
    if any(d != "fp32" for d in dtypes):
        raise click.BadParameter(
            "the quantized fast modes are measured with fp32 activations only: omit --dtype or give fp32",
            param_hint="--dtype",
        )


def pick_mode(o: Options) -> str:
    """The one mode a command line asks for, in this order of precedence."""
    if o.mixed:
        return "mixed"
    if o.engine:
        return "engine"
    if o.fast:
        return "fast"
    if o.self_test:
        return "self_test"
    if o.against:
        return "gate"
    return "parity"


def _mode_mixed(o: Options) -> bool:
    from q3tts.verify.cases.mixed import run_mixed_cli
    from q3tts.verify.report.console import Progress

    return run_mixed_cli(o.src, o.standalone_dir, o.seed_list, o.frames, Path(o.report_dir), Progress())


def _mode_engine(o: Options) -> bool:
    if o.fast:  # our quantized fast modes against the peer at the same bit width
        from q3tts.verify.engines.bitwidth import run_bitwidth

        if o.self_test or o.gguf_dir:
            raise click.BadParameter("--engine with --fast compares converted pairs: no --self-test or --gguf")
        return run_bitwidth(o.src, o.quant, o.dtypes or None, o.frames, Path(o.report_dir), seeds=o.seed_list)
    return _run_engine(o.engine, o.src, o.gguf_dir, o.quant, o.frames, Path(o.report_dir), o.self_test)


def _mode_fast(o: Options) -> bool:
    quants = o.fast_quants
    return all(
        [
            run_fast(
                o.src,
                o.standalone_dir,
                ("fp32",) if quant else o.dtype_list,
                o.seed_list,
                o.frames,
                Path(o.report_dir),
                o.self_test,
                o.fault_names,
                o.compile_prefill,
                quant,
            )
            for quant in quants
        ]
    )


def _mode_self_test(o: Options) -> bool:
    names = [n.strip() for n in o.fault_names.split(",") if n.strip()] if o.fault_names else None
    return run_self_test(Path(o.report_dir), o.dtype_list, names)


def _mode_gate(o: Options) -> bool:
    from q3tts.verify.gate.release import run_gate

    passthrough = [*dtypes_args(o.dtypes), "--seeds", o.seeds] + (["--frames", str(o.frames)] if o.frames else [])
    # Narrowing the inner run is the user's choice (the gate matrix runs it whole).
    passthrough += ["--no-streaming"] if o.no_streaming else []
    passthrough += ["--no-sensitivity"] if o.sensitivity is False else []
    sys.exit(
        run_gate(
            o.against,
            Path(o.report_dir),
            transformers=o.transformers_version,
            reuse_torch=o.reuse_torch,
            extra_args=passthrough + (["--verbose"] if o.verbose else []),
        )
    )


def _mode_parity(o: Options) -> bool:
    measure = (o.src is None) if o.sensitivity is None else o.sensitivity
    return run(
        o.src,
        o.standalone_dir,
        o.dtype_list,
        o.seed_list,
        o.frames,
        Path(o.report_dir),
        not o.no_generation,
        sensitivity=measure and not o.no_generation,
        verbose=o.verbose,
        streaming=not o.no_streaming and not o.no_generation,
        training=o.training,
    )


MODES = {
    "mixed": _mode_mixed,
    "engine": _mode_engine,
    "fast": _mode_fast,
    "self_test": _mode_self_test,
    "gate": _mode_gate,
    "parity": _mode_parity,
}


def run_fast(
    src,
    standalone_dir,
    dtype_names,
    seeds,
    frames,
    report_dir: Path,
    self_test,
    fault_names,
    compile_prefill=False,
    quant=None,
) -> bool:
    engine_options = {"compile_prefill": True} if compile_prefill else None
    if self_test:
        from q3tts.verify.faults.fast_selftest import run_fast_self_test

        names = [n.strip() for n in fault_names.split(",") if n.strip()] if fault_names else None
        return run_fast_self_test(report_dir, dtype_names, names, engine_options=engine_options, quant=quant)
    from q3tts.verify.cases.fast import run_fast_cli

    return run_fast_cli(
        src, standalone_dir, dtype_names, seeds, frames, report_dir, engine_options=engine_options, quant=quant
    )


def _run_engine(engine, src, gguf_dir, quant, frames, report_dir: Path, self_test: bool) -> bool:
    from q3tts.verify.engines.parity import run_engine, run_engine_self_test

    if gguf_dir and src is None:
        raise click.BadParameter("--gguf needs SRC, the checkpoint it was converted from", param_hint="--gguf")
    if self_test:
        return run_engine_self_test(report_dir)
    return run_engine(src, gguf_dir, quant, frames, report_dir)


def dtypes_args(dtypes):
    for d in dtypes:
        yield from ("--dtype", d)


# What the run is doing (fixture, load, run), for the error record the gate classifies.
STAGE = {"stage": None}


def run(
    src,
    standalone_dir,
    dtype_names,
    seeds,
    frames,
    report_dir: Path,
    generation: bool,
    sensitivity: bool = False,
    verbose: bool = False,
    streaming: bool = True,
    training: bool = False,
) -> bool:
    from q3tts.verify.report.console import Progress, UpstreamOutput, maybe_captured
    from q3tts.verify.report.parity import build_report, render_markdown, verdict_line, write_report
    from q3tts.verify.report.training import training_dtypes, training_section

    progress = Progress(inline=not verbose)
    upstream_output = None if verbose else UpstreamOutput()
    with tempfile.TemporaryDirectory(prefix="verify-parity-") as work:
        STAGE["stage"] = "fixture"
        with maybe_captured(upstream_output):
            pairs, frames, fixtures = checkpoint_pairs(src, standalone_dir, frames, Path(work), progress)
        STAGE["fixtures"] = fixtures
        runs = []
        for name, source, up, st in pairs:
            for dn in dtype_names:
                runs.append(
                    _run_one(
                        name,
                        source,
                        up,
                        st,
                        dn,
                        seeds,
                        frames,
                        generation,
                        sensitivity,
                        progress,
                        upstream_output,
                        streaming,
                    )
                )
        section = training_section(Path(work) / "training", training_dtypes(dtype_names)) if training else None
        if section is not None:
            checks = "; ".join(
                f"{name.replace('_', ' ')} {'ok' if ok else 'FAIL'}" for name, ok in section["checks"].items()
            )
            click.echo(f"  training: {checks}; {'PASS' if section['passed'] else 'FAIL'}")
        STAGE["stage"] = "report"
        report = build_report(runs, seeds, frames, training=section)
        report["fixtures"] = fixtures
        if upstream_output is not None:
            report["upstream_output"] = upstream_output.summary()
            s = report["upstream_output"]
            if s["lines"]:
                click.echo(f"upstream output kept off the console: {s['lines']} lines ({len(s['distinct'])} distinct)")
        j, m = write_report(report, report_dir)
        click.echo("\n" + verdict_line(report))
        if report.get("knob_sensitivity", {}).get("blind"):
            click.echo(
                f"warning: sampling knobs no generation case can see: {', '.join(report['knob_sensitivity']['blind'])}"
            )
        for line in render_markdown(report).splitlines():
            if line.startswith("| ") and ("FAIL" in line) and "## " not in line:
                click.echo("  " + line)
        click.echo(f"report: {m} and {j}")
        return report["verdict"] == "PASS"


def _run_one(
    name, source, up, st, dn, seeds, frames, generation, sensitivity, progress, upstream_output, streaming=True
) -> dict:
    """The suite on one checkpoint at one dtype (and the knob sensitivity, in fp32)."""
    import torch

    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.cases.suite import config_summary, run_suite
    from q3tts.verify.compare import DTYPES
    from q3tts.verify.faults.sensitivity import knob_sensitivity
    from q3tts.verify.report.console import maybe_captured

    dtype = DTYPES[dn]
    progress.start(f"{name} / {dn}")
    STAGE["stage"] = "load"
    t0 = time.perf_counter()
    with maybe_captured(upstream_output):
        wrapper = load_upstream_wrapper(up, dtype)
    t_up = time.perf_counter() - t0
    t0 = time.perf_counter()
    standalone = Qwen3TTS.from_pretrained(st, dtype=dtype)
    t_st = time.perf_counter() - t0
    model_type = standalone.config.tts_model_type

    def on_group(group, got, seconds):
        bad = sum(1 for r in got if not r.passed)
        progress.group(f"{group} {len(got)} {'ok' if not bad else f'FAIL {bad}'} {seconds:.0f}s")

    STAGE["stage"] = "run"
    with maybe_captured(upstream_output):
        results = run_suite(
            wrapper,
            standalone,
            model_type,
            dtype,
            seeds,
            frames,
            cache_key=f"{name}:{up}",
            generation=generation,
            streaming=streaming and generation,
            on_group=on_group,
        )
    run_ok = all(r.passed for r in results)
    record = {
        "checkpoint": name,
        "source": source,
        "dtype": dn,
        "config": config_summary(standalone),
        "seconds_upstream": t_up + sum(r.seconds_upstream for r in results),
        "seconds_standalone": t_st + sum(r.seconds_standalone for r in results),
        "passed": run_ok,
        "cases": [r.as_dict() for r in results],
    }
    n_fail = sum(1 for r in results if not r.passed)
    verdict = "PASS" if run_ok else f"FAIL ({n_fail} of {len(results)} cases)"
    if sensitivity and dtype == torch.float32:
        with maybe_captured(upstream_output):
            ks = knob_sensitivity(wrapper, standalone, model_type, dtype, seeds, frames, cache_key=f"{name}:{up}")
        record["knob_sensitivity"] = ks
        progress.group(f"knobs {ks['plans']} plans {ks['seconds']:.0f}s")
    progress.finish(f"{verdict} ({len(results)} cases)")
    del wrapper, standalone
    torch.set_num_threads(torch.get_num_threads())
    return record


def run_self_test(report_dir: Path, dtype_names=("fp32",), fault_names: list[str] | None = None) -> bool:
    """Plant each fault and check the suite catches it. Per model type and dtype the same cases run
    clean first and must pass; a fault is caught only by a case that passed clean and then failed by
    its numbers (a standalone side that raises is 'crashed', not caught)."""
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.encoder import ENCODER_FAULTS
    from q3tts.verify.faults.training import TRAINING_FAULTS
    from q3tts.verify.report.training import training_fault_rows

    catalogue, encoder_faults = CATALOGUE, ENCODER_FAULTS
    if fault_names:
        unknown = sorted(set(fault_names) - {f.name for f in CATALOGUE + ENCODER_FAULTS + TRAINING_FAULTS})
        if unknown:
            raise click.BadParameter(f"unknown fault(s) {unknown}", param_hint="--faults")
        catalogue = tuple(f for f in CATALOGUE if f.name in fault_names)
        encoder_faults = tuple(f for f in ENCODER_FAULTS if f.name in fault_names)
    rows, exact_origin, clean_counts = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="verify-selftest-") as work:
        dirs = _self_test_checkpoints(Path(work), catalogue + encoder_faults)
        for dn in dtype_names:
            rows += _self_test_dtype(dn, dirs, catalogue, encoder_faults, exact_origin, clean_counts)
    if "fp32" in dtype_names:  # the training checks run in fp32 (as the encoder's do)
        rows += training_fault_rows(fault_names, echo)
    _write_self_test_report(report_dir, dtype_names, rows, exact_origin, clean_counts)
    caught = sum(r.ok for _, r in rows)
    echo(f"\nself-test: {caught}/{len(rows)} faults caught and located; report: {report_dir / 'faults.md'}")
    return caught == len(rows)


def _self_test_checkpoints(work: Path, faults) -> dict:
    """{model type: (upstream dir, standalone dir)} for the model types the faults need."""
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures.writer import MODEL_TYPES, write_upstream_checkpoint

    dirs = {}
    for i, mt in enumerate(MODEL_TYPES):
        if any(f.model_type == mt for f in faults):
            up = write_upstream_checkpoint(work / f"up-{mt}", mt, seed=10 + i)
            convert_checkpoint(up, work / f"st-{mt}")
            dirs[mt] = (up, work / f"st-{mt}")
    return dirs


SELF_TEST_SEEDS, SELF_TEST_FRAMES = [0], 12


def _self_test_dtype(dn, dirs, catalogue, encoder_faults, exact_origin, clean_counts) -> list:
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.encoder import encoder_results
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.compare import DTYPES
    from q3tts.verify.faults.catalogue import clean_run, forward_is_bit_identical, run_fault

    dtype = DTYPES[dn]
    pairs = {
        mt: (load_upstream_wrapper(up, dtype), Qwen3TTS.from_pretrained(st, dtype=dtype))
        for mt, (up, st) in dirs.items()
    }
    # Fault-free forward cases bit-identical: the first differing layer locates exactly.
    exact = {mt: forward_is_bit_identical(w.model, st, dtype) for mt, (w, st) in pairs.items()}
    exact_origin[dn] = all(exact.values())
    clean = {
        mt: clean_run(w, st, dtype, SELF_TEST_SEEDS, SELF_TEST_FRAMES, f"selftest-{mt}")
        for mt, (w, st) in pairs.items()
    }
    clean_counts.update({f"{dn} {mt}": len(names) for mt, names in clean.items()})
    echo(f"  clean  {dn} " + ", ".join(f"{mt}: {len(n)}/{len(n)} cases pass" for mt, n in clean.items()))
    rows = []
    for fault in catalogue:
        wrapper, standalone = pairs[fault.model_type]
        r = run_fault(
            fault,
            wrapper,
            standalone,
            seeds=SELF_TEST_SEEDS,
            frames=SELF_TEST_FRAMES,
            cache_key=f"selftest-{fault.model_type}",
            dtype=dtype,
            exact_origin=exact[fault.model_type],
            clean=clean[fault.model_type],
        )
        rows.append((dn, r))
        where = ", ".join(r.reported_layers) or "-"
        echo(
            f"  {_verdict_word(r)}  {dn} {fault.name:26} {fault.description}; "
            f"failing: {', '.join(r.failing_components) or 'nothing'} ({len(r.failing_cases)} cases); layer: {where}"
            + _crash_note(r)
        )
    if dn == "fp32" and encoder_faults:  # the encoder's parity is fp32 (codes must be identical there)
        w, st = pairs["base"]
        enc_clean = encoder_results(w, st, DTYPES["fp32"])
        if any(not r.passed for r in enc_clean):
            raise RuntimeError("the clean encoder cases do not pass: a self-test needs a clean pass")
        clean_counts[f"{dn} base encoder"] = len(enc_clean)
        for fault in encoder_faults:
            r = _encoder_fault_row(fault, *pairs[fault.model_type], {c.case for c in enc_clean})
            rows.append((dn, r))
            echo(
                f"  {_verdict_word(r)}  {dn} {fault.name:26} {fault.description}; "
                f"failing: {len(r.failing_cases)} encoder cases; stage: {', '.join(r.reported_layers) or '-'}"
                + _crash_note(r)
            )
    return rows


def _verdict_word(r) -> str:
    return "caught" if r.ok else ("CRASHED" if r.outcome == "crashed" else "MISSED")


def _crash_note(r) -> str:
    if r.crash:
        return f"; the run raised {r.crash}"
    if r.crashed_cases:
        return f"; {len(r.crashed_cases)} case(s) failed by raising (not counted)"
    return ""


def _write_self_test_report(report_dir: Path, dtype_names, rows, exact_origin: dict, clean_counts: dict) -> None:
    import json
    import re

    from q3tts.verify.machine import describe, machine

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "faults.json").write_text(
        json.dumps(
            [{"dtype": dn, **r.__dict__, "ok": r.ok, "outcome": r.outcome} for dn, r in rows],
            indent=2,
        )
        + "\n"
    )
    md = ["# Fault-injection self-test", ""]
    for dn in dtype_names:
        these = [r for d, r in rows if d == dn]
        md.append(f"**{dn}: {sum(r.ok for r in these)} of {len(these)} planted faults caught and located.**  ")
    md += [
        "",
        "Clean run first, on the same cases (seeds [0], 12 frames), which must all pass: "
        + ", ".join(f"{k} {n}/{n}" for k, n in clean_counts.items())
        + ". A fault counts as caught only when a case that passed clean fails by its numbers; one whose "
        "standalone side raises is 'crashed' (not caught). " + describe(machine()) + ".",
        "",
        "Each fault replaces one named seam of the standalone runtime (verify/faults/catalogue.py, verify/faults/encoder.py; "
        "training faults: verify/faults/training.py, checked by the training parity and the aligned consistency "
        "check, fp32). Seeds [0], 12 frames.",
        "",
        "A fault is located at the first layer whose output differs from upstream's at all, which is exact when",
        "the fault-free pair is bit-identical in every forward case ("
        + ", ".join(
            f"{dn}: {'yes' if ok else 'NO, so the first layer over tolerance is used'}"
            for dn, ok in exact_origin.items()
        )
        + ").",
        "Where the error first grows past the tolerance, when other layers too, follows as 'over tolerance'.",
        "",
        "| fault | planted bug | dtype | caught | failing components | failing cases | failed by raising (not counted) "
        "| located at / sampler |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dn, r in rows:
        # Layer faults: the first bad layer; generation faults: the modes of the failing cases.
        modes = sorted(
            {re.sub(r"\.seed\d+$", "", c).rsplit(".", 1)[-1] for c in r.failing_cases if c.startswith("generation.")}
        )
        where = ", ".join(r.reported_layers) or ("modes: " + ", ".join(modes) if modes else "-")
        if r.over_tolerance_layers and r.over_tolerance_layers != r.reported_layers:
            where += f" (over tolerance: {', '.join(r.over_tolerance_layers)})"
        md.append(
            f"| {r.fault} | {r.description} | {dn} | {_verdict_word(r).lower() if not r.ok else 'yes'} | {', '.join(r.failing_components)} | "
            f"{len(r.failing_cases)} | {len(r.crashed_cases) + bool(r.crash)} | {where} |"
        )
    (report_dir / "faults.md").write_text("\n".join(md) + "\n")


def _encoder_fault_row(fault, wrapper, standalone, clean: set[str] | None = None):
    """An encoder fault's result in the self-test's row type (stage = the layer it must name)."""
    from q3tts.verify.faults.catalogue import FaultResult
    from q3tts.verify.faults.encoder import run_encoder_fault

    e = run_encoder_fault(fault, wrapper, standalone, clean=clean)
    return FaultResult(
        e.fault,
        e.description,
        e.detected,
        e.component_named,
        e.stage_named,
        ["speech_encoder"] if e.detected else [],
        e.reported_stages,
        e.failing_cases,
        crashed_cases=e.crashed_cases,
        crash=e.crash,
        clean_cases=None if clean is None else len(clean),
    )


if __name__ == "__main__":
    main()
