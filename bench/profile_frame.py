"""Where a fast-path frame's time goes: the profile behind the targets of issue #12 that the fast
path misses (tiny: at least 10x upstream eager per frame; 0.6B/1.7B: qwentts.cpp and the floor).

One process, one custom_voice model (tiny fixture config or a released size; fixture weights,
shared between upstream and the standalone models as in bench_generation), batch 1, sampling on.
It measures:

- ms per frame of upstream eager, the exact path and the fast path (each dtype), alternating,
  median over rounds;
- the fast frame split by wall time into: the two compiled graph calls (the talker step; the code
  predictor's frame, whose sampling is timed as a part nested in it), the talker's group-0
  sampling, its KV-cache store and M-RoPE inputs, and the rest (the Python decode loop, the talker
  input sum, the codec embedding, bookkeeping), with the share of the frame spent outside the graph
  calls (issue 28: under 5%), over the whole run (the prefill amortized) and in the decode loop alone
  (a 1-frame run subtracted). Each part is timed by wrapping the callable on the instance (module
  attributes for the free functions), so nothing in standalone/ changes. Parts that stream
  weights (graphs, heads) also get the weight bytes they read per frame and the rate reached;
- how many torch ops each path dispatches per frame (torch.profiler, CPU events), and the wall
  time of one call of a trivial compiled graph (x + 1 on a [1, 1, H] tensor): the per-call cost
  of a compiled graph that no kernel work can remove.

    python -m q3tts.bench.profile_frame --size tiny --frames 64 --rounds 5 --out reports/frame-profile-tiny.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from q3tts.bench.generation import FAST_DTYPES, build_pair, fast_model, load_average, prompt_kwargs
from q3tts.standalone import fast as fast_mod
from q3tts.standalone import frame_pick
from q3tts.standalone import generation as gen_mod
from q3tts.standalone.quant import QUANT_NAMES
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.fixtures.writer import tiny_config

TALKER = "graph: talker step"
CP = "graph: code predictor frame (15 steps with embeddings, heads and sampling)"
CP_SAMPLING = "of which sampling inside the frame graph"
NESTED = (CP_SAMPLING,)  # parts timed inside another part: not subtracted again for the rest


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
    eng._talker_step = timers.wrap(TALKER, eng._talker_step)
    eng._cp_graph = timers.wrap(CP, eng._cp_graph)


def instrument_modules(timers: Timers) -> None:
    """The free functions, wrapped once in the modules that call them (frame_pick, generation,
    fast). The frame graph's pick op looks its sampler up at call time, so the wrapper times the
    sampling inside that graph (a part nested in CP)."""
    frame_pick.sample_next_token = timers.wrap(CP_SAMPLING, frame_pick.sample_next_token)
    gen_mod.sample_next_token = timers.wrap("sampling: the talker's group 0", gen_mod.sample_next_token)
    fast_mod.store_new = timers.wrap("talker KV-cache store", fast_mod.store_new)
    fast_mod.rope_cos_sin = timers.wrap("talker M-RoPE inputs", fast_mod.rope_cos_sin)


def timed_parts(model, kwargs, frames: int, timers: Timers) -> tuple[float, dict, dict]:
    """One run of ``frames`` frames with the timers on: (ms per frame, seconds per part, calls per part)."""
    timers.seconds.clear()
    timers.calls.clear()
    timers.active = True
    total = run_ms_per_frame(model.generate, kwargs, frames)
    timers.active = False
    return total, dict(timers.seconds), dict(timers.calls)


def decode_loop_outside(runs, frames: int) -> dict:
    """The decode loop's work outside the graph calls, per frame: each round's ``frames``-frame run
    minus its 1-frame run, so the prompt prefill (eager, and slow for a quantized talker) and the
    first frame cancel out; the median round by that difference."""
    rows = []
    for (long_ms, long_s, _), (short_ms, short_s, _) in runs:
        span = long_ms * frames - short_ms  # ms of the frames after the first
        graphs = 1e3 * sum(long_s.get(k, 0.0) - short_s.get(k, 0.0) for k in (TALKER, CP))
        rows.append((span / (frames - 1), (span - graphs) / (frames - 1)))
    ms, outside = sorted(rows, key=lambda r: r[1])[len(rows) // 2]
    return {"ms_per_frame": ms, "outside_graphs_ms_per_frame": outside, "rounds": rows}


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


def weight_bytes_per_frame(model) -> dict[str, int]:
    """Weight bytes each streaming part reads per frame: the talker graph once, the predictor graph
    once per residual group with that group's head (its embedding is a row lookup)."""

    def nbytes(*modules):  # parameters and buffers: a quantized linear holds its weight as buffers
        tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
        return sum(t.numel() * t.element_size() for t in tensors)

    talker, cp = model.talker, model.code_predictor
    steps = cp.cfg.num_code_groups - 1
    return {
        TALKER: nbytes(talker.decoder, talker.codec_head),
        CP: steps * (nbytes(cp.decoder, cp.input_projection) + cp.heads[0].numel() * cp.heads.element_size()),
    }


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


def profile(size: str, fast_dtypes: list[str], frames: int, rounds: int, count_ops: bool) -> dict:
    config = tiny_config("custom_voice") if size == "tiny" else released_config(size, "custom_voice")
    up, st, cfg = build_pair(config)
    fast = {f"fast {d}": fast_model(st, cfg, d).compile_fast() for d in fast_dtypes}
    kwargs = prompt_kwargs(cfg, 1)
    engines = {"upstream": up.generate, "exact": st.generate, **{k: m.generate for k, m in fast.items()}}
    load_before = load_average()
    for fn in engines.values():  # warm-up (the fast engines compile here)
        run_ms_per_frame(fn, kwargs, frames)  # as long as the timed runs: no shape first seen there
    timers = Timers()
    instrument_modules(timers)
    for model in fast.values():
        instrument(model, timers)
    ms = {name: [] for name in engines}
    instrumented = {name: [] for name in fast}
    for _ in range(rounds):
        for name, fn in engines.items():
            ms[name].append(run_ms_per_frame(fn, kwargs, frames))
        for name, model in fast.items():  # more runs with the timers on (their ms/frame shows their cost)
            instrumented[name].append(
                (timed_parts(model, kwargs, frames, timers), timed_parts(model, kwargs, 1, timers))
            )
    splits = {}
    for name, runs in instrumented.items():  # the parts of the median instrumented run, per frame
        (total, seconds, calls), _ = sorted(runs, key=lambda r: r[0][0])[len(runs) // 2]
        parts = {k: 1e3 * v / frames for k, v in seconds.items()}
        top_level = sum(v for k, v in parts.items() if k not in NESTED)
        parts["rest: Python loop, talker input sum, codec embedding, bookkeeping"] = total - top_level
        nbytes = weight_bytes_per_frame(fast[name])
        splits[name] = {
            "instrumented_ms_per_frame": total,
            "outside_graphs_ms_per_frame": total - parts.get(TALKER, 0.0) - parts.get(CP, 0.0),
            "decode_loop": decode_loop_outside(runs, frames),
            "parts_ms_per_frame": parts,
            "calls_per_frame": {k: v / frames for k, v in calls.items()},
            "weight_bytes_per_frame": nbytes,
            "gb_per_s": {k: b / parts[k] / 1e6 for k, b in nbytes.items() if parts.get(k)},
        }
    return {
        "model": size,
        "batch": 1,
        "frames": frames,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "ms_per_frame": {k: {"median": statistics.median(v), "min": min(v), "rounds": v} for k, v in ms.items()},
        "fast_splits": splits,
        "ops_per_frame": {name: ops_per_frame(fn, kwargs, 8) for name, fn in engines.items()} if count_ops else {},
        "trivial_graph_call_us": trivial_graph_call_us(cfg.talker.transformer.hidden_size),
    }


def write_markdown(p: dict, path: Path) -> None:
    up = p["ms_per_frame"]["upstream"]["median"]
    ops = p["ops_per_frame"]
    lines = [
        f"# Where a fast-path frame goes: {p['model']}, batch 1 (issue #12)",
        "",
        f"`python -m q3tts.bench.profile_frame --size {p['model']} --frames {p['frames']} --rounds {p['rounds']}`, "
        f"{p['threads']} threads, load {p['load_before']} / {p['load_after']}.",
        "",
        "| engine | ms/frame median (min) | upstream / engine | torch ops per frame |",
        "|---|---|---|---|",
        *(
            f"| {k} | {v['median']:.2f} ({v['min']:.2f}) | {up / v['median']:.2f}x | "
            f"{format(ops[k], '.0f') if k in ops else '-'} |"
            for k, v in p["ms_per_frame"].items()
        ),
    ]
    for name, sp in p["fast_splits"].items():
        total = sp["instrumented_ms_per_frame"]
        lines += [
            "",
            f"{name}, one instrumented run ({total:.2f} ms/frame with the timers on):",
            "",
            "| part | ms/frame | share | calls/frame | weight MB/frame | GB/s |",
            "|---|---|---|---|---|---|",
            *(
                f"| {k} | {v:.3f} | {v / total:.0%} | {sp['calls_per_frame'].get(k, 0):.0f} | "
                + (
                    f"{sp['weight_bytes_per_frame'][k] / 1e6:.1f} | {sp['gb_per_s'][k]:.1f} |"
                    if k in sp["gb_per_s"]
                    else "- | - |"
                )
                for k, v in sorted(sp["parts_ms_per_frame"].items(), key=lambda kv: -kv[1])
            ),
            "",
            f"Outside the graph calls: {sp['outside_graphs_ms_per_frame']:.3f} ms/frame "
            f'({sp["outside_graphs_ms_per_frame"] / total:.1%}); "{CP_SAMPLING}" is part of the frame graph\'s time.',
        ]
        if "decode_loop" in sp:
            dl = sp["decode_loop"]
            lines += [
                "",
                f"In the decode loop alone (each round's 1-frame run subtracted, so the prompt prefill cancels out; "
                f"median round): {dl['outside_graphs_ms_per_frame']:.3f} of {dl['ms_per_frame']:.2f} ms/frame outside "
                f"the graph calls ({dl['outside_graphs_ms_per_frame'] / dl['ms_per_frame']:.1%}); rounds: "
                + ", ".join(f"{o:.2f} of {m:.2f}" for m, o in dl["rounds"])
                + ".",
            ]
    lines += ["", f"One call of a trivial compiled graph (x + 1): {p['trivial_graph_call_us']:.0f} µs."]
    path.write_text("\n".join(lines) + "\n")


def _known_quant(name: str) -> bool:
    """An entry's quant half is checked before the models are built (minutes at 0.6B)."""
    return not name or name in QUANT_NAMES


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "0.6B", "1.7B"])
    ap.add_argument("--fast-dtypes", default="fp32", help="fp32, bf16 or DTYPE+QUANT, e.g. bf16,bf16+int8")
    ap.add_argument("--no-ops", action="store_true", help="skip the torch.profiler op count")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/frame-profile-tiny.json")
    args = ap.parse_args(argv)
    if args.frames < 2 or args.rounds < 1:
        raise SystemExit("--frames must be >= 2 and --rounds >= 1")
    dtypes = [d for d in args.fast_dtypes.split(",") if d]
    bad = [d for d in dtypes if d.partition("+")[0] not in FAST_DTYPES or not _known_quant(d.partition("+")[2])]
    if bad:
        raise SystemExit(
            f"--fast-dtypes: fp32, bf16 or DTYPE+QUANT with QUANT one of {', '.join(QUANT_NAMES)} "
            f"(e.g. bf16+int4), got {bad}"
        )
    torch.set_num_threads(args.threads)
    result = profile(args.size, dtypes, args.frames, args.rounds, not args.no_ops)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
