"""How this CPU's kernels treat the exact path: writes reports/cpu-exactness-<family>.{md,json}.

    python -m q3tts.verify.cases.cpu_exactness [--out reports]

Measures (1) whether MKL's fp32 matrix-vector product on this CPU rounds by the weight's address
(the same linear at every address mod 64), (2) how far upstream's own x-vector moves when its
mmap-placed fixture weights are realigned, and (3) every forward case of the three tiny fixtures,
standalone against upstream, both with aligned weights (what verify-parity compares).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from q3tts.verify.machine import SIMULATION_ENV, cpu_family, cpu_model_name


def _at_offset(t: torch.Tensor, offset: int) -> torch.Tensor:
    buf = torch.empty(t.numel() * t.element_size() + 128, dtype=torch.uint8)
    start = (-buf.data_ptr()) % 64 + offset
    out = buf[start : start + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
    out.copy_(t)
    return out


def gemv_address_sensitivity() -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for m, k, n in [(1, 32, 8), (1, 1024, 1024), (1, 2048, 16), (4, 1024, 1024)]:
        w, x = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g)
        ys = [F.linear(x, _at_offset(w, off)) for off in range(0, 64, 4)]
        out[f"fp32 linear M={m} K={k} N={n}"] = max(float((y - ys[0]).abs().max()) for y in ys)
    return out


def fixture_measurements() -> dict:
    from qwen_tts import Qwen3TTSModel

    from q3tts.convert import convert_checkpoint
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.forward import align_weights, load_upstream_wrapper, speech_like_waveform
    from q3tts.verify.cases.suite import forward_results
    from q3tts.verify.fixtures.writer import MODEL_TYPES, SUITE_SEEDS, write_upstream_checkpoint

    out: dict = {"forward": {}, "upstream_realigned_xvector_max_abs": None}
    with tempfile.TemporaryDirectory() as tmp:
        for mt in MODEL_TYPES:
            up = write_upstream_checkpoint(Path(tmp) / f"up-{mt}", mt, seed=SUITE_SEEDS[mt])
            convert_checkpoint(up, Path(tmp) / f"st-{mt}")
            if mt == "base":
                plain = Qwen3TTSModel.from_pretrained(str(up), dtype=torch.float32).model
                wav = speech_like_waveform(0)
                before = plain.extract_speaker_embedding(wav, 24000)
                align_weights(plain)
                after = plain.extract_speaker_embedding(wav, 24000)
                out["upstream_realigned_xvector_max_abs"] = float((before - after).abs().max())
            for dtype in (torch.float32, torch.bfloat16):
                wrapper = load_upstream_wrapper(up, dtype)
                st = Qwen3TTS.from_pretrained(Path(tmp) / f"st-{mt}", dtype=dtype)
                rows = forward_results(wrapper.model, st, dtype, 0)
                out["forward"][f"{mt} {str(dtype).split('.')[-1]}"] = {
                    "cases": len(rows),
                    "max_abs": max(r.metrics["max_abs"] for r in rows),
                    "nonzero": [r.case for r in rows if r.metrics["max_abs"] != 0],
                }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m q3tts.verify.cases.cpu_exactness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with torch.inference_mode():
        result = dict(
            cpu=cpu_model_name(),
            family=cpu_family(),
            simulated={k: os.environ[k] for k in SIMULATION_ENV if k in os.environ},
            torch=torch.__version__,
            gemv_max_abs_over_addresses=gemv_address_sensitivity(),
            **fixture_measurements(),
        )
    name = f"cpu-exactness-{result['family']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Exactness on {result['cpu']} ({result['family']})",
        "",
        f"`python -m q3tts.verify.cases.cpu_exactness`, torch {result['torch']}, one thread"
        + (f", simulated: {result['simulated']}" if result["simulated"] else "")
        + ".",
        "",
        "| fp32 linear, same values at every weight address mod 64 | max abs between addresses |",
        "|---|---|",
        *(f"| {k} | {v:.3g} |" for k, v in result["gemv_max_abs_over_addresses"].items()),
        "",
        f"Upstream's own x-vector, fixture weights as transformers maps them vs realigned: max abs "
        f"{result['upstream_realigned_xvector_max_abs']:.3g}.",
        "",
        "| fixture, dtype | forward cases | max abs, standalone vs upstream (both aligned) |",
        "|---|---|---|",
        *(f"| {k} | {v['cases']} | {v['max_abs']:.3g} |" for k, v in result["forward"].items()),
        "",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
