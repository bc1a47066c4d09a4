"""int8 weight-only linears (torch.ops.aten._weight_int8pack_mm) against fp32 and bf16 F.linear, on
the 0.6B code predictor's linear stack at M=1 (5 layers of wqkv 4096x1024, wo 1024x2048, gate_up
6144x1024, down 1024x3072; the workload read 15 times per frame). Issue #12, item 4: offer int8
only if it beats the half-precision path.

    python -m q3tts.bench.int8 --repeats 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = ((4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072))  # (out, in) per layer
LAYERS = 5


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8 and its bf16 scales."""
    scale = w.abs().amax(1).clamp(min=1e-12) / 127
    return torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8), scale.to(torch.bfloat16)


def stack(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o, i, generator=g) / i**0.5 for _ in range(LAYERS) for o, i in SHAPES]


@torch.inference_mode()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    w32 = stack()
    w16 = [w.to(torch.bfloat16) for w in w32]
    q8 = [quantize(w) for w in w32]
    xs = {i: torch.randn(1, i) for i in {s[1] for s in SHAPES}}

    def run(kind: str) -> None:
        for k, w in enumerate(w32):
            x = xs[w.shape[1]]
            if kind == "fp32":
                F.linear(x, w)
            elif kind == "bf16":
                F.linear(x.to(torch.bfloat16), w16[k])
            else:
                torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), *q8[k])

    nbytes = {
        "fp32": sum(w.numel() * 4 for w in w32),
        "bf16": sum(w.numel() * 2 for w in w32),
        "int8": sum(w.numel() + w.shape[0] * 2 for w in w32),
    }
    times: dict[str, list[float]] = {k: [] for k in nbytes}
    for kind in nbytes:  # warm-up
        run(kind)
    for _ in range(args.rounds):
        for kind in nbytes:
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                run(kind)
            times[kind].append((time.perf_counter() - t0) / args.repeats * 1000)
    ref = [F.linear(xs[w.shape[1]], w) for w in w32[:4]]
    got = [
        torch.ops.aten._weight_int8pack_mm(xs[w.shape[1]].to(torch.bfloat16), *q8[k]).float()
        for k, w in enumerate(w32[:4])
    ]
    rel = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(ref, got))
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ms_per_step": {k: statistics.median(v) for k, v in times.items()},
        "ms_all_rounds": times,
        "gb_per_s": {k: nbytes[k] / statistics.median(times[k]) / 1e6 for k in nbytes},
        "int8_max_rel_error_first_layer": rel,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
