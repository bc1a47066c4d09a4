"""Decode-step microbenchmark: the 0.6B/1.7B code-predictor step and talker step (M = batch) under
eager torch and under inductor option sets, in ms and GB/s of weights streamed.

This is the profile behind the fast path's inductor options (standalone/fast.py COMPILE_OPTIONS):
which options make inductor emit GEMV-friendly code for M=1 linears, and whether frozen weights
are pre-packed (``cpp.weight_prepack``) into oneDNN/MKL linears. Random weights at the released
sizes; each variant compiles its own graph (``--variants`` picks them).

    python -m q3tts.bench.step --size 0.6B --dtypes fp32,bf16 --out reports/step-bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from q3tts.standalone.config import Qwen3TTSConfig
from q3tts.standalone.fast import DecodeGraph
from q3tts.standalone.layers import rope_cos_sin
from q3tts.standalone.talker import CodePredictor, Talker
from q3tts.verify.fixtures.released import released_config

# name -> inductor options (None = eager). Inductor config keys with dots are passed as options too.
VARIANTS: dict[str, dict | None] = {
    "eager": None,
    "inductor": {},
    "freezing": {"freezing": True},
    "freezing_noprepack": {"freezing": True, "cpp.weight_prepack": False},
    "autotune_freezing": {"max_autotune": True, "freezing": True},
    "autotune_freezing_noprepack": {"max_autotune": True, "freezing": True, "cpp.weight_prepack": False},
}


def _inputs(module, decoder, cfg, batch: int, window: int, dtype):
    """One-token step inputs at position ``window`` over a cache of ``window + 1`` positions,
    attending to the ``window`` cached ones and itself."""
    hidden = cfg.hidden_size
    x = torch.randn(batch, 1, getattr(module, "_in_width", hidden), dtype=dtype)
    cache = decoder.new_cache(cfg, batch, window + 1, dtype, "cpu")
    pos = torch.tensor([window])
    inv = module.inv_freq
    if isinstance(module, Talker):
        cos, sin = rope_cos_sin(inv, pos.float().view(1, 1, 1).expand(3, batch, 1), dtype, module.mrope_rows)
    else:
        cos, sin = rope_cos_sin(inv, pos[None], dtype)
    mask = torch.zeros(batch, 1, 1, window, dtype=torch.bool)
    mask[..., :window] = True
    return x, cos, sin, cache.k, cache.v, mask


@torch.inference_mode()
def time_variant(graph, args, iters: int) -> tuple[float, float]:
    """(first call seconds incl. compile, median ms of ``iters`` calls after 3 warm-ups)."""
    t0 = time.perf_counter()
    graph(*args)
    first = time.perf_counter() - t0
    for _ in range(3):
        graph(*args)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        graph(*args)
        times.append(time.perf_counter() - t)
    return first, 1e3 * statistics.median(times)


def build(size: str, which: str, dtype: torch.dtype):
    cfg = Qwen3TTSConfig.from_upstream(released_config(size, "custom_voice")).talker
    torch.manual_seed(0)
    if which == "talker":
        module = Talker(cfg)
        graph_module = DecodeGraph(module.decoder, head=module.codec_head)
        tcfg = cfg.transformer
    else:
        module = CodePredictor(cfg.code_predictor, cfg.transformer.hidden_size)
        graph_module = DecodeGraph(module.decoder, projection=module.input_projection)
        module._in_width = cfg.transformer.hidden_size
        tcfg = cfg.code_predictor.transformer
    for p in module.parameters():  # random weights at a realistic scale (values do not change speed)
        torch.nn.init.normal_(p, std=0.02)
    module.to(dtype).eval()
    graph_module.to(dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in graph_module.parameters())
    return module, graph_module, tcfg, weight_bytes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="0.6B")
    ap.add_argument("--which", default="code_predictor,talker")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--window", type=int, default=128, help="talker cache positions attended")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    rows = []
    for which in args.which.split(","):
        for dn in args.dtypes.split(","):
            module, graph_module, tcfg, weight_bytes = build(args.size, which, dtypes[dn])
            window = args.window if which == "talker" else 15
            inputs = _inputs(module, module.decoder, tcfg, args.batch, window, dtypes[dn])
            for name in args.variants.split(","):
                opts = VARIANTS[name]
                torch._dynamo.reset()
                graph = graph_module if opts is None else torch.compile(graph_module, dynamic=False, options=opts)
                first, ms = time_variant(graph, inputs, args.iters)
                row = dict(
                    size=args.size,
                    which=which,
                    dtype=dn,
                    variant=name,
                    batch=args.batch,
                    ms=ms,
                    gb_per_s=weight_bytes / ms / 1e6,
                    weight_bytes=weight_bytes,
                    first_call_s=first,
                )
                rows.append(row)
                print(
                    f"{which:15} {dn:5} {name:28} {ms:8.2f} ms {row['gb_per_s']:6.1f} GB/s  first call {first:6.1f} s",
                    flush=True,
                )
            del module, graph_module
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
