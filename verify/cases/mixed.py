"""verify-parity --mixed: the half-precision modes against upstream fp32.

Users choose between plain half precision (bf16, fp16: every tensor and activation half) and the
mixed modes (bf16-mixed, fp16-mixed: half-precision weights for the big linears, fp32 elsewhere;
standalone/precision.py). This report puts them side by side, each against upstream in fp32, so
the price of each mode and what its fp32 parts buy are numbers:

- forward: every forward case of the parity suite (verify/cases/forward.py), max abs / max rel
  (of max |ref|) / cosine against upstream fp32;
- generation: every generation case of the checkpoint's type, greedy and sampled from the same
  seed; identical, or the first divergence and the fraction of identical frames (once one code
  differs later frames legitimately differ, so this is reported, not judged);
- audio: the codec's decode of random codes (5, 80 and 330 frames) against upstream fp32's, SNR;
- generated audio: the codes the mode generated itself (greedy, the first case) decoded by its codec and by
  upstream fp32's, SNR.

The fp32 row is the anchor: it must be exact (zero distance, identical codes, identical audio).
Judged claims (what the split is for, with the measured margins in reports/mixed-precision.md):
every mode stays finite; every mode's forward cases are within its measured bound of upstream fp32
(MIXED_FORWARD_BOUNDS) and its greedy and sampled codes keep at least MIXED_MIN_FRAME_AGREEMENT of the
frames; each mixed mode's forwards are strictly closer to fp32 than the plain mode of its half dtype, and
its audio, from random codes and from its own generated codes, is at least MIXED_MIN_AUDIO_SNR_DB from
upstream fp32's decode of the same codes (its codec is fp32) and strictly closer than the plain mode's.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from q3tts.verify.compare import audio_diff

MODES = ("fp32", "bf16", "bf16-mixed", "fp16", "fp16-mixed")
HALF_OF = {"bf16-mixed": "bf16", "fp16-mixed": "fp16"}
# The mixed modes decode with an fp32 codec, so their audio differs from upstream fp32's only
# through the codes (identical here: the audio cases decode the same random codes). Measured: equal
# to the fp32 row (bit-identical after the float32 cast) on the fixtures; 80 dB is the fp32 audio
# bound of the parity suite (verify/compare.py AUDIO_TOLERANCES).
MIXED_MIN_AUDIO_SNR_DB = 80.0
# Forward max rel (of max |ref|) and min cosine against upstream fp32, per mode. Measured worst over the
# three fixtures (reports/mixed-precision.md, AMD EPYC): bf16 1.79e-2 / 0.999930, bf16-mixed 9.71e-3 /
# 0.999956, fp16 2.28e-3 / 0.999999, fp16-mixed 1.35e-3 / 0.999999. Bounds: about 2x the max rel (bf16
# as the exact path's bf16 rtol) and 4x or more the distance of the cosine from 1.
MIXED_FORWARD_BOUNDS: dict[str, tuple[float, float]] = {
    "bf16": (3e-2, 0.9997),
    "bf16-mixed": (2e-2, 0.9998),
    "fp16": (5e-3, 0.99999),
    "fp16-mixed": (3e-3, 0.99999),
}
# Mean fraction of frames identical to upstream fp32's over the generation cases (greedy and sampled; one
# flipped near-tie of a random model changes every later frame). Measured lowest per fixture: bf16 0.752,
# bf16-mixed 0.797, fp16 0.935, fp16-mixed 0.959; a sampler or prompt bug takes it towards 0.
MIXED_MIN_FRAME_AGREEMENT: dict[str, float] = {"bf16": 0.4, "bf16-mixed": 0.4, "fp16": 0.5, "fp16-mixed": 0.5}
AUDIO_FRAMES = (5, 80, 330)


def forward_rows(wrapper, standalone, seed: int) -> list[dict]:
    from q3tts.verify.cases.forward import run_forward_cases

    # The fp32 tolerance only labels the rows; the distances are what this report keeps.
    out = []
    for c in run_forward_cases(wrapper.model, standalone, torch.float32, seed=seed):
        out.append({"case": c.case, "max_abs": c.max_abs, "max_rel": c.max_rel, "cosine": c.cosine})
    return out


def generation_rows(wrapper, standalone, seed: int, frames: int, mode_name: str) -> tuple[list[dict], list]:
    """Every generation case greedy and sampled (exact path of the mode) against upstream fp32, and
    the codes the mode generated for the first case, greedy (decoded by ``generated_audio_rows``)."""
    from q3tts.verify.cases.fast import free_running
    from q3tts.verify.cases.generation import CaseContext, cases_for

    ctx = CaseContext(wrapper, standalone, seed)
    rows, generated = [], []
    for case in cases_for(standalone.config.tts_model_type):
        kwargs = case.build(ctx)
        for mode in ("greedy", "sampled"):
            try:
                g = free_running(case.name, ctx, kwargs, None, mode, mode_name, frames)
            except Exception as e:  # e.g. NaN logits of a plain half mode: a finding, not a crash
                rows.append(_failed_generation(case.name, mode, e))
                continue
            a = g.agreement
            rows.append(
                {
                    "case": case.name,
                    "mode": mode,
                    "identical": a.identical,
                    "identical_frame_fraction": a.identical_frame_fraction,
                    "first_divergence": a.first_divergence,
                    **({"error": a.error} if a.error else {}),
                }
            )
            if mode == "greedy" and not generated and g.standalone_codes and len(g.standalone_codes[0]):
                generated = [(case.name, g.standalone_codes[0])]
    return rows, generated


def _failed_generation(case: str, mode: str, e: Exception) -> dict:
    return {
        "case": case,
        "mode": mode,
        "identical": False,
        "identical_frame_fraction": 0.0,
        "first_divergence": None,
        "error": f"{type(e).__name__}: {e}",
    }


def generated_audio_rows(wrapper, standalone, generated: list) -> list[dict]:
    """The mode's own generated codes decoded by its codec and by upstream fp32's."""
    from q3tts.verify.cases.common import upstream_audio

    rows = []
    for case, codes in generated:
        ref, _ = upstream_audio(wrapper, codes, ("mixed-generated", id(wrapper), case, codes.numpy().tobytes()))
        (got,), _ = standalone.decode_codes([codes])
        max_abs, snr = audio_diff(ref, got)
        rows.append({"case": case, "frames": int(codes.shape[0]), "max_abs": max_abs, "snr_db": snr})
    return rows


def audio_rows(wrapper, standalone, seed: int) -> list[dict]:
    from q3tts.verify.cases.common import audio_codes, upstream_audio

    rows = []
    for frames in AUDIO_FRAMES:
        codes = audio_codes(wrapper, frames, seed)
        ref, _ = upstream_audio(wrapper, codes, ("mixed", id(wrapper), frames, seed))
        (got,), _ = standalone.decode_codes([codes])
        max_abs, snr = audio_diff(ref, got)
        rows.append({"frames": frames, "max_abs": max_abs, "snr_db": snr, "finite": bool(np.isfinite(got).all())})
    return rows


def summarize(run: dict) -> dict:
    fwd, gen, aud, gen_aud = run["forward"], run["generation"], run["audio"], run.get("generated_audio", [])

    def finite_or_inf(x: float) -> float:
        return x if math.isfinite(x) else float("inf")

    return {
        "forward_max_rel": max((finite_or_inf(r["max_rel"]) for r in fwd), default=0.0),
        "forward_min_cosine": min((r["cosine"] for r in fwd), default=1.0),
        "forward_finite": all(math.isfinite(r["max_abs"]) for r in fwd),
        "generation_identical": sum(r["identical"] for r in gen),
        "generation_cases": len(gen),
        "generation_frame_fraction": float(np.mean([r["identical_frame_fraction"] for r in gen])) if gen else 1.0,
        "audio_min_snr_db": min((r["snr_db"] for r in aud), default=float("inf")),
        "audio_finite": all(r["finite"] for r in aud),
        "generated_audio_min_snr_db": min((r["snr_db"] for r in gen_aud), default=float("inf")),
        "generated_audio_decoded": len(gen_aud),
        "generation_errors": sum(1 for r in gen if r.get("error")),
    }


def judge(runs: list[dict]) -> list[str]:
    """The claims this report checks; returns the failing ones (empty: pass)."""
    failing = []
    by = {(r["checkpoint"], r["mode"]): r["summary"] for r in runs}
    for (ckpt, mode), s in by.items():
        if not (s["forward_finite"] and s["audio_finite"]) or s["generation_errors"]:
            failing.append(f"{ckpt} {mode}: non-finite output or a generation error")
        if mode == "fp32":
            exact = (
                s["forward_max_rel"] == 0
                and s["generation_identical"] == s["generation_cases"]
                and min(s["audio_min_snr_db"], s["generated_audio_min_snr_db"]) > 1e9
            )
            if not exact:
                failing.append(f"{ckpt} fp32: not exact against upstream fp32")
            continue
        failing += _judge_bounds(ckpt, mode, s)
        if mode in HALF_OF and (ckpt, HALF_OF[mode]) in by:
            failing += _judge_split(ckpt, mode, s, by[(ckpt, HALF_OF[mode])])
    return failing


def _judge_bounds(ckpt: str, mode: str, s: dict) -> list[str]:
    """A half or mixed mode against its measured bounds."""
    out = []
    max_rel, min_cos = MIXED_FORWARD_BOUNDS[mode]
    if not (s["forward_max_rel"] <= max_rel and s["forward_min_cosine"] >= min_cos):
        out.append(
            f"{ckpt} {mode}: forward max rel {s['forward_max_rel']:.3g} / cosine {s['forward_min_cosine']:.6f} "
            f"outside {max_rel:g} / {min_cos}"
        )
    if s["generation_frame_fraction"] < MIXED_MIN_FRAME_AGREEMENT[mode]:
        out.append(
            f"{ckpt} {mode}: identical frames {s['generation_frame_fraction']:.3f} < {MIXED_MIN_FRAME_AGREEMENT[mode]}"
        )
    if not s.get("generated_audio_decoded"):
        out.append(f"{ckpt} {mode}: no generated codes were decoded")
    return out


def _judge_split(ckpt: str, mode: str, s: dict, plain: dict) -> list[str]:
    """What the fp32 parts of a mixed mode buy, against the plain mode of its half dtype."""
    out = []
    half = HALF_OF[mode]
    for key, what in (("audio_min_snr_db", "audio"), ("generated_audio_min_snr_db", "generated audio")):
        if s[key] < MIXED_MIN_AUDIO_SNR_DB:
            out.append(f"{ckpt} {mode}: {what} SNR {s[key]:.1f} dB < {MIXED_MIN_AUDIO_SNR_DB}")
        if not s[key] > plain[key]:
            out.append(f"{ckpt} {mode}: {what} not closer to fp32 than plain {half}")
    if not s["forward_max_rel"] < plain["forward_max_rel"]:
        out.append(f"{ckpt} {mode}: forwards not closer to fp32 than plain {half}")
    return out


def run_mode(name: str, up_dir, st_dir, wrapper, mode: str, seed: int, frames: int) -> dict:
    from q3tts.standalone import Qwen3TTS

    t0 = time.perf_counter()
    standalone = Qwen3TTS.from_pretrained(st_dir, dtype=mode)
    run = {
        "checkpoint": name,
        "mode": mode,
        "forward": forward_rows(wrapper, standalone, seed),
        "audio": audio_rows(wrapper, standalone, seed),
    }
    run["generation"], generated = generation_rows(wrapper, standalone, seed, frames, mode)
    run["generated_audio"] = generated_audio_rows(wrapper, standalone, generated)
    run["summary"] = summarize(run)
    run["seconds"] = time.perf_counter() - t0
    return run


def _fmt_snr(x: float) -> str:
    return "exact" if x == float("inf") else f"{x:.1f}"


def render_markdown(report: dict) -> str:
    lines = [
        "# Mixed precision against upstream fp32",
        "",
        f"verify-parity --mixed: every mode of the standalone model against upstream qwen-tts in fp32, seed "
        f"{report['seed']}, {report['frames']} frames per generation case, torch {report['torch']}. "
        "Forward: max |diff| / max |ref| over every forward case (worst case) and the lowest cosine; generation: cases "
        "with identical codes (greedy and sampled) and the mean fraction of identical frames; audio: the lowest SNR "
        "over the decode cases (5, 80, 330 frames of random codes); generated audio: the mode's own greedy codes of the "
        "first case decoded by its codec and by upstream fp32's. Bounds per mode: MIXED_FORWARD_BOUNDS, "
        "MIXED_MIN_FRAME_AGREEMENT and MIXED_MIN_AUDIO_SNR_DB in verify/cases/mixed.py.",
        "",
        f"**Verdict: {'PASS' if report['passed'] else 'FAIL ' + str(report['failing'])}**",
        "",
        "| checkpoint | mode | forward max rel | min cosine | codes identical | identical frames | audio SNR dB | "
        "generated audio SNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        s = r["summary"]
        lines.append(
            f"| {r['checkpoint']} | {r['mode']} | {s['forward_max_rel']:.2e} | {s['forward_min_cosine']:.6f} | "
            f"{s['generation_identical']}/{s['generation_cases']} | {s['generation_frame_fraction']:.3f} | "
            f"{_fmt_snr(s['audio_min_snr_db'])} | {_fmt_snr(s.get('generated_audio_min_snr_db', float('nan')))} |"
        )
    lines += ["", "## Forward cases, max rel per mode", ""]
    modes = [m for m in MODES if any(r["mode"] == m for r in report["runs"])]
    lines += ["| checkpoint | case | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for ckpt in dict.fromkeys(r["checkpoint"] for r in report["runs"]):
        runs = {r["mode"]: r for r in report["runs"] if r["checkpoint"] == ckpt}
        for i, case in enumerate(c["case"] for c in runs[modes[0]]["forward"]):
            cells = [f"{runs[m]['forward'][i]['max_rel']:.2e}" for m in modes]
            lines.append(f"| {ckpt} | {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_mixed_cli(src, standalone_dir, seeds, frames, report_dir: Path, progress) -> bool:
    """Every mode on every checkpoint pair; writes mixed-precision.{json,md}. True on PASS."""
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.checkpoints import checkpoint_pairs
    from q3tts.verify.report.console import UpstreamOutput, echo, maybe_captured

    quiet = UpstreamOutput()
    runs = []
    with tempfile.TemporaryDirectory(prefix="verify-mixed-") as work:
        with maybe_captured(quiet):
            pairs, frames, _ = checkpoint_pairs(src, standalone_dir, frames, Path(work), progress)
        for name, _source, up, st in pairs:
            with maybe_captured(quiet):
                wrapper = load_upstream_wrapper(up, torch.float32)
            for mode in MODES:
                with maybe_captured(quiet):
                    run = run_mode(name, up, st, wrapper, mode, seeds[0], frames)
                s = run["summary"]
                echo(
                    f"  {name} {mode:10} forward max rel {s['forward_max_rel']:.2e}, codes identical "
                    f"{s['generation_identical']}/{s['generation_cases']}, audio SNR {_fmt_snr(s['audio_min_snr_db'])} dB"
                )
                runs.append(run)
            del wrapper
    failing = judge(runs)
    report: dict[str, Any] = {
        "seed": seeds[0],
        "frames": frames,
        "torch": torch.__version__,
        "modes": list(MODES),
        "runs": runs,
        "failing": failing,
        "passed": not failing,
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "mixed-precision.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (report_dir / "mixed-precision.md").write_text(render_markdown(report))
    echo(f"\nmixed precision: {'PASS' if not failing else 'FAIL ' + str(failing)}; report: {report_dir}")
    return not failing
