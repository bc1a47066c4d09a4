"""One fine-tuning step at the released 0.6B size (random weights, fp32, CPU, batch 1, a few
seconds of audio): upstream's step against the standalone's on the same batch, with and without
gradient checkpointing. Writes reports/training-benchmark.{md,json}.

The step is what the training parity compares (verify/cases/training.py): the speaker x-vector
of the reference audio (no grad, as upstream detaches it), the teacher-forced forward, the loss
and ``backward()``; gradients are freed before each step, so their allocation is in it. The
optimiser is left out: AdamW is the same torch code on both sides, and its two fp32 moments
(8 bytes per trained parameter, stated in the report) would not fit twice beside the other
helpers' work on this machine.

Upstream's step is sft_12hz.py at 022e286 with the text projection added as upstream PRs
#188/#336 add it: the unpatched script cannot run at 0.6B (raw 2048-wide text embeddings added to
1024-wide codec embeddings; "size of tensor a (2048) must match ... (1024)", upstream #335).
The standalone runs the same computation (recipe "upstream" with the projection switched on), so
the two losses must agree, and its default recipe "aligned". Upstream's checkpointing is
transformers' ``gradient_checkpointing_enable`` (its decoder layers are
GradientCheckpointingLayer; sft_12hz.py does not turn it on); non-reentrant on both sides.

Every configuration runs in a fresh subprocess: warm-up steps, then timed steps. Memory: the
peak RSS during the timed steps (VmHWM reset through /proc/self/clear_refs after loading) and
the process's lifetime peak (ru_maxrss from wait4, loading included).

    python -m q3tts.bench.training --work /tmp/bench-train --out reports/
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from q3tts.bench.generation import environment
from q3tts.verify.fixtures.released import released_config

SIZE = "0.6B"
SIDES = ("upstream", "standalone-upstream+projection", "standalone-aligned")


# --------------------------------------------------------------------------------------------
# The checkpoint (parent) and the models (children)
def prepare(work: Path, seed: int = 0) -> Path:
    """Random released-size Base weights (upstream names, fp32) in work/, made once."""
    from safetensors.torch import save_file
    from transformers.modeling_utils import no_init_weights

    from q3tts.verify.fixtures.writer import build_upstream_modules, randomize_

    path = work / f"upstream-{SIZE}-base-seed{seed}.safetensors"
    if path.is_file():
        return path
    work.mkdir(parents=True, exist_ok=True)
    with no_init_weights():  # every tensor is drawn below
        up = build_upstream_modules(released_config(SIZE, "base"))
    randomize_(up, seed)
    tmp = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return path


def load_side(side: str, weights: Path):
    """The model of ``side`` on the weights (tensor by tensor, so loading never holds two copies)."""
    from safetensors import safe_open

    config = released_config(SIZE, "base")
    with safe_open(str(weights), framework="pt") as f:
        if side == "upstream":
            from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig as UpConfig
            from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
            from transformers.modeling_utils import no_init_weights

            with no_init_weights():
                model = Qwen3TTSForConditionalGeneration(UpConfig(**copy.deepcopy(config)))
            with torch.no_grad():
                for name, t in model.state_dict().items():
                    t.copy_(f.get_tensor(name))
            return model
        from q3tts.standalone import Qwen3TTS
        from q3tts.standalone.config import Qwen3TTSConfig
        from q3tts.standalone.layout import convert_tensors, plan

        cfg = Qwen3TTSConfig.from_upstream(config)
        with torch.device("meta"):
            model = Qwen3TTS(cfg)
        state = dict(convert_tensors(plan(cfg), f.get_tensor))
        model.load_state_dict(state, strict=True, assign=True)
        return model


def make_batch(config, frames: int, text_tokens: int, seed: int = 0):
    """One item: random text ids (the released tokenizer is not needed for timing) and codes."""
    from q3tts.standalone.training import TrainingItem, collate

    g = torch.Generator().manual_seed(seed)
    t = config.talker
    text = torch.randint(0, 150000, (text_tokens,), generator=g)
    role = [config.im_start_token_id, released_config(SIZE, "base")["assistant_token_id"], 198]  # 198: "\n"
    ids = torch.cat([torch.tensor(role), text])
    codes = torch.randint(0, t.code_predictor.vocab_size, (frames, t.num_code_groups), generator=g)
    return collate([TrainingItem(ids, codes)], config)


# --------------------------------------------------------------------------------------------
# One configuration (child process)
def _hwm_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_child(side: str, checkpointing: bool, weights: Path, frames: int, text_tokens: int, warmup: int, steps: int):
    from q3tts.standalone.config import Qwen3TTSConfig
    from q3tts.standalone.training import RECIPES, training_forward
    from q3tts.verify.cases.forward import speech_like_waveform
    from q3tts.verify.cases.training import (
        standalone_speaker_embedding,
        upstream_reference_step,
        upstream_speaker_embedding,
    )

    batch = make_batch(Qwen3TTSConfig.from_upstream(released_config(SIZE, "base")), frames, text_tokens)
    t0 = time.perf_counter()
    model = load_side(side, weights)
    load_s = time.perf_counter() - t0
    wav = speech_like_waveform(0, seconds=frames / 12.5)
    model.train()
    if side == "upstream":
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        def step():
            spk = upstream_speaker_embedding(model, wav, 1)
            return upstream_reference_step(model, batch, spk, text_projection=True)["loss"]
    else:
        recipe = RECIPES["aligned"]
        if side == "standalone-upstream+projection":
            recipe = dataclasses.replace(RECIPES["upstream"], name="upstream+projection", text_projection=True)

        def step():
            spk = standalone_speaker_embedding(model, wav, 1)
            return training_forward(model, batch, spk, recipe=recipe, gradient_checkpointing=checkpointing).loss

    def timed():
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss = step()
        loss.backward()
        return time.perf_counter() - t, float(loss.detach())

    for _ in range(warmup):
        timed()
    model.zero_grad(set_to_none=True)
    rss_before = _status_mb("VmRSS")
    _hwm_reset()
    seconds, losses = [], []
    for _ in range(steps):
        s, loss = timed()
        seconds.append(s)
        losses.append(loss)
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    return {
        "side": side,
        "gradient_checkpointing": checkpointing,
        "load_seconds": load_s,
        "step_seconds": seconds,
        "loss": losses[0],
        "losses_repeat": len(set(losses)) == 1,
        "rss_before_steps_mb": rss_before,
        "step_peak_rss_mb": _status_mb("VmHWM"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": trained,
        "sequence_positions": int(batch.attention_mask.shape[1]),
        "threads": torch.get_num_threads(),
    }


def spawn(args, side: str, checkpointing: bool, weights: Path) -> dict:
    """One configuration in a fresh interpreter; its result and its lifetime peak RSS."""
    cmd = [sys.executable, "-m", "q3tts.bench.training", "--child", side, "--weights", str(weights)]
    cmd += ["--frames", str(args.frames), "--text-tokens", str(args.text_tokens)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    if checkpointing:
        cmd.append("--checkpointing")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} (checkpointing={checkpointing}) exited {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["lifetime_peak_rss_mb"] = usage.ru_maxrss / 1024  # kB on Linux
    print(
        f"[{side}{' +ckpt' if checkpointing else ''}] step {min(result['step_seconds']):.2f} s "
        f"(of {', '.join(f'{s:.2f}' for s in result['step_seconds'])}), step peak {result['step_peak_rss_mb']:.0f} MB, "
        f"lifetime peak {result['lifetime_peak_rss_mb']:.0f} MB, loss {result['loss']:.6f}",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------------------------
# Report
def write_reports(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "training-benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "training-benchmark.md").write_text("\n".join(markdown(results)) + "\n")


def markdown(results: dict) -> list[str]:
    env, b, runs = results["environment"], results["batch"], results["runs"]
    up = {r["gradient_checkpointing"]: r for r in runs if r["side"] == "upstream"}
    lines = [
        "# Fine-tuning step: upstream vs standalone at the released 0.6B size",
        "",
        f"CPU ({env['cpu']}, {env['cores']} cores), {runs[0]['threads']} torch threads, fp32, torch {env['torch']}, "
        f"transformers {env['transformers']}, qwen-tts {env['qwen-tts']}; machine load at start: "
        f"{results['load_at_start']}. Random Base weights (fixture initialiser, released 0.6B config, "
        f"{runs[0]['parameters'] / 1e6:.0f}M parameters). Batch 1: {b['frames']} frames ({b['audio_seconds']:.2f} s "
        f"of audio at 12.5 Hz), {b['text_tokens']} text tokens, {runs[0]['sequence_positions']} talker positions; "
        f"the x-vector of a {b['audio_seconds']:.2f} s reference.",
        "",
        "One step = speaker x-vector + teacher-forced forward + loss + backward (gradients freed before each "
        f"step); AdamW excluded (same torch code on both sides; its moments would add "
        f"{results['adamw_state_mb']:.0f} MB). Each row is a fresh process: {results['warmup']} warm-up step(s), then "
        f"{results['steps']} timed; time = best (all listed); speed = upstream's best time / this row's (same "
        "checkpointing setting; > 1: faster than upstream). Before = RSS after loading and warm-up (weights "
        "resident, gradients freed); step peak = peak RSS during the timed steps; lifetime = the process's "
        "ru_maxrss (loading included).",
        "",
        "| side | recipe | grad. checkpointing | step s (best; all) | speed | before MB | step peak MB "
        "| lifetime peak MB | loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    recipe = {
        "upstream": "sft_12hz.py@022e286 + text projection",
        "standalone-upstream+projection": "upstream + text projection (same step)",
        "standalone-aligned": "aligned (default)",
    }
    for r in runs:
        best = min(r["step_seconds"])
        ref = up.get(r["gradient_checkpointing"])
        ratio = f"{min(ref['step_seconds']) / best:.2f}x" if ref and r is not ref else "-"
        lines.append(
            f"| {r['side'].split('-')[0]} | {recipe[r['side']]} | {'on' if r['gradient_checkpointing'] else 'off'} | "
            f"{best:.2f}; {', '.join(f'{s:.2f}' for s in r['step_seconds'])} | {ratio} | "
            f"{r['rss_before_steps_mb']:.0f} | {r['step_peak_rss_mb']:.0f} | {r['lifetime_peak_rss_mb']:.0f} | {r['loss']:.6f} |"
        )
    lines += ["", *results["notes"]]
    return lines


def notes(runs: list[dict]) -> list[str]:
    """What the numbers say about agreement (the same step must give the same loss)."""
    out = []
    by = {(r["side"], r["gradient_checkpointing"]): r for r in runs}
    for ck in (False, True):
        u, s = by.get(("upstream", ck)), by.get(("standalone-upstream+projection", ck))
        if u and s:
            out.append(
                f"- Same step, checkpointing {'on' if ck else 'off'}: |loss upstream - loss standalone| = "
                f"{abs(u['loss'] - s['loss']):.3g}."
            )
    out.append(
        "- Upstream's unpatched recipe cannot run at this size; the standalone refuses recipe='upstream' here "
        "with a message saying so."
    )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/q3tts-bench-training", help="Where the random weights are kept.")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--text-tokens", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prepare-only", action="store_true", help="Only write the random weights.")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        r = run_child(
            args.child, args.checkpointing, Path(args.weights), args.frames, args.text_tokens, args.warmup, args.steps
        )
        print(json.dumps(r))
        return
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    weights = prepare(Path(args.work))
    if args.prepare_only:
        print(weights)
        return
    runs = [spawn(args, side, ck, weights) for ck in (False, True) for side in args.sides.split(",")]
    n_trained = runs[0]["trained_parameters"]
    results = {
        "environment": environment(),
        "load_at_start": load,
        "batch": {"frames": args.frames, "audio_seconds": args.frames / 12.5, "text_tokens": args.text_tokens},
        "warmup": args.warmup,
        "steps": args.steps,
        "adamw_state_mb": 8 * n_trained / 2**20,
        "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "runs": runs,
        "notes": notes(runs),
    }
    write_reports(results, Path(args.out))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
