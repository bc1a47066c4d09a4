"""``verify-parity --engine qwentts.cpp``: the GGML runtime, through its Python binding, against the
standalone model (bit-identical to upstream on the exact path), per model type and GGUF
quantisation; and ``--self-test --engine qwentts.cpp``: the converter's planted faults, each of
which that run must catch and name.

Without SRC the checkpoints are the engine fixtures (gguf_parity.write_engine_checkpoint: the tiny
talker with 16 code groups and the released codec, the smallest shape the engine runs end to end)
of all three model types. Reports: REPORT_DIR/engine-parity.{json,md} and engine-faults.{json,md}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

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
    instruction for voice_design, neither for base (no reference audio: x-vector-free prompt)."""
    mt = model.config.tts_model_type
    speakers = sorted(model.config.talker.spk_id)
    return {
        "text": TEXT,
        "speaker": speakers[0] if mt == "custom_voice" and speakers else None,
        "instruct": "A calm, clear voice." if mt == "voice_design" else None,
    }


def _checkpoints(src, work: Path) -> list[tuple[str, Path, Path]]:
    """(name, upstream dir, standalone dir) per checkpoint."""
    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.model import resolve_checkpoint_dir
    from q3tts.verify.engines.gguf import write_engine_checkpoint

    out = []
    if src is None:
        click.echo("No SRC: engine fixtures (tiny talker, 16 code groups, released codec) of all three model types.")
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


def run_engine(src, gguf_dir, quant_value, frames, report_dir: Path, threads: int = 2) -> bool:
    """Every checkpoint x quantisation: convert, run both sides, report. True when no bug."""
    import torch

    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import load_binding

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
                c = r["codes"]
                click.echo(
                    f"  {name} / {r['quant']}: prompt ids {'identical' if r['prompt_ids']['identical'] else 'DIFFER'}, "
                    f"{c['identical_frames']}/{c['compared_frames']} frames identical, "
                    f"{'ok' if r['ok'] else 'FAIL: ' + '; '.join(r['problems'])}"
                )
                if not gguf_dir:
                    shutil.rmtree(out, ignore_errors=True)
            del model
    write_engine_report(reports, report_dir, frames)
    ok = all(r["ok"] for r in reports)
    click.echo(f"\nqwentts.cpp: {'PASS' if ok else 'FAIL'} ({sum(r['ok'] for r in reports)}/{len(reports)} runs)")
    click.echo(f"report: {report_dir / 'engine-parity.md'} and {report_dir / 'engine-parity.json'}")
    return ok


def write_engine_report(reports: list[dict], report_dir: Path, frames: int) -> None:
    from q3tts.verify.engines.gguf import render_markdown

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "engine-parity.json").write_text(json.dumps(reports, indent=2, default=_jsonable) + "\n")
    md = [
        "# qwentts.cpp against the standalone model (verify-parity --engine qwentts.cpp)",
        "",
        f"Greedy on both sides, repetition penalty 1.0, {frames} frames max, upstream's non-streaming prompt. "
        "A **bug** line is a difference quantisation cannot explain; a quantisation line is not.",
        "",
        render_markdown(reports),
    ]
    (report_dir / "engine-parity.md").write_text("\n".join(md))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def run_engine_self_test(report_dir: Path, frames: int = 6, threads: int = 2) -> bool:
    """Plant each converter fault in the F32 GGUF of the custom_voice engine fixture and run the
    engine check on it: every fault must fail the check and a problem must name its tensor or
    stage. The clean conversion must pass the same check."""
    import torch

    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import load_binding, write_engine_checkpoint
    from q3tts.verify.engines.gguf_faults import EXPECTED_NAMES, FAULTS, plant

    load_binding()
    rows = []
    with tempfile.TemporaryDirectory(prefix="verify-engine-selftest-") as work:
        work = Path(work)
        up = write_engine_checkpoint(work / "up", "custom_voice", seed=11)
        convert_checkpoint(up, work / "st")
        model = Qwen3TTS.from_pretrained(work / "st", dtype=torch.float32)
        clean = check_pair(model, up, convert_to_gguf(up, work / "clean").dst, frames, threads, "clean")
        click.echo(
            f"  {'ok    ' if clean['ok'] else 'FAILED'}  clean conversion: {'; '.join(clean['problems']) or '-'}"
        )
        for fault in FAULTS:
            r = check_pair(model, up, plant(fault, up, work / fault), frames, threads, fault)
            named = [p for p in r["problems"] if EXPECTED_NAMES[fault] in p]
            rows.append({"fault": fault, "caught": not r["ok"], "named": bool(named), "problems": r["problems"]})
            click.echo(
                f"  {'caught' if named else 'MISSED'}  {fault:22} {'; '.join(r['problems']) or 'no problem found'}"
            )
            shutil.rmtree(work / fault, ignore_errors=True)
    write_fault_report(report_dir, clean["problems"], rows)
    caught = sum(r["caught"] and r["named"] for r in rows)
    click.echo(f"\nengine self-test: {caught}/{len(rows)} converter faults caught and named; clean ok: {clean['ok']}")
    return clean["ok"] and caught == len(rows)


def write_fault_report(report_dir: Path, clean_problems: list[str], rows: list[dict]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "engine-faults.json").write_text(
        json.dumps({"clean": clean_problems, "faults": rows}, indent=2) + "\n"
    )
    md = [
        "# qwentts.cpp converter self-test (verify-parity --self-test --engine qwentts.cpp)",
        "",
        "Each fault is planted in the F32 GGUF of the custom_voice engine fixture (verify/engines/gguf_faults.py); the "
        "engine check must fail and one of its problems must name the fault's tensor or stage.",
        "",
        f"Clean F32 conversion: {'no problem' if not clean_problems else 'FAILED: ' + '; '.join(clean_problems)}.",
        "",
        "| fault | caught | named | problems reported |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {r['fault']} | {'yes' if r['caught'] else 'NO'} | {'yes' if r['named'] else 'NO'} | "
        + "; ".join(r["problems"]).replace("|", "\\|")
        + " |"
        for r in rows
    ]
    (report_dir / "engine-faults.md").write_text("\n".join(md) + "\n")
