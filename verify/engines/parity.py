"""``verify-parity --engine qwentts.cpp``: the GGML runtime, through its Python binding, against the
standalone model (bit-identical to upstream on the exact path), per model type and GGUF
quantisation; and ``--self-test --engine qwentts.cpp``: planted faults, each of which that run must
fail and name, after the clean conversions of the same case passed. The faults are the converter's
(verify/engines/gguf_faults.py) and the engine faults the static audit cannot see (a code-predictor
head swapped, the decoder beyond codebook 0 scaled, a speaker-encoder kernel flipped).

Without SRC the checkpoints are the engine fixtures (gguf.write_engine_checkpoint: the tiny talker
with 16 code groups and the released codec, the smallest shape the engine runs end to end) of all
three model types; the Base one clones a fixed reference audio (x-vector only), so both speaker
encoders run. The run exits 0 only on PASS: a failure is FAIL, anything not checked (a stage the
engine did not dump, no audio to compare) is INCOMPLETE. Reports: REPORT_DIR/engine-parity.{json,md}
and engine-faults.{json,md}, each with the CPU model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

# Our lines pass the capture of upstream's output that verify-parity runs this mode under.
from q3tts.verify.report.console import echo

QUANTS = ("F32", "F16", "BF16", "Q8_0")
MODEL_TYPES = ("base", "custom_voice", "voice_design")
TEXT = "Hello world, this is a test."


def parse_quants(value: str | None) -> list[str]:
    quants = [q.strip().upper() for q in (value or ",".join(QUANTS)).split(",") if q.strip()]
    bad = sorted(set(quants) - set(QUANTS))
    if bad or not quants:
        raise click.BadParameter(f"unknown {bad or value!r}; choose from {', '.join(QUANTS)}", param_hint="--quant")
    return quants


def request_for(model) -> dict[str, Any]:
    """The same request for both sides, by model type: a configured speaker for custom_voice, an
    instruction for voice_design, and for base the fixed reference audio as an x-vector voice clone,
    so each side's speaker encoder runs (qwentts.cpp's spk_enc tensors are judged by its x-vector)."""
    from q3tts.verify.engines.gguf import reference_audio

    mt = model.config.tts_model_type
    speakers = sorted(model.config.talker.spk_id)
    return {
        "text": TEXT,
        "speaker": speakers[0] if mt == "custom_voice" and speakers else None,
        "instruct": "A calm, clear voice." if mt == "voice_design" else None,
        "ref_audio": reference_audio() if mt == "base" else None,
    }


def _checkpoints(src, work: Path) -> list[tuple[str, Path, Path]]:
    """(name, upstream dir, standalone dir) per checkpoint."""
    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.model import resolve_checkpoint_dir
    from q3tts.verify.engines.gguf import write_engine_checkpoint

    out = []
    if src is None:
        echo("No SRC: engine fixtures (tiny talker, 16 code groups, released codec) of all three model types.")
        codec = None
        for i, mt in enumerate(MODEL_TYPES):
            up = write_engine_checkpoint(work / f"up-{mt}", mt, seed=10 + i, codec_dir=codec)
            codec = codec or up / "speech_tokenizer"
            convert_checkpoint(up, work / f"st-{mt}")
            out.append((f"engine-{mt}", up, work / f"st-{mt}"))
        return out
    up = resolve_checkpoint_dir(src)
    convert_checkpoint(up, work / "st")
    return [(Path(str(src)).name, up, work / "st")]


def check_pair(model, up: Path, gguf_dir: Path, frames: int, threads: int, name: str) -> dict[str, Any]:
    from q3tts.verify.engines.gguf import gguf_parity

    r = gguf_parity(up, gguf_dir, **request_for(model), max_new_tokens=frames, threads=threads, model=model)
    r["checkpoint"] = name
    return r


def echo_run(r: dict[str, Any]) -> None:
    """One line per run, then one per failure and per item not checked (an engine error is named)."""
    tf = r["teacher_forced"]
    codes = f"{tf['agreeing']}/{tf['positions']} codes agree teacher-forced" if tf.get("positions") else "no codes"
    echo(f"  {r['checkpoint']} / {r['quant']}: {codes}, {r['verdict']}")
    for m in r["problems"]:
        echo(f"    FAIL: {m}")
    for m in r["not_checked"]:
        echo(f"    NOT CHECKED: {m}")


def run_engine(src, gguf_dir, quant_value, frames, report_dir: Path, threads: int | None = None) -> bool:
    """Every checkpoint x quantisation: convert, run both sides, report. True only on PASS (no
    failure and nothing unchecked)."""
    import torch

    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import load_binding
    from q3tts.verify.engines.report import run_verdict

    load_binding()  # before any work: without the binding, say how to install it
    quants = parse_quants(quant_value)
    frames = frames or 8
    reports = []
    with tempfile.TemporaryDirectory(prefix="verify-engine-") as work:
        work = Path(work)
        for name, up, st in _checkpoints(src, work):
            model = Qwen3TTS.from_pretrained(st, dtype=torch.float32)
            for q in [None] if gguf_dir else quants:
                out = Path(gguf_dir) if gguf_dir else convert_to_gguf(up, work / f"gguf-{name}-{q}", quant=q).dst
                r = check_pair(model, up, out, frames, threads, name)
                reports.append(r)
                echo_run(r)
                if not gguf_dir:
                    shutil.rmtree(out, ignore_errors=True)
            del model
    write_engine_report(reports, report_dir, frames)
    verdict = run_verdict(reports)
    echo(f"\nqwentts.cpp: {verdict} ({sum(r['ok'] for r in reports)}/{len(reports)} runs ok)")
    echo(f"report: {report_dir / 'engine-parity.md'} and {report_dir / 'engine-parity.json'}")
    return verdict == "PASS"


def write_engine_report(reports: list[dict], report_dir: Path, frames: int) -> None:
    from q3tts.verify.engines.report import headroom_table, render_markdown, run_verdict
    from q3tts.verify.machine import describe, machine

    report_dir.mkdir(parents=True, exist_ok=True)
    where = machine()
    verdict = run_verdict(reports)
    doc = {"verdict": verdict, "machine": where, "frames": frames, "runs": reports}
    (report_dir / "engine-parity.json").write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    md = [
        "# qwentts.cpp against the standalone model (verify-parity --engine qwentts.cpp)",
        "",
        f"**Verdict: {verdict}** ({sum(r['ok'] for r in reports)} of {len(reports)} runs ok). {describe(where)}.",
        "",
        f"Greedy on both sides, repetition penalty 1.0, {frames} frames max, upstream's non-streaming prompt; the "
        "Base case clones a fixed reference (x-vector only), so both speaker encoders run. The engine's codes are "
        "teacher-forced into the standalone model: at F32 every code must be its pick or a proven near-tie (logit "
        "margin within 2x the measured prefill logit distance); below F32 the agreement must clear its floors. "
        "A **bug** line fails the run; a **not checked** line makes it INCOMPLETE, which is not a pass.",
        "",
        render_markdown(reports),
        "## Bounds and headroom (worst of this run's passing rows)",
        "",
        headroom_table(reports),
    ]
    (report_dir / "engine-parity.md").write_text("\n".join(md))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def fault_quants(fault: str) -> tuple[str, ...]:
    """Where a fault is planted: every converter fault in the F32 file; the engine faults (which the
    static audit cannot see) also at F16, BF16 and Q8_0, to show they land beyond the looser floors."""
    from q3tts.verify.engines.gguf_faults import ENGINE_FAULTS

    return QUANTS if fault in ENGINE_FAULTS else ("F32",)


def judge_fault(r: dict[str, Any], fault: str) -> dict[str, Any]:
    """A fault is caught when the run fails (an INCOMPLETE verdict is not a catch) and a failure
    names the fault's stage, tensor or code group; an engine fault must also pass the audit (else
    it is not what it claims to be: a fault only running the engine shows)."""
    from q3tts.verify.engines.gguf_faults import ENGINE_FAULTS, EXPECTED_NAMES

    named = [m for m in r["problems"] if EXPECTED_NAMES[fault] in m]
    blind = r["audit"] is not None and r["audit"]["ok"]
    row = {
        "fault": fault,
        "quant": r["quant"],
        "caught": bool(r["problems"]),
        "named": bool(named),
        "engine_fault": fault in ENGINE_FAULTS,
        "audit_blind": blind,
        "problems": r["problems"],
    }
    row["ok"] = row["caught"] and row["named"] and (blind or not row["engine_fault"])
    return row


def run_engine_self_test(
    report_dir: Path, frames: int = 6, threads: int | None = None, faults: list[str] | None = None
) -> bool:
    """Plant each fault in the GGUF of the Base engine fixture (its x-vector case runs every part:
    talker, code predictor, codec decoder and speaker encoder) and run the engine check on it. The
    clean conversions of the same quantisations must pass the same check first."""
    import torch

    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import load_binding, write_engine_checkpoint
    from q3tts.verify.engines.gguf_faults import FAULTS, plant

    load_binding()
    names = list(faults or FAULTS)
    quants = [q for q in QUANTS if any(q in fault_quants(f) for f in names)]
    clean, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="verify-engine-selftest-") as work:
        work = Path(work)
        up = write_engine_checkpoint(work / "up", "base", seed=10)
        convert_checkpoint(up, work / "st")
        model = Qwen3TTS.from_pretrained(work / "st", dtype=torch.float32)
        for q in quants:
            clean[q] = check_pair(
                model, up, convert_to_gguf(up, work / f"clean-{q}", quant=q).dst, frames, threads, "clean"
            )
            shutil.rmtree(work / f"clean-{q}", ignore_errors=True)
            echo(f"  {'ok    ' if clean[q]['ok'] else 'FAILED'}  clean {q}: {_problems_text(clean[q])}")
        for fault in names:
            for q in fault_quants(fault):
                r = check_pair(model, up, plant(fault, up, work / fault, quant=q), frames, threads, fault)
                rows.append(judge_fault(r, fault))
                shutil.rmtree(work / fault, ignore_errors=True)
                mark = "caught" if rows[-1]["ok"] else "MISSED"
                echo(f"  {mark}  {fault:22} {q:5} {'; '.join(r['problems']) or 'no problem found'}")
    write_fault_report(report_dir, {q: _problems_text(r) for q, r in clean.items()}, rows, frames)
    clean_ok = all(r["ok"] for r in clean.values())
    caught = sum(r["ok"] for r in rows)
    echo(f"\nengine self-test: {caught}/{len(rows)} planted faults caught and named; clean ok: {clean_ok}")
    return clean_ok and caught == len(rows)


def _problems_text(r: dict[str, Any]) -> str:
    items = r["problems"] + [f"not checked: {m}" for m in r["not_checked"]]
    return "; ".join(items) or "-"


def write_fault_report(report_dir: Path, clean: dict[str, str], rows: list[dict], frames: int) -> None:
    from q3tts.verify.machine import describe, machine

    report_dir.mkdir(parents=True, exist_ok=True)
    where = machine()
    doc = {"machine": where, "frames": frames, "clean": clean, "faults": rows}
    (report_dir / "engine-faults.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [
        "# qwentts.cpp fault self-test (verify-parity --self-test --engine qwentts.cpp)",
        "",
        f"{describe(where)}. {frames} frames.",
        "",
        "Each fault is planted in the GGUF of the Base engine fixture (verify/engines/gguf_faults.py), whose "
        "x-vector case runs the talker, the code predictor, the codec decoder and the speaker encoder. The engine "
        "check must fail (INCOMPLETE is not a catch) and one failure must name the fault's stage, tensor or code "
        "group. The engine faults are invisible to the static audit (required: the audit passes on them) and are "
        "planted at every quantisation.",
        "",
        "Clean conversions: " + "; ".join(f"{q}: {t if t != '-' else 'no problem'}" for q, t in clean.items()) + ".",
        "",
        "| fault | quant | caught | named | audit | problems reported |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['fault']} | {r['quant']} | {'yes' if r['caught'] else 'NO'} | {'yes' if r['named'] else 'NO'} | "
        f"{('passes (blind)' if r['audit_blind'] else 'SEES IT') if r['engine_fault'] else ('passes' if r['audit_blind'] else 'sees it')} | "
        + "; ".join(r["problems"]).replace("|", "\\|")
        + " |"
        for r in rows
    ]
    (report_dir / "engine-faults.md").write_text("\n".join(md) + "\n")
