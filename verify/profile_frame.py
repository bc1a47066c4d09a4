"""Where a fast-path frame's time goes: the profile behind the tiny-model target of issue #12
(fast path at least 10x upstream eager per frame).

One process, tiny custom_voice model (fixture weights, shared between upstream and the standalone
models as in bench_generation), batch 1, sampling on. It measures:

- ms per frame of upstream eager, the exact path and the fast path (fp32), alternating, median
  over rounds;
- the fast frame split by wall time into: the compiled graph calls (talker step; code-predictor
  prefill + steps), the eager code-predictor heads and embeddings, sampling, KV-cache stores,
  RoPE/mask inputs, and the rest (the Python decode loop, the talker input sum, the codec
  embedding, bookkeeping). Each part is timed by wrapping the callable on the instance (module
  attributes for the free functions), so nothing in standalone/ changes;
- how many torch ops each path dispatches per frame (torch.profiler, CPU events), and the wall
  time of one call of a trivial compiled graph (x + 1 on a [1, 1, H] tensor): the per-call cost
  of a compiled graph that no kernel work can remove.

    python -m q3tts.verify.profile_frame --frames 64 --rounds 5 --out reports/frame-profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from q3tts.standalone import fast as fast_mod
from q3tts.standalone import generation as gen_mod

from .bench_generation import build_pair, load_average, prompt_kwargs, standalone_view
from .fixtures import tiny_config


class Timers:
    """Accumulated wall seconds and call counts per part while ``active``."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.active = False

    def wrap(self, part: str, fn):
        def timed(*args, **kwargs):
            if not self.active:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - t0
                self.calls[part] += 1

        return timed


def instrument(model, timers: Timers) -> None:
    """Wrap the fast engine's parts of ``model`` (compile_fast already called) with ``timers``.
    Free functions are wrapped in the modules that call them (fast, generation)."""
    eng = model._fast
    eng._talker_step = timers.wrap("graph: talker step", eng._talker_step)
    eng._cp_graph = timers.wrap("graph: code predictor (prefill + steps)", eng._cp_graph)
    cp = model.code_predictor
    cp.logits = timers.wrap("eager: code-predictor heads", cp.logits)
    cp.embed = timers.wrap("eager: code-predictor embeddings", cp.embed)
    eng._cp_inputs = timers.wrap("RoPE / mask inputs", eng._cp_inputs)
    fast_mod.sample_next_token = timers.wrap("sampling", fast_mod.sample_next_token)
    gen_mod.sample_next_token = timers.wrap("sampling", gen_mod.sample_next_token)
    fast_mod.store_new = timers.wrap("KV-cache stores", fast_mod.store_new)
    fast_mod.rope_cos_sin = timers.wrap("RoPE / mask inputs", fast_mod.rope_cos_sin)


def run_ms_per_frame(fn, kwargs, frames: int) -> float:
    torch.manual_seed(1)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(**kwargs, max_new_tokens=frames + 1)
    return 1e3 * (time.perf_counter() - t0) / frames


def ops_per_frame(fn, kwargs, frames: int) -> float:
    """torch ops dispatched per frame: (events of a ``frames``-frame run - events of a 1-frame
    run) / (frames - 1), so the prefill cancels out."""

    def count(n):
        torch.manual_seed(1)
        with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn(**kwargs, max_new_tokens=n + 1)
        return sum(1 for e in prof.events() if e.name.startswith("aten::"))

    return (count(frames) - count(1)) / (frames - 1)


def trivial_graph_call_us(width: int, iters: int = 2000) -> float:
    """Median µs of one call of a compiled x + 1 (dynamo guards + the inductor wrapper + one tiny
    kernel)."""
    f = torch.compile(lambda x: x + 1, dynamic=False)
    x = torch.randn(1, 1, width)
    with torch.inference_mode():
        for _ in range(10):
            f(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            f(x)
            times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def profile(frames: int, rounds: int) -> dict:
    config = tiny_config("custom_voice")
    up, st, cfg = build_pair(config)
    fast = standalone_view(st, cfg, torch.float32).compile_fast()
    kwargs = prompt_kwargs(cfg, 1)
    engines = {"upstream": up.generate, "exact": st.generate, "fast fp32": fast.generate}
    load_before = load_average()
    for fn in engines.values():  # warm-up (the fast engine compiles here)
        run_ms_per_frame(fn, kwargs, frames)  # as long as the timed runs: no shape first seen there
    timers = Timers()
    instrument(fast, timers)
    ms = {name: [] for name in engines}
    instrumented = []
    for _ in range(rounds):
        for name, fn in engines.items():
            ms[name].append(run_ms_per_frame(fn, kwargs, frames))
        # One more fast run with the timers on; its own ms/frame shows what the wrappers cost.
        timers.seconds.clear()
        timers.calls.clear()
        timers.active = True
        instrumented.append((run_ms_per_frame(fast.generate, kwargs, frames), dict(timers.seconds), dict(timers.calls)))
        timers.active = False
    # The parts of the median instrumented run, per frame.
    total, seconds, calls = sorted(instrumented, key=lambda r: r[0])[len(instrumented) // 2]
    parts = {k: 1e3 * v / frames for k, v in seconds.items()}
    parts["rest: Python loop, talker input sum, codec embedding, bookkeeping"] = total - sum(parts.values())
    return {
        "model": "tiny",
        "batch": 1,
        "frames": frames,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "ms_per_frame": {k: {"median": statistics.median(v), "min": min(v), "rounds": v} for k, v in ms.items()},
        "fast_instrumented_ms_per_frame": total,
        "fast_parts_ms_per_frame": parts,
        "fast_calls_per_frame": {k: v / frames for k, v in calls.items()},
        "ops_per_frame": {name: ops_per_frame(fn, kwargs, 8) for name, fn in engines.items()},
        "trivial_graph_call_us": trivial_graph_call_us(cfg.talker.transformer.hidden_size),
    }


def write_markdown(p: dict, path: Path) -> None:
    up = p["ms_per_frame"]["upstream"]["median"]
    fast = p["ms_per_frame"]["fast fp32"]["median"]
    lines = [
        "# Where a tiny fast-path frame goes (issue #12, tiny target)",
        "",
        f"`python -m q3tts.verify.profile_frame --frames {p['frames']} --rounds {p['rounds']}`, "
        f"{p['threads']} threads, batch 1, load {p['load_before']} / {p['load_after']}.",
        "",
        "| engine | ms/frame median (min) | torch ops per frame |",
        "|---|---|---|",
        *(
            f"| {k} | {v['median']:.2f} ({v['min']:.2f}) | {p['ops_per_frame'][k]:.0f} |"
            for k, v in p["ms_per_frame"].items()
        ),
        "",
        f"fast / upstream: {up / fast:.1f}x (target 10x: {up / 10:.2f} ms/frame).",
        "",
        f"Fast frame split (one instrumented run, {p['fast_instrumented_ms_per_frame']:.2f} ms/frame with the timers on):",
        "",
        "| part | ms/frame | share | calls/frame |",
        "|---|---|---|---|",
        *(
            f"| {k} | {v:.3f} | {v / p['fast_instrumented_ms_per_frame']:.0%} | "
            f"{p['fast_calls_per_frame'].get(k, 0):.0f} |"
            for k, v in sorted(p["fast_parts_ms_per_frame"].items(), key=lambda kv: -kv[1])
        ),
        "",
        f"One call of a trivial compiled graph (x + 1): {p['trivial_graph_call_us']:.0f} µs.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/frame-profile.json")
    args = ap.parse_args(argv)
    if args.frames < 2 or args.rounds < 1:
        raise SystemExit("--frames must be >= 2 and --rounds >= 1")
    torch.set_num_threads(args.threads)
    result = profile(args.frames, args.rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
