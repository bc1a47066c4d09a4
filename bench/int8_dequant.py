"""The int8 prompt prefill's dequantization: the measurement behind quant.dequantize_int8's chunks
and quant._DequantScratch (first audio of the int8 modes, issue 28).

Over more than two rows (a prompt prefill) an int8 linear dequantizes its codes and multiplies by
F.linear. This times the dequantization of every int8 linear of one released size's talker (the
codes of N(0, 0.02) weights, groups of 64, bf16 activations), three ways, each giving the same bits:

- ``one expression, fresh tensor``: ``(codes.float() * scales).to(bf16)`` per linear (the code
  before): weight-sized fp32 temporaries and a fresh output, whose pages the kernel faults in;
- ``chunks, fresh tensor``: dequantize_int8 into a new output per linear;
- ``chunks, reused buffer``: dequantize_int8 into one buffer reused from linear to linear (what
  WeightOnlyLinear does).

and, for scale, the GEMM F.linear over ``--rows`` rows on the dequantized weights. Each row of the
table is the best of ``--rounds`` passes over all the talker's layers.

    python -m q3tts.bench.int8_dequant --size 1.7B --out reports/int8-dequant
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from q3tts.standalone import Qwen3TTSConfig
from q3tts.standalone.quant import DEFAULT_INT8_GROUP, dequantize_int8, quantize_int8
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.machine import cpu_model


def talker_shapes(size: str) -> tuple[list[tuple[int, int]], int]:
    """(out, in) of one talker layer's four int8 linears (fused qkv, output, fused gate/up, down), and
    the number of layers."""
    tc = Qwen3TTSConfig.from_upstream(released_config(size, "custom_voice")).talker.transformer
    q, kv = tc.num_attention_heads * tc.head_dim, tc.num_key_value_heads * tc.head_dim
    h, i = tc.hidden_size, tc.intermediate_size
    return [(q + 2 * kv, h), (h, q), (2 * i, h), (h, i)], tc.num_hidden_layers


def _one_expression(codes, scales, dtype):
    n, k = codes.shape
    return (codes.float().view(n, scales.shape[1], -1) * scales.float()[..., None]).view(n, k).to(dtype)


def _best_pass_ms(fn, weights, layers: int, rounds: int) -> float:
    """The best of ``rounds`` passes over one layer's linears, scaled to all ``layers``."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for codes, scales in weights:
            fn(codes, scales)
        best = min(best, time.perf_counter() - t0)
    return best * layers * 1e3


@torch.inference_mode()
def run(size: str, rows: int, rounds: int) -> dict:
    shapes, layers = talker_shapes(size)
    g = torch.Generator().manual_seed(0)
    weights = [quantize_int8(torch.randn(n, k, generator=g) * 0.02, DEFAULT_INT8_GROUP) for n, k in shapes]
    bf16 = torch.bfloat16
    for codes, scales in weights:  # the three forms are the same bits
        one = _one_expression(codes, scales, bf16)
        assert torch.equal(dequantize_int8(codes, scales, bf16), one)
    largest = max(n * k for n, k in shapes)
    buffer = torch.empty(largest, dtype=bf16)
    forms = {
        "one expression, fresh tensor": lambda c, s: _one_expression(c, s, bf16),
        "chunks, fresh tensor": lambda c, s: dequantize_int8(c, s, bf16),
        "chunks, reused buffer": lambda c, s: dequantize_int8(c, s, bf16, out=buffer[: c.numel()].view(c.shape)),
    }
    out = {name: _best_pass_ms(fn, weights, layers, rounds) for name, fn in forms.items()}
    dense = [dequantize_int8(c, s, bf16) for c, s in weights]
    xs = [torch.randn(rows, w.shape[1], dtype=bf16) for w in dense]  # each linear's own input width
    out[f"F.linear over {rows} rows (bf16 weights)"] = _best_pass_ms(
        lambda w, xi: F.linear(xi, w), list(zip(dense, xs)), layers, rounds
    )
    return {"size": size, "layers": layers, "shapes": shapes, "rows": rows, "ms": out}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1.7B", choices=("0.6B", "1.7B"))
    ap.add_argument("--rows", type=int, default=32, help="prompt positions of the GEMM timed for scale")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("reports/int8-dequant"))
    args = ap.parse_args(argv)
    if args.rows < 3 or args.rounds < 1:
        raise SystemExit("--rows must be >= 3 (fewer go through fast.gemv) and --rounds >= 1")
    torch.set_num_threads(args.threads)
    result = run(args.size, args.rows, args.rounds)
    result["machine"] = f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"int8-dequant-{args.size}"  # not Path.with_suffix: "0.6B" would lose ".6B"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# int8 prefill: dequantizing the {args.size} talker's int8 weights ({result['layers']} layers)",
        "",
        f"`python -m q3tts.bench.int8_dequant --size {args.size} --rows {args.rows} --rounds {args.rounds}`; "
        f"{result['machine']}; bf16, groups of {DEFAULT_INT8_GROUP}; best of the rounds, ms per prefill's worth "
        "(every talker layer once).",
        "",
        "| form | ms |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ms:.0f} |" for name, ms in result["ms"].items()]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
