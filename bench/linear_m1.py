"""The code predictor's linear stack at M=1 (one token), by implementation: where issue 28 item 4
looks for the lost bandwidth. The 0.6B predictor's 5 layers (wqkv 4096x1024, wo 1024x2048,
gate_up 6144x1024, down 1024x3072; read 15 times per frame) as one chain of linears, run:

- eager: F.linear in fp32 and bf16 (MKL / oneDNN as torch dispatches them);
- compiled with the fast path's inductor options (standalone/fast.py COMPILE_OPTIONS: inductor's
  defaults since 7 Dec 2026; freezing before, which prepacks each weight for oneDNN), and with
  freezing and ``cpp.weight_prepack`` off (the plain mm kernels on frozen weights);
- weight-only int8 and int4 (standalone/quant.py WeightOnlyLinear, bf16 activations), eager and
  compiled with the fast path's options (int8's module multiplies through torch's packed kernel in
  reports/linear-m1; since int8 took group scales it dequantizes and runs a GEMM, its many-row path,
  and the "fast path int8" row is the one-row reduction the decode steps run);
- as the fast path runs them (standalone/fast.py ``decode_linear``): up to GEMV_MAX_ROWS rows a reduction
  inductor generates, at 1, 2 and 4 rows (the batch sizes where the choice between the reduction
  and the GEMM is made), against the GEMM at the same rows.

Each row: median µs per pass over the stack and the weight bytes it streams per second.

    python -m q3tts.bench.linear_m1 --repeats 100 --rounds 3 --out reports/linear-m1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from q3tts.standalone import fast
from q3tts.standalone.fast import COMPILE_OPTIONS
from q3tts.standalone.quant import WeightOnlyLinear, parse_quant
from q3tts.verify.machine import cpu_model

SHAPES = ((4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072))  # (out, in) per layer
LAYERS = 5


class FastPathLinear(nn.Module):
    """A linear called the way the fast path's graphs call it (fast.decode_linear)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.in_features = inner, inner.in_features

    def forward(self, x):
        return fast.decode_linear(self.inner, x)


class Chain(nn.Module):
    """Each linear applied to the input of its own width (the widths do not chain)."""

    def __init__(self, linears: list[nn.Module]):
        super().__init__()
        self.linears = nn.ModuleList(linears)

    def forward(self, xs: dict[int, torch.Tensor]) -> torch.Tensor:
        return torch.cat([lin(xs[lin.in_features]) for lin in self.linears], dim=-1)


def _linears(dtype: torch.dtype, quant: str | None, seed: int = 0, fast_path: bool = False) -> list[nn.Module]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(LAYERS):
        for o, i in SHAPES:
            w = torch.randn(o, i, generator=g) / i**0.5
            if quant:
                out.append(WeightOnlyLinear.from_weight(w, parse_quant(quant), dtype))
            else:
                lin = nn.Linear(i, o, bias=False, dtype=dtype)
                lin.weight.data.copy_(w.to(dtype))
                out.append(lin)
    return [FastPathLinear(lin) for lin in out] if fast_path else out


def _bytes(chain: Chain) -> int:
    return sum(t.numel() * t.element_size() for t in (*chain.parameters(), *chain.buffers()))


VARIANTS = {  # name -> (activation dtype, quant, inductor options or None for eager, rows, as the fast path)
    "eager fp32": (torch.float32, None, None, 1, False),
    "eager bf16": (torch.bfloat16, None, None, 1, False),
    "compiled fp32 (fast path options)": (torch.float32, None, COMPILE_OPTIONS, 1, False),
    "compiled bf16 (fast path options)": (torch.bfloat16, None, COMPILE_OPTIONS, 1, False),
    "compiled fp32, no weight prepack": (
        torch.float32,
        None,
        {"freezing": True, "cpp.weight_prepack": False},
        1,
        False,
    ),
    "compiled bf16, no weight prepack": (
        torch.bfloat16,
        None,
        {"freezing": True, "cpp.weight_prepack": False},
        1,
        False,
    ),
    "eager int8 (bf16 act)": (torch.bfloat16, "int8", None, 1, False),
    "compiled int8 (bf16 act)": (torch.bfloat16, "int8", COMPILE_OPTIONS, 1, False),
    "eager int4-g128 (bf16 act)": (torch.bfloat16, "int4", None, 1, False),
    "compiled int4-g128 (bf16 act)": (torch.bfloat16, "int4", COMPILE_OPTIONS, 1, False),
    "fast path fp32, 1 row": (torch.float32, None, COMPILE_OPTIONS, 1, True),
    "fast path bf16, 1 row": (torch.bfloat16, None, COMPILE_OPTIONS, 1, True),
    "fast path bf16, 2 rows": (torch.bfloat16, None, COMPILE_OPTIONS, 2, True),
    "compiled bf16, 2 rows": (torch.bfloat16, None, COMPILE_OPTIONS, 2, False),
    "fast path bf16, 4 rows (reduction forced)": (torch.bfloat16, None, COMPILE_OPTIONS, 4, "forced"),
    "compiled bf16, 4 rows": (torch.bfloat16, None, COMPILE_OPTIONS, 4, False),
    "fast path int8 (bf16 act), 1 row": (torch.bfloat16, "int8", COMPILE_OPTIONS, 1, True),
    "fast path int4-g128 (bf16 act), 1 row": (torch.bfloat16, "int4", COMPILE_OPTIONS, 1, True),
}


@torch.inference_mode()
def measure(repeats: int, rounds: int) -> list[dict]:
    rows = []
    for name, (dtype, quant, options, n_rows, fast_path) in VARIANTS.items():
        chain = Chain(_linears(dtype, quant, fast_path=bool(fast_path)))
        fn = chain if options is None else torch.compile(chain, dynamic=False, options=options)
        xs = {i: torch.randn(n_rows, i, dtype=dtype) for i in {s[1] for s in SHAPES}}
        limit = fast.GEMV_MAX_ROWS
        if fast_path == "forced":
            fast.GEMV_MAX_ROWS = n_rows  # read when the graph is traced
        try:
            for _ in range(5):
                fn(xs)  # compiles, warms the caches
        finally:
            fast.GEMV_MAX_ROWS = limit
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn(xs)
            times.append((time.perf_counter() - t0) / repeats)
        s = statistics.median(times)
        nbytes = _bytes(chain)
        rows.append(
            {"variant": name, "rows": n_rows, "us": s * 1e6, "weight_bytes": nbytes, "gb_per_s": nbytes / s / 1e9}
        )
        print(f"{name:36s} {s * 1e6:9.1f} us  {nbytes / s / 1e9:6.1f} GB/s", flush=True)
        torch._dynamo.reset()
    return rows


def write(rows: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear-m1.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# The code predictor's linear stack at M=1, by implementation (issue 28 item 4)",
        "",
        f"`python -m q3tts.bench.linear_m1 --repeats {meta['repeats']} --rounds {meta['rounds']}`; {meta['cpu']}, "
        f"{meta['threads']} threads, torch {torch.__version__}. {LAYERS} layers of {SHAPES} (out, in), one row (token) "
        "unless the row count says otherwise; median over rounds of the mean pass time.",
        "",
        "| variant | rows | µs per pass | weight MB | GB/s |",
        "|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {r['rows']} | {r['us']:.1f} | {r['weight_bytes'] / 1e6:.1f} | {r['gb_per_s']:.1f} |"
            for r in rows
        ),
    ]
    (out / "linear-m1.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/linear-m1")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1 or args.threads < 1:
        raise SystemExit("--repeats, --rounds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    meta = {"cpu": cpu_model(), "threads": args.threads, "repeats": args.repeats, "rounds": args.rounds}
    write(measure(args.repeats, args.rounds), meta, Path(args.out))
    print(f"wrote {args.out}/linear-m1.md")


if __name__ == "__main__":
    main()
