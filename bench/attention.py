"""The fast path's decode attention as batched matmuls or as reductions, A/B in one process.

A decode step attends a handful of query rows (heads per kv head x new positions) over a short
window. standalone/fast.py computes the scores and the weighted sum as reductions inductor fuses
into the layer (fast._scores, fast._mix); before 7 Dec 2026 they were torch.matmul calls (bmm),
each one a dispatch of its own. This benchmark builds the released-size model with random weights
in each mode, compiles one engine per formulation over the same weights, and alternates their
calls so both see the same machine:

- the code predictor's frame (prefill and 14 steps, with sampling: FastEngine.generate_frame);
- the talker's one-token step over a cache of ``--positions`` positions.

    python -m q3tts.bench.attention --size 0.6B --modes bf16+int4,bf16 --out reports/attention-reductions
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from q3tts.bench.generation import FAST_DTYPES, fast_model
from q3tts.standalone import fast
from q3tts.standalone.config import Qwen3TTSConfig
from q3tts.standalone.model import Qwen3TTS
from q3tts.standalone.quant import QUANT_NAMES
from q3tts.standalone.sampling import SamplingParams
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.machine import cpu_model


def _scores_bmm(q, k):
    """The earlier formulation of fast._scores: one batched matmul in the model's dtype."""
    return torch.matmul(q, k.transpose(-1, -2)).float()


def _mix_bmm(p, v):
    """The earlier formulation of fast._mix: probabilities rounded to v's dtype, one matmul."""
    return torch.matmul(p.to(v.dtype), v).float()


FORMULATIONS = {"bmm": (_scores_bmm, _mix_bmm), "reductions": (fast._scores, fast._mix)}


def _use(name: str) -> None:
    """Point the fast path at one formulation (dynamo guards on these globals: each engine's graphs
    were traced under one of them and run only under it)."""
    fast._scores, fast._mix = FORMULATIONS[name]


def random_model(size: str, mode: str, seed: int = 0):
    cfg = Qwen3TTSConfig.from_upstream(released_config(size, "custom_voice"))
    torch.manual_seed(seed)
    st = Qwen3TTS(cfg).eval()
    with torch.no_grad():
        for p in st.parameters():
            p.normal_(std=0.02)
    return fast_model(st, cfg, mode), cfg


def measure_mode(size: str, mode: str, positions: int, iters: int) -> dict:
    model, cfg = random_model(size, mode)
    engines, warm = {}, {}
    for name in FORMULATIONS:
        _use(name)
        engines[name] = fast.FastEngine(model.talker, model.code_predictor)
        warm[name] = engines[name].warm_up()
    dtype = next(model.talker.parameters()).dtype
    hidden = torch.randn(1, 1, cfg.talker.transformer.hidden_size, dtype=dtype)
    params = SamplingParams(True, 50, 1.0, 0.9)  # upstream's sub-talker defaults
    position = torch.full((3, 1, 1), float(positions))
    times = {(part, name): [] for part in ("code predictor frame", "talker step") for name in engines}
    with torch.inference_mode():
        caches = {
            n: model.talker.decoder.new_cache(
                cfg.talker.transformer, 1, e.talker_cache_len(positions + 1), dtype, "cpu"
            )
            for n, e in engines.items()
        }
        for it in range(iters + 2):  # the first two calls of each are not timed
            for name, engine in engines.items():
                _use(name)
                cp_cache = model.code_predictor.decoder.new_cache(
                    engine.cp.cfg.transformer, 1, cfg.talker.num_code_groups, dtype, "cpu"
                )
                t0 = time.perf_counter()
                engine.generate_frame(hidden, hidden, cp_cache, params)
                t1 = time.perf_counter()
                engine.talker_step(hidden, position, None, caches[name], positions)
                t2 = time.perf_counter()
                if it >= 2:
                    times[("code predictor frame", name)].append(1e3 * (t1 - t0))
                    times[("talker step", name)].append(1e3 * (t2 - t1))
    _use("reductions")
    rows = [
        {"mode": mode, "part": part, "formulation": name, "median_ms": statistics.median(v), "min_ms": min(v)}
        for (part, name), v in times.items()
    ]
    return {"rows": rows, "warm_up_s": warm}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention-reductions.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["meta"]
    lines = [
        "# The fast path's decode attention: batched matmuls against reductions",
        "",
        f"`python -m q3tts.bench.attention --size {m['size']} --modes {','.join(m['modes'])} --positions "
        f"{m['positions']} --iters {m['iters']}`; {m['cpu']}, {m['threads']} threads, torch {m['torch']}. Random weights "
        "at the released size; both formulations compiled over the same weights in one process, their calls "
        f"alternated; {m['iters']} timed calls each. Code predictor frame: prefill + 14 steps with sampling; talker "
        f"step: one token over {m['positions']} cached positions.",
        "",
        "| mode | part | bmm median (min) ms | reductions median (min) ms | reductions / bmm (median) |",
        "|---|---|---|---|---|",
    ]
    by = {(r["mode"], r["part"], r["formulation"]): r for r in result["rows"]}
    for mode in m["modes"]:
        for part in ("code predictor frame", "talker step"):
            a, b = by[(mode, part, "bmm")], by[(mode, part, "reductions")]
            lines.append(
                f"| {mode} | {part} | {a['median_ms']:.1f} ({a['min_ms']:.1f}) | {b['median_ms']:.1f} "
                f"({b['min_ms']:.1f}) | {b['median_ms'] / a['median_ms']:.2f} |"
            )
    (out / "attention-reductions.md").write_text("\n".join(lines) + "\n")


def _mode(name: str) -> str:
    dname, _, quant = name.partition("+")
    if dname not in FAST_DTYPES or (quant and quant not in QUANT_NAMES):
        raise argparse.ArgumentTypeError(f"mode {name!r}: a dtype of {', '.join(FAST_DTYPES)}, optionally +quant")
    return name


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="0.6B", choices=("0.6B", "1.7B"))
    p.add_argument("--modes", default="bf16+int4,bf16", type=lambda s: [_mode(x) for x in s.split(",")])
    p.add_argument("--positions", type=int, default=150)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/attention-reductions")
    args = p.parse_args(argv)
    if args.positions < 1 or args.iters < 1 or args.threads < 1:
        raise SystemExit("--positions, --iters and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    rows, warm = [], {}
    for mode in args.modes:
        r = measure_mode(args.size, mode, args.positions, args.iters)
        rows += r["rows"]
        warm[mode] = r["warm_up_s"]
        for row in r["rows"]:
            print(row, flush=True)
    meta = {
        "size": args.size,
        "modes": args.modes,
        "positions": args.positions,
        "iters": args.iters,
        "threads": args.threads,
        "cpu": cpu_model(),
        "torch": torch.__version__,
    }
    write({"meta": meta, "rows": rows, "warm_up_s": warm}, Path(args.out))
    print(f"wrote {args.out}/attention-reductions.md")


if __name__ == "__main__":
    main()
