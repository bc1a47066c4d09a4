"""``verify-parity --engine qwentts.cpp --fast --quant MODES``: is each quantized fast mode at least
as faithful to upstream as qwentts.cpp at the same bit width, on the same weights?

One checkpoint, one request (the engine check's: for a Base model the fixed reference as an
x-vector clone, so both speaker encoders run), greedy, ``frames`` frames. Each side runs in its
own mode from the same upstream checkpoint: our fast path loaded with ``quant=`` (bf16 activations
by default, the mode the benchmark times) and qwentts.cpp on the GGUF the converter writes at the
paired type (int8 -> Q8_0, int4 -> Q4_K_M; ``PEER_BY_BITS``). Both sides' free-running codes are then
teacher-forced into the exact fp32 model (bit-identical to upstream), and a code agrees where it
is the exact model's greedy pick on that side's own history (verify/engines/forcing.py, the
measure the engine check already applies to qwentts.cpp).

A mode passes when its agreement is at least the peer's; the report gives both counts, per code
group too. Anything that cannot be judged (an engine error, no codes) is INCOMPLETE, not a pass.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from q3tts.verify.report.console import echo

# qwentts.cpp's GGUF variant at each bit width of our weight-only modes (standalone/quant.py).
PEER_BY_BITS = {8: "Q8_0", 4: "Q4_K_M"}
ACTIVATIONS = {"bf16": "bfloat16", "fp32": "float32"}


def parse_modes(quant: str | None, dtypes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """(activation dtype, weight mode) pairs from --quant and --dtypes (default bf16)."""
    from q3tts.standalone.quant import QUANT_NAMES

    modes = [q.strip() for q in (quant or "").split(",") if q.strip()]
    bad = [q for q in modes if q not in QUANT_NAMES]
    if bad or not modes:
        raise click.BadParameter(
            f"{bad or 'nothing'}: with --engine and --fast, --quant lists our modes ({', '.join(QUANT_NAMES)})",
            param_hint="--quant",
        )
    acts = list(dtypes or ("bf16",))
    wrong = [d for d in acts if d not in ACTIVATIONS]
    if wrong:
        raise click.BadParameter(f"{wrong}: the quantized modes run in {', '.join(ACTIVATIONS)}", param_hint="--dtype")
    return [(d, q) for d in acts for q in modes]


def peer_quant(mode: str) -> str:
    """The qwentts.cpp GGUF type our weight-only ``mode`` is judged against (same bit width)."""
    from q3tts.standalone.quant import parse_quant

    return PEER_BY_BITS[parse_quant(mode).bits]


def agreement(exact, prompt, codes, frames: int, label: str) -> dict[str, Any]:
    """``codes`` [F, G] teacher-forced into ``exact``: agreeing / positions, per group."""
    from q3tts.verify.engines import judge
    from q3tts.verify.engines.forcing import force_codes

    forced, error = force_codes(exact, prompt, codes, frames)
    if forced is None:
        return {"positions": 0, "error": f"{label}: {error or 'no codes'}"}
    tf = judge.teacher_forced(forced, codes, "bit-width", None)
    return {k: tf[k] for k in ("positions", "agreeing", "fraction", "per_group", "group_positions", "worst_group")}


def judge_row(ours: dict[str, Any], peer: dict[str, Any]) -> tuple[str, list[str]]:
    """ok when our agreement is at least the peer's; FAIL below it; INCOMPLETE when a side has no
    judged codes."""
    missing = [d["error"] for d in (ours, peer) if not d.get("positions")]
    if missing:
        return "INCOMPLETE", missing
    if ours["fraction"] < peer["fraction"]:
        return "FAIL", [
            f"ours {ours['agreeing']}/{ours['positions']} ({ours['fraction']:.4f}) agree with upstream, "
            f"below the peer's {peer['agreeing']}/{peer['positions']} ({peer['fraction']:.4f})"
        ]
    return "ok", []


TEXTS = (
    "Hello world, this is a test.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call me back tomorrow morning, after nine o'clock.",
)


def requests_for(exact, seeds) -> list[dict[str, Any]]:
    """One request per seed: the engine check's request (seed 0), then other texts and, for a Base
    model, other reference audio, so the agreement is counted over more positions."""
    from q3tts.verify.engines.gguf import reference_audio
    from q3tts.verify.engines.parity import request_for

    out = []
    for seed in seeds:
        r = dict(request_for(exact), text=TEXTS[seed % len(TEXTS)])
        if r["ref_audio"] is not None:
            r["ref_audio"] = reference_audio(seed=seed)
        out.append(r)
    return out


def combined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The agreement of several requests as one: counts summed, per group too."""
    judged = [p for p in parts if p.get("positions")]
    if len(judged) < len(parts):
        return next(p for p in parts if not p.get("positions"))
    n, ok = sum(p["positions"] for p in judged), sum(p["agreeing"] for p in judged)
    counts = [sum(c) for c in zip(*(p["group_positions"] for p in judged))]
    agree = [sum(f * c for f, c in fc) for fc in zip(*(zip(p["per_group"], p["group_positions"]) for p in judged))]
    per_group = [a / c if c else None for a, c in zip(agree, counts)]
    worst = min((g for g, c in enumerate(counts) if c), key=lambda g: per_group[g])
    return {
        "positions": n,
        "agreeing": ok,
        "fraction": ok / n,
        "per_group": per_group,
        "group_positions": counts,
        "worst_group": {"group": worst, "fraction": per_group[worst], "frames": counts[worst]},
        "requests": len(judged),
    }


def compare_mode(up: Path, st: Path, exact, dtype: str, quant: str, frames: int, threads, work: Path, **opts) -> dict:
    """One row: our fast ``dtype``+``quant`` and qwentts.cpp at peer_quant(quant), on the same
    requests (``opts["seeds"]``, default (0,)), agreement summed over them."""
    import torch

    from q3tts.standalone.gguf_conversion import convert_to_gguf
    from q3tts.standalone.model import Qwen3TTS
    from q3tts.verify.engines.gguf import run_qwentts, run_standalone, standalone_prefill

    peer_type = peer_quant(quant)
    gguf_dir = convert_to_gguf(up, work / f"gguf-{peer_type}", quant=peer_type, force=True).dst
    model = Qwen3TTS.from_pretrained(st, dtype=getattr(torch, ACTIVATIONS[dtype]), quant=quant)
    if opts.get("engine_options"):
        model.compile_fast(**opts["engine_options"])
    if opts.get("plant"):
        opts["plant"](model)
    ours, peer, frames_ours, frames_peer = [], [], [], []
    for request in requests_for(exact, opts.get("seeds") or (0,)):
        prompt = standalone_prefill(exact, **request)["prompt"]
        eng = run_qwentts(gguf_dir, **request, max_new_tokens=frames, threads=threads)
        label = f"qwentts.cpp {peer_type}"
        peer.append(
            {"positions": 0, "error": f"{label}: {eng['error']}"}
            if eng.get("error")
            else agreement(exact, prompt, eng["codes"], frames, label)
        )
        ran = run_standalone(model, **request, max_new_tokens=frames)
        ours.append(agreement(exact, prompt, ran["codes"], frames, f"fast {dtype}+{quant}"))
        frames_ours.append(int(ran["codes"].shape[0]))
        frames_peer.append(int(eng["codes"].shape[0]))
    ours_all, peer_all = combined(ours), combined(peer)
    verdict, problems = judge_row(ours_all, peer_all)
    return {
        "ours": f"fast {dtype}+{quant}",
        "peer": f"qwentts.cpp {peer_type}",
        "ours_agreement": ours_all,
        "peer_agreement": peer_all,
        "per_request": {"ours": ours, "peer": peer},
        "frames_ours": frames_ours,
        "frames_peer": frames_peer,
        "verdict": verdict,
        "problems": problems,
    }


def run_bitwidth(src, quant: str | None, dtypes, frames: int | None, report_dir: Path, threads=None, **opts) -> bool:
    """Every (dtype, mode) against the peer on SRC (default: the Base engine fixture). True only
    when every row is ok. Reports: REPORT_DIR/bitwidth-agreement.{md,json}. ``opts``: ``seeds``
    (one request each), and for tests ``engine_options`` and ``plant`` (see compare_mode)."""
    import torch

    from q3tts.convert import convert_checkpoint
    from q3tts.standalone.model import Qwen3TTS, resolve_checkpoint_dir
    from q3tts.verify.engines.gguf import load_binding, write_engine_checkpoint

    load_binding()
    modes = parse_modes(quant, dtypes)
    frames = frames or 16
    rows = []
    with tempfile.TemporaryDirectory(prefix="verify-bitwidth-") as work:
        work = Path(work)
        if src is None:
            echo("No SRC: the Base engine fixture (tiny talker, 16 code groups, released codec).")
            up, name = write_engine_checkpoint(work / "up", "base", seed=10), "engine-base"
        else:
            up, name = resolve_checkpoint_dir(src), Path(str(src)).name
        convert_checkpoint(up, work / "st")
        st = work / "st"
        exact = Qwen3TTS.from_pretrained(st, dtype=torch.float32)
        for dtype, q in modes:
            row = compare_mode(up, st, exact, dtype, q, frames, threads, work, **opts)
            row["checkpoint"] = name
            rows.append(row)
            echo(
                f"  {row['ours']} vs {row['peer']}: {_cell(row['ours_agreement'])} against "
                f"{_cell(row['peer_agreement'])}, {row['verdict']}"
            )
            for p in row["problems"]:
                echo(f"    {'FAIL' if row['verdict'] == 'FAIL' else 'NOT CHECKED'}: {p}")
    verdict = overall(rows)
    write_report(rows, report_dir, frames, verdict, len(opts.get("seeds") or (0,)))
    echo(f"\nbit-width agreement: {verdict}; report: {report_dir / 'bitwidth-agreement.md'}")
    return verdict == "PASS"


def overall(rows: list[dict]) -> str:
    if any(r["verdict"] == "FAIL" for r in rows):
        return "FAIL"
    if not rows or any(r["verdict"] != "ok" for r in rows):
        return "INCOMPLETE"
    return "PASS"


def _cell(a: dict[str, Any]) -> str:
    if not a.get("positions"):
        return "not judged"
    w = a["worst_group"]
    return f"{a['agreeing']}/{a['positions']} ({a['fraction']:.3f}; worst group {w['group']} {w['fraction']:.2f})"


def write_report(rows: list[dict], report_dir: Path, frames: int, verdict: str, n_requests: int = 1) -> None:
    from q3tts.verify.machine import describe, machine

    report_dir.mkdir(parents=True, exist_ok=True)
    where = machine()
    doc = {"verdict": verdict, "machine": where, "frames": frames, "rows": rows}
    (report_dir / "bitwidth-agreement.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = [
        "# Quantized fast modes against qwentts.cpp at the same bit width",
        "",
        f"**Verdict: {verdict}**. {describe(where)}.",
        "",
        f"`verify-parity --engine qwentts.cpp --fast --quant ...`: {n_requests} request(s), one per seed (other "
        f"texts, and for a Base checkpoint other references, cloned x-vector only), greedy, at most {frames} frames "
        "per request and side; agreement summed over the requests. Each side's free-running codes are "
        "teacher-forced into the exact fp32 model (bit-identical to upstream): a code agrees where it is that "
        "model's greedy pick on the side's own history. A row passes when ours agree at least as often as the "
        "peer's. The peer's GGUF is written by convert-ckpt --to gguf from the same upstream checkpoint.",
        "",
        "| checkpoint | ours | agree with upstream | peer | agree with upstream | verdict |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['checkpoint']} | {r['ours']} | {_cell(r['ours_agreement'])} | {r['peer']} | "
        f"{_cell(r['peer_agreement'])} | {r['verdict']} |"
        for r in rows
    ]
    md += [""] + [f"- {r['ours']}: {p}" for r in rows for p in r["problems"]]
    (report_dir / "bitwidth-agreement.md").write_text("\n".join(md) + "\n")
