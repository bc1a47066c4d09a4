"""Generation benchmark: upstream and standalone side by side, in one process, on identical inputs.

Models: the tiny fixture config and random-weight models built from the released 0.6B and 1.7B
configs (custom_voice layout). Weights come from the fixture initialiser, are created once on the
upstream side and handed to the standalone side through the layout map (renamed tensors share
storage), so both sides run the same numbers; the benchmark also checks that the codes agree.

Per model and side: frames/s, ms per frame, the peak RSS growth while generating, the
standalone/upstream ratio, and the fraction of the memory-bandwidth floor reached (bytes of
weights one frame must read / measured GEMV read bandwidth).

    python -m q3tts.verify.bench_generation --sizes tiny,0.6B,1.7B --frames 8 --out reports/
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch

from q3tts.standalone import Qwen3TTS, Qwen3TTSConfig
from q3tts.standalone.layout import convert_tensors, plan

from .fixtures import randomize_, tiny_config
from .released import released_config


# --------------------------------------------------------------------------------------------
class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the maximum seen while active."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start_rss = self.current()
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


def measure_read_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """Bytes/s a fp32 matrix-vector product streams through memory (the decode loop's kernel)."""
    n = 4096
    rows = mb * 2**20 // (4 * n)
    w = torch.randn(rows, n)
    x = torch.randn(n)
    torch.mv(w, x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mv(w, x)
        best = min(best, time.perf_counter() - t0)
    return w.numel() * 4 / best


def bytes_read_per_frame(cfg: Qwen3TTSConfig, bytes_per_param: int) -> int:
    """Weights one frame must stream: the talker's layers and codec head once, and per residual
    group the code predictor's layers, its input projection and one head (embedding rows are
    negligible lookups)."""

    def layer_params(tc):
        q = tc.num_attention_heads * tc.head_dim
        kv = tc.num_key_value_heads * tc.head_dim
        return tc.num_hidden_layers * (
            tc.hidden_size * (q + 2 * kv) + q * tc.hidden_size + 3 * tc.hidden_size * tc.intermediate_size
        )

    t = cfg.talker
    cp = t.code_predictor
    talker = layer_params(t.transformer) + t.vocab_size * t.transformer.hidden_size
    proj = (
        t.transformer.hidden_size * cp.transformer.hidden_size
        if cp.transformer.hidden_size != t.transformer.hidden_size
        else 0
    )
    per_group = layer_params(cp.transformer) + proj + cp.vocab_size * cp.transformer.hidden_size
    return (talker + (t.num_code_groups - 1) * per_group) * bytes_per_param


# --------------------------------------------------------------------------------------------
def build_pair(config: dict, seed: int = 0):
    """Upstream model with fixture-initialised weights, and the standalone model on the same
    tensors (through the layout map)."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig as UpConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    up = randomize_(Qwen3TTSForConditionalGeneration(UpConfig(**copy.deepcopy(config))).eval(), seed)
    cfg = Qwen3TTSConfig.from_upstream(config)
    with torch.device("meta"):
        st = Qwen3TTS(cfg)
    state = up.state_dict()
    st.load_state_dict(dict(convert_tensors(plan(cfg), state.__getitem__)), strict=True, assign=True)
    return up, st.eval(), cfg


def prompt_kwargs(cfg: Qwen3TTSConfig, batch: int, text_len: int = 24, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = []
    for i in range(batch):
        body = torch.randint(0, min(cfg.talker.text_vocab_size, 150000), (1, text_len + 3 * i), generator=g)
        head = torch.tensor([[cfg.im_start_token_id, 1, 2]])
        tail = torch.tensor([[cfg.im_end_token_id, 3, cfg.im_start_token_id, 1, 2]])
        ids.append(torch.cat([head, body, tail], dim=1))
    speakers = list(cfg.talker.spk_id)[:1] * batch or [None] * batch
    # EOS is moved to a suppressed id, so every run produces exactly max_new_tokens - 1 frames.
    return dict(
        input_ids=ids,
        languages=["english"] * batch,
        speakers=speakers,
        non_streaming_mode=True,
        eos_token_id=cfg.talker.vocab_size - 1,
    )


def time_generate(fn, kwargs: dict, frames: int, seed: int):
    torch.manual_seed(seed)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        codes, _ = fn(**kwargs, max_new_tokens=frames + 1)
        seconds = time.perf_counter() - t0
    # Every row runs max_new_tokens - 1 frames (EOS is out of reach); the returned codes may be
    # shorter because upstream cuts them at the config's EOS id, which stays sampleable.
    n = frames * len(codes)
    return codes, seconds, n, rss


def bench_model(name: str, config: dict, frames: int, batch: int, bandwidth: float, warmup_frames: int = 2) -> dict:
    up, st, cfg = build_pair(config)
    weight_bytes = sum(p.numel() * p.element_size() for p in st.parameters())
    floor_s = bytes_read_per_frame(cfg, 4) / bandwidth
    out = {
        "model": name,
        "weights_bytes": weight_bytes,
        "bytes_read_per_frame": bytes_read_per_frame(cfg, 4),
        "bandwidth_floor_ms_per_frame": floor_s * 1e3,
        "runs": [],
    }
    for b in sorted({1, batch}):
        kwargs = prompt_kwargs(cfg, b)
        sides = {}
        for side, fn in (("upstream", up.generate), ("standalone", st.generate)):
            with torch.inference_mode():
                fn(**kwargs, max_new_tokens=warmup_frames + 1)  # warm-up: allocator, kernels
                codes, seconds, n, rss = time_generate(fn, kwargs, frames, seed=1)
            sides[side] = dict(codes=codes, seconds=seconds, frames=n, rss_growth=rss.growth, rss_peak=rss.peak)
        identical = all(torch.equal(a, c) for a, c in zip(sides["upstream"]["codes"], sides["standalone"]["codes"]))
        run = {"batch": b, "frames_per_item": frames, "codes_identical": identical}
        for side, r in sides.items():
            fps = r["frames"] / r["seconds"]
            run[side] = {
                "seconds": r["seconds"],
                "frames": r["frames"],
                "frames_per_s": fps,
                "ms_per_frame": 1e3 * r["seconds"] / (r["frames"] / b),  # per step of the batch
                "peak_rss_growth_mb": r["rss_growth"] / 2**20,
                "peak_rss_mb": r["rss_peak"] / 2**20,  # the whole process: both models are resident
            }
        run["speedup"] = run["standalone"]["frames_per_s"] / run["upstream"]["frames_per_s"]
        if b == 1:
            run["standalone"]["floor_fraction"] = floor_s * 1e3 / run["standalone"]["ms_per_frame"]
            run["upstream"]["floor_fraction"] = floor_s * 1e3 / run["upstream"]["ms_per_frame"]
        out["runs"].append(run)
        print(
            f"[{name}] batch {b}: upstream {run['upstream']['frames_per_s']:.2f} frames/s, "
            f"standalone {run['standalone']['frames_per_s']:.2f} frames/s ({run['speedup']:.2f}x), "
            f"codes identical: {identical}",
            flush=True,
        )
    single = next(r for r in out["runs"] if r["batch"] == 1)
    batched = [r for r in out["runs"] if r["batch"] > 1]
    if batched:
        out["batch_over_single"] = batched[0]["standalone"]["frames_per_s"] / single["standalone"]["frames_per_s"]
    del up, st
    gc.collect()
    return out


def environment() -> dict:
    from .report import versions

    return {
        **versions(),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def write_reports(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    env = results["environment"]
    lines = [
        "# Generation benchmark",
        "",
        f"CPU fp32, {env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}, "
        f"qwen-tts {env['qwen-tts']}. Random weights (fixture initialiser) at the released sizes; both sides in "
        f"one process on identical inputs and seeds (sampling on, EOS moved out of reach so every run has the same "
        f"length). Measured read bandwidth (fp32 GEMV): {results['bandwidth_gb_s']:.1f} GB/s.",
        "",
        "| model | batch | upstream frames/s | standalone frames/s | speedup | standalone ms/frame | floor ms/frame | floor reached | peak RSS (MB) | RSS growth up / st (MB) | codes identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        for r in m["runs"]:
            # A tiny model is overhead-bound: its bandwidth floor (microseconds) says nothing.
            meaningful = r["batch"] == 1 and m["bandwidth_floor_ms_per_frame"] >= 1.0
            floor = f"{r['standalone'].get('floor_fraction', float('nan')):.0%}" if meaningful else "-"
            lines.append(
                f"| {m['model']} | {r['batch']} | {r['upstream']['frames_per_s']:.2f} | {r['standalone']['frames_per_s']:.2f} "
                f"| {r['speedup']:.2f}x | {r['standalone']['ms_per_frame']:.1f} | {m['bandwidth_floor_ms_per_frame']:.2f} "
                f"| {floor} | {max(r['upstream'].get('peak_rss_mb', 0), r['standalone'].get('peak_rss_mb', 0)):.0f} "
                f"| {r['upstream']['peak_rss_growth_mb']:.0f} / {r['standalone']['peak_rss_growth_mb']:.0f} "
                f"| {'yes' if r['codes_identical'] else 'NO'} |"
            )
    lines += [
        "",
        "ms/frame is the wall time of one decode step of the whole batch (prefill included, amortised); "
        "frames/s counts frames of all batch items. 'floor reached' = bandwidth floor / standalone ms per frame. "
        "Peak RSS is the process's (both models resident, sharing the renamed tensors); RSS growth is each "
        "side's working memory while generating (caches, activations) above what was resident before.",
        "",
    ]
    for m in results["models"]:
        if "batch_over_single" in m:
            lines.append(f"- {m['model']}: batch aggregate / single-stream frames/s = {m['batch_over_single']:.2f}x")
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,0.6B,1.7B")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tiny-frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bandwidth = measure_read_bandwidth()
    results = {"environment": environment(), "bandwidth_gb_s": bandwidth / 1e9, "models": []}
    for size in args.sizes.split(","):
        config = tiny_config("custom_voice") if size == "tiny" else released_config(size, "custom_voice")
        frames = args.tiny_frames if size == "tiny" else args.frames
        batch = args.batch if size in ("tiny", "0.6B") else 1
        results["models"].append(bench_model(size, config, frames, batch, bandwidth))
        write_reports(results, Path(args.out))
    print(f"wrote {args.out}/benchmark.md and benchmark.json")


if __name__ == "__main__":
    main()
