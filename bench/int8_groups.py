"""int8 weight scales per output channel or per group of 32 inputs, at one row: the measurement
behind quant.quantize_int8's groups and fast.gemv's way of applying them (issue 28).

An RMSNorm and one one-row linear (bf16 activations, int8 codes, the input materialized as the fast
path does), compiled with the fast path's inductor options, in five forms:

- ``per-channel``: one scale per output row, applied after the reduction (the int8 mode before);
- ``group-inside``: fast.gemv itself, a scale per group of 32 inputs multiplied into each code
  inside the one reduction, with fp32 or bf16 scales;
- ``group-sums``: each group's dot product summed first, then scaled and summed (two reductions).

Each row: the best of ``--rounds`` means over ``--repeats`` calls, and the weight's mean squared
quantization error on the N(0, 0.02) matrix the linear multiplies by.

    python -m q3tts.bench.int8_groups --out reports/int8-groups
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from q3tts.standalone.fast import COMPILE_OPTIONS, gemv, materialize_fp32
from q3tts.standalone.quant import dequantize_int8, quantize_int8
from q3tts.verify.machine import cpu_model

SHAPES = ((6144, 1024), (1024, 3072))  # the 0.6B fused gate/up and down projections (out, in)
GROUP = 32


def _bf16_scaled(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """quant.quantize_int8 with the scales stored in bf16 (the codes rounded against them)."""
    n, k = w.shape
    scales = quantize_int8(w, group)[1].to(torch.bfloat16)
    codes = torch.round(w.view(n, k // group, group) / scales.float()[..., None]).clamp(-127, 127)
    return codes.to(torch.int8).view(n, k), scales


def _forms(n: int, k: int, norm_weight):
    """name -> (function of x, weight mse)."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(0)) * 0.02

    def norm(x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * norm_weight

    def mse(codes, scales):
        return float((dequantize_int8(codes, scales) - w).pow(2).mean())

    codes_c, scales_c = quantize_int8(w, k)
    forms = {
        "per-channel": (
            lambda x: ((materialize_fp32(norm(x)).unsqueeze(-2) * codes_c.float()).sum(-1) * scales_c[:, 0]).to(
                x.dtype
            ),
            mse(codes_c, scales_c),
        ),
    }
    for tag, (codes, scales) in (("fp32", quantize_int8(w, GROUP)), ("bf16", _bf16_scaled(w, GROUP))):
        cg = codes.view(n, k // GROUP, GROUP)

        def inside(x, codes=codes, scales=scales):  # the fast path's own one-row reduction
            return gemv(norm(x), codes, scales)

        def sums(x, cg=cg, scales=scales):
            xg = materialize_fp32(norm(x)).unflatten(-1, (1, k // GROUP, GROUP))
            return ((xg * cg.float()).sum(-1) * scales.float()).sum(-1).to(x.dtype)

        forms[f"group-inside, {tag} scales"] = (inside, mse(codes, scales))
        forms[f"group-sums, {tag} scales"] = (sums, mse(codes, scales))
    return forms


def _time(fn, x, repeats: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best * 1e6


@torch.inference_mode()
def run(repeats: int, rounds: int) -> list[dict]:
    rows = []
    for n, k in SHAPES:
        x = torch.randn(1, k, dtype=torch.bfloat16)
        norm_weight = torch.rand(k, dtype=torch.bfloat16)
        for name, (fn, err) in _forms(n, k, norm_weight).items():
            compiled = torch.compile(fn, dynamic=False, options=dict(COMPILE_OPTIONS))  # as the fast path compiles
            compiled(x)
            rows.append(
                {"shape": f"{n}x{k}", "form": name, "us": _time(compiled, x, repeats, rounds), "weight_mse": err}
            )
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("reports/int8-groups"))
    args = ap.parse_args(argv)
    rows = run(args.repeats, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (args.out / "int8-groups.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    lines = [
        "# int8 scales per channel or per group of 32, one-row linear after an RMSNorm",
        "",
        f"`python -m q3tts.bench.int8_groups --repeats {args.repeats} --rounds {args.rounds}`; {machine}; bf16 "
        "activations, input materialized in fp32 (fast.materialize_fp32), best of the rounds' means.",
        "",
        "| weight (out x in) | form | µs per call | weight mean squared error |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['shape']} | {r['form']} | {r['us']:.1f} | {r['weight_mse']:.3g} |" for r in rows]
    (args.out / "int8-groups.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
