"""Conversion benchmark at real size: a random-weight checkpoint in the released 1.7B-Base format
(bf16 talker, single model.safetensors, plus a speech_tokenizer/ of the released size), converted
by `convert-ckpt` in a child process. Reports seconds, MB/s against a plain copy of the same
bytes, and the child's peak RSS against the bound 3 x largest output tensor + 300 MB.

    python -m q3tts.bench.convert --size 1.7B --out reports/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from q3tts.standalone import Qwen3TTSConfig
from q3tts.standalone.layout import plan
from q3tts.standalone.safetensors_writer import SafetensorsWriter
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.fixtures.writer import GENERATION_CONFIG, write_text_tokenizer

SPEECH_TOKENIZER_BYTES = 682_293_092  # the released speech_tokenizer/model.safetensors


def write_random_release(dst: Path, size: str, model_type: str = "base") -> dict:
    dst.mkdir(parents=True)
    cfg_raw = released_config(size, model_type)
    cfg = Qwen3TTSConfig.from_upstream(cfg_raw)
    specs = [(n, torch.bfloat16, s) for e in plan(cfg) for n, s in zip(e.sources, e.source_shapes)]
    w = SafetensorsWriter(dst / "model.safetensors", specs, metadata={"format": "pt"})
    g = torch.Generator().manual_seed(0)
    for name, dtype, shape in specs:
        w.write(name, (torch.randn(shape, generator=g) * 0.02).to(dtype))
    w.close()
    (dst / "config.json").write_text(json.dumps(cfg_raw, indent=2))
    (dst / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    write_text_tokenizer(dst)
    (dst / "speech_tokenizer").mkdir()
    with open(dst / "speech_tokenizer" / "model.safetensors", "wb") as f:
        block = os.urandom(1 << 24)
        left = SPEECH_TOKENIZER_BYTES
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    (dst / "speech_tokenizer" / "config.json").write_text("{}")
    largest = max(math.prod(s) * 2 for _, _, s in specs)
    return {
        "tensors": len(specs),
        "weight_bytes": sum(math.prod(s) * 2 for _, _, s in specs),
        "largest_tensor_bytes": largest,
    }


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_child(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and output of a child process.

    The peak is the child's own VmHWM, polled from /proc: getrusage(RUSAGE_CHILDREN) would also
    count the parent's pages that a forked child shares for a moment before exec.
    """
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hwm_kb = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm_kb = max(hwm_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    out = p.stdout.read()
    if p.returncode:
        raise RuntimeError(f"{args} failed: {out}")
    return seconds, hwm_kb * 1024, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1.7B")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        src = work / "upstream"
        info = write_random_release(src, args.size)
        total_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        cold = drop_page_cache()
        copy_t0 = time.perf_counter()
        shutil.copytree(src, work / "plain-copy")
        os.sync()
        copy_s = time.perf_counter() - copy_t0
        shutil.rmtree(work / "plain-copy")
        cold = drop_page_cache() and cold
        conv_s, peak, out = run_child(
            [sys.executable, "-m", "q3tts.convert.cli", str(src), str(work / "standalone"), "--no-progress"]
        )
        bound = 3 * info["largest_tensor_bytes"] + 300 * 2**20
        result = {
            "size": args.size,
            "model_type": "base",
            **info,
            "directory_bytes": total_bytes,
            "page_cache_dropped": cold,
            "convert_seconds": conv_s,
            "convert_mb_s": total_bytes / 1e6 / conv_s,
            "plain_copy_seconds": copy_s,
            "plain_copy_mb_s": total_bytes / 1e6 / copy_s,
            "convert_vs_copy": copy_s / conv_s,
            "peak_rss_bytes": peak,
            "rss_bound_bytes": bound,
            "within_bound": peak <= bound,
            "converter_output": out.strip(),
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "convert-benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Conversion benchmark",
        "",
        f"Random-weight checkpoint in the released {args.size}-Base layout: {result['tensors']} bf16 tensors "
        f"({result['weight_bytes'] / 1e9:.2f} GB) in one model.safetensors, plus tokenizer files and a "
        f"{SPEECH_TOKENIZER_BYTES / 1e6:.0f} MB speech_tokenizer/ ({total_bytes / 1e9:.2f} GB in all). "
        f"convert-ckpt runs in a child process; the plain copy is `shutil.copytree` of the same directory. "
        f"Page cache dropped before each: {'yes' if cold else 'no (not permitted here)'}.",
        "",
        "| | seconds | MB/s | peak RSS |",
        "|---|---|---|---|",
        f"| convert-ckpt | {conv_s:.1f} | {result['convert_mb_s']:.0f} | {peak / 2**20:.0f} MB |",
        f"| plain copy | {copy_s:.1f} | {result['plain_copy_mb_s']:.0f} | - |",
        "",
        f"- conversion runs at {result['convert_vs_copy']:.0%} of plain-copy speed (it also hashes every source and output file for the manifest).",
        f"- peak RSS {peak / 2**20:.0f} MB vs the bound 3 x largest tensor ({info['largest_tensor_bytes'] / 2**20:.0f} MB) + 300 MB "
        f"= {bound / 2**20:.0f} MB: {'within' if result['within_bound'] else 'OVER'} the bound.",
    ]
    (outdir / "convert-benchmark.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
