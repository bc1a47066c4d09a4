"""Generation benchmark: upstream eager, standalone exact and standalone fast (fp32, bf16), in one
process, alternating, on identical inputs.

Models: the tiny fixture config and random-weight models built from the released 0.6B and 1.7B
configs (custom_voice layout). Weights come from the fixture initialiser, are created once on the
upstream side and handed to the standalone side through the layout map (renamed tensors share
storage), so upstream, exact and fast fp32 run the same numbers; fast bf16 runs a bf16 copy. The
exact path's codes must equal upstream's; the fast path's agreement is reported.

The floor is physical: the machine's streaming read bandwidth is measured with a small C program
(compiled with gcc at run time, OpenMP over all threads, a sum over 1 GiB; numpy's single-thread
sum if gcc is missing), not with a torch kernel. floor ms/frame = weight bytes one frame must read
(per dtype) / that bandwidth.

Engines run round-robin for ``--rounds`` rounds so that load drift hits every engine alike; each
number is reported as the median over rounds and the minimum. The load average is recorded before
and after every model.

    python -m q3tts.bench.generation --sizes tiny,0.6B --frames 16 --rounds 3 --out reports/

Weight-only quantized fast modes (standalone/quant.py) are --fast-dtypes entries DTYPE+QUANT, held
to their own floor (fast_mode_bytes), e.g. --fast-dtypes fp32,bf16,fp32+int8,fp32+int4.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from q3tts.standalone import Qwen3TTS, Qwen3TTSConfig
from q3tts.standalone.fast import compile_cache_dir
from q3tts.standalone.layout import convert_tensors, plan
from q3tts.standalone.quant import parse_quant, quantize_model
from q3tts.verify.fixtures.released import released_config
from q3tts.verify.fixtures.writer import randomize_, tiny_config
from q3tts.verify.machine import cpu_model


# --------------------------------------------------------------------------------------------
class PeakRSS:
    """This process's peak RSS while active. On Linux the kernel's own high-water mark (VmHWM),
    reset on entry through /proc/self/clear_refs: exact, and free for the decode loop. Elsewhere a
    thread samples the RSS every ``PeakRSS.interval`` seconds (--rss-interval); that thread
    competes with the decode loop for the GIL and the two cores (frame profiles without it timed
    every engine 7-11% faster), so it is only the fallback."""

    interval = 0.002
    process_peak = 0  # the kernel's mark is reset per context, so the process's own peak is kept here

    def __init__(self):
        self.peak = 0
        self.method = "kernel high-water mark (VmHWM)"
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def _high_water_mark() -> int:
        with open("/proc/self/status") as f:
            kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
        return int(kib) * 1024

    @classmethod
    def process_peak_so_far(cls) -> int:
        """The process's peak RSS over its whole life (what ru_maxrss would say without the resets)."""
        cls.process_peak = max(cls.process_peak, cls._high_water_mark())
        return cls.process_peak

    def __enter__(self):
        self.process_peak_so_far()  # before the reset forgets it
        self.start_rss = self.current()
        self.peak = self.start_rss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS to the current RSS (proc(5))
        except OSError:
            self.method = f"sampled every {self.interval} s"
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)  # (not sleep: __exit__ must not wait out an interval)

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak = max(self.peak, self._high_water_mark())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, self.current())
        PeakRSS.process_peak = max(PeakRSS.process_peak, self.peak)

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


def _can_reset_peak_rss() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK)


# A 64-bit OR over the buffer: one single-cycle vector op per 64 bytes, so the loop waits on memory
# only. (The earlier float sum into a double accumulator converted every element and capped one
# core at about 9 GB/s: it measured 17.9 GB/s on two threads, the conversion's rate, not memory's.)
# The buffer sits on transparent huge pages (madvise): on 4 KiB pages the same loop is TLB-bound,
# 24.3-25.1 GB/s against 34.6 GB/s on huge pages (2 threads, this session's Xeon). The floor is the
# machine's limit, not the page size torch's allocator happens to use.
_READ_BENCH_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <omp.h>
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) / sizeof(uint64_t);
    int repeats = atoi(argv[2]);
    uint64_t *a = aligned_alloc(2 << 20, n * sizeof(uint64_t));  /* 2 MiB: whole huge pages */
    madvise(a, n * sizeof(uint64_t), MADV_HUGEPAGE);  /* before the first touch; a no-op without THP */
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (uint64_t)1 << (i & 63);  /* first touch by the reading thread */
    double best = 1e30;
    uint64_t sink = 0;
    for (int r = 0; r < repeats; r++) {
        double t0 = omp_get_wtime();
        uint64_t s = 0;
        #pragma omp parallel for reduction(|:s) schedule(static)
        for (size_t i = 0; i < n; i++) s |= a[i];
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
        sink ^= s;
    }
    printf("%.6e %d %llu\n", (double)(n * sizeof(uint64_t)) / best, omp_get_max_threads(), (unsigned long long)sink);
    return 0;
}
"""


def measure_read_bandwidth(nbytes: int = 2**30, repeats: int = 7, threads: int | None = None) -> dict:
    """The machine's streaming read bandwidth (bytes/s): best of ``repeats`` reads of ``nbytes``
    with all threads, in C (gcc -O3 -march=native -fopenmp). Falls back to numpy (one thread)."""
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "read.c", Path(tmp) / "read"
        src.write_text(_READ_BENCH_C)
        try:
            subprocess.run(
                ["gcc", "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)],
                check=True,
                capture_output=True,
                timeout=120,
            )
            out = subprocess.run(
                [str(exe), str(nbytes), str(repeats)],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            ).stdout.split()
            return {
                "bytes_per_s": float(out[0]),
                "threads": int(out[1]),
                "method": "C streaming 64-bit OR over transparent huge pages (gcc, OpenMP)",
                "buffer_bytes": nbytes,
            }
        except (OSError, subprocess.SubprocessError) as e:
            import numpy as np

            a = np.ones(nbytes // 4, dtype=np.float32)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                a.sum()
                best = min(best, time.perf_counter() - t0)
            return {
                "bytes_per_s": a.nbytes / best,
                "threads": 1,
                "method": f"numpy sum, one thread (C failed: {e})",
                "buffer_bytes": nbytes,
            }


def bytes_read_per_frame(cfg: Qwen3TTSConfig, bytes_per_param: float, linear_bytes: float | None = None) -> int:
    """Weights one frame must stream: the talker's layers and codec head once, and per residual
    group the code predictor's layers, its input projection and one head (embedding rows are
    negligible lookups). ``linear_bytes``: bytes per parameter of the transformer linears when they
    differ (weight-only quantized, standalone/quant.py); the heads and projection keep
    ``bytes_per_param``."""
    linear_bytes = bytes_per_param if linear_bytes is None else linear_bytes

    def layer_params(tc):
        q = tc.num_attention_heads * tc.head_dim
        kv = tc.num_key_value_heads * tc.head_dim
        return tc.num_hidden_layers * (
            tc.hidden_size * (q + 2 * kv) + q * tc.hidden_size + 3 * tc.hidden_size * tc.intermediate_size
        )

    t = cfg.talker
    cp = t.code_predictor
    talker = layer_params(t.transformer) * linear_bytes + t.vocab_size * t.transformer.hidden_size * bytes_per_param
    proj = (
        t.transformer.hidden_size * cp.transformer.hidden_size
        if cp.transformer.hidden_size != t.transformer.hidden_size
        else 0
    )
    per_group = (
        layer_params(cp.transformer) * linear_bytes
        + (proj + cp.vocab_size * cp.transformer.hidden_size) * bytes_per_param
    )
    return int(talker + (t.num_code_groups - 1) * per_group)


FAST_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def fast_mode_bytes(cfg: Qwen3TTSConfig, mode: str) -> int:
    """bytes_read_per_frame of one --fast-dtypes entry: "fp32", "bf16" or "DTYPE+QUANT" (int8-gN: a
    byte per weight and an fp32 scale per N weights; int4-gN: half a byte and a scale and a zero per
    N weights, in DTYPE)."""
    dname, _, quant = mode.partition("+")
    act = FAST_DTYPES[dname].itemsize
    qmode = parse_quant(quant or None)
    if qmode is None:
        return bytes_read_per_frame(cfg, act)
    linear = 1.0 + 4 / qmode.group_size if qmode.bits == 8 else 0.5 + 2 * act / qmode.group_size
    return bytes_read_per_frame(cfg, act, linear)


def fast_model(st: Qwen3TTS, cfg: Qwen3TTSConfig, mode: str) -> Qwen3TTS:
    """The standalone model of one --fast-dtypes entry (see fast_mode_bytes), over ``st``'s tensors
    (standalone_view), weight-only quantized when the entry names a quant (standalone/quant.py);
    not compiled yet."""
    dname, _, quant = mode.partition("+")
    if dname not in FAST_DTYPES:
        raise ValueError(f"--fast-dtypes entry {mode!r}: the dtype is one of {', '.join(FAST_DTYPES)}")
    model = standalone_view(st, cfg, FAST_DTYPES[dname])
    qmode = parse_quant(quant or None)
    if qmode is not None:
        quantize_model(model, qmode)
    return model


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
    return codes, seconds, rss


def standalone_view(st: Qwen3TTS, cfg: Qwen3TTSConfig, dtype: torch.dtype) -> Qwen3TTS:
    """Another Qwen3TTS over ``st``'s tensors (shared when the dtype is the same, else a cast copy),
    so the exact engine and a fast engine can live side by side."""
    with torch.device("meta"):
        view = Qwen3TTS(cfg)
    view.load_state_dict({k: v.to(dtype) for k, v in st.state_dict().items()}, strict=True, assign=True)
    return view.eval()


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _codes_agreement(ref, got) -> float:
    same = total = 0
    for a, b in zip(ref, got):
        n = min(a.shape[0], b.shape[0])
        same += int((a[:n] == b[:n]).all(dim=1).sum())
        total += max(a.shape[0], b.shape[0])
    return same / total if total else 1.0


_PERF = re.compile(r"\[Perf\] (\w+) ([0-9.]+) ms")
_FRAMES = re.compile(r"Generation done : (\d+) frames")


def qwentts_generate(gguf_dir: Path, frames: int, threads: int, speaker: str | None, seed: int = 1) -> dict:
    """One qwentts.cpp synthesis through its binding (loaded, run, closed: one GGUF engine in memory at
    a time). Its own [Perf] log gives the stage times; ms/frame here is (total - codec decode) /
    frames, i.e. prefill included and amortised as for the torch engines, and ``ar_ms_per_frame``
    the decode loop alone. Sampling on (its defaults), seeded."""
    import qwentts_cpp_cpu

    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    logs: list[str] = []
    t0 = time.perf_counter()
    tts = qwentts_cpp_cpu.QwenTTS(talker, codec, cpu_threads=threads)
    load_s = time.perf_counter() - t0
    try:
        tts.set_log_callback(lambda _level, msg: logs.append(msg))
        with PeakRSS() as rss:
            tts.synthesize(
                text="Hello world, this is a test of the converter and the benchmark.",
                lang="english",
                speaker=speaker,
                seed=seed,
                max_new_tokens=frames + 1,
            )
    finally:
        tts.set_log_callback(None)
        tts.close()
    perf = {m.group(1): float(m.group(2)) for line in logs for m in [_PERF.search(line)] if m}
    done = [int(m.group(1)) for line in logs for m in [_FRAMES.search(line)] if m]
    n = done[-1] if done else frames
    return {
        "frames": n,
        "ms_per_frame": (perf["Total"] - perf.get("CodecDecode", 0.0)) / max(n, 1),
        "ar_ms_per_frame": (perf["TalkerDecode"] + perf["CodePredictor"]) / max(n, 1),
        "ttff_ms": perf.get("TTFA", float("nan")),
        "load_s": load_s,
        "rss_growth": rss.growth,
        "perf": perf,
    }


def _qwentts_round(run: dict, gguf: dict[str, Path], frames: int, speaker) -> None:
    for quant, path in gguf.items():
        info = run["engines"].setdefault(
            f"qwentts.cpp {quant}",
            {"ms_per_frame_rounds": [], "ttff_ms_rounds": [], "ar_ms_per_frame_rounds": [], "rss_growth_mb": 0.0},
        )
        try:
            r = qwentts_generate(path, frames, torch.get_num_threads(), speaker)
        except Exception as e:  # a peer failing must not cost the torch engines' numbers
            info["error"] = f"{type(e).__name__}: {e}"
            print(f"qwentts.cpp {quant} failed: {info['error']}", flush=True)
            continue
        info["ms_per_frame_rounds"].append(r["ms_per_frame"])
        info["ar_ms_per_frame_rounds"].append(r["ar_ms_per_frame"])
        info["ttff_ms_rounds"].append(r["ttff_ms"])
        info["rss_growth_mb"] = max(info["rss_growth_mb"], r["rss_growth"] / 2**20)
        info.update(warmup_seconds=r["load_s"], frames=r["frames"], last_perf=r["perf"])


def bench_model(
    name: str,
    config: dict,
    frames: int,
    batches: list[int],
    rounds: int,
    fast_dtypes: tuple[str, ...],
    fast_options: dict | None,
    gguf: dict[str, Path] | None = None,
    upstream: bool = True,
    exact: bool = True,
) -> dict:
    load_before = load_average()
    up, st, cfg = build_pair(config)
    if not upstream:  # frees upstream's own tensors; those the standalone side shares stay
        up = None
        gc.collect()
    engines = ({"upstream": up.generate} if up is not None else {}) | ({"exact": st.generate} if exact else {})
    fast_models = {}
    for dname in fast_dtypes:
        fast_models[dname] = fast_model(st, cfg, dname).compile_fast(options=fast_options)
        engines[f"fast {dname}"] = fast_models[dname].generate
    if not exact:  # frees the fp32 tensors no engine shares (a fast fp32 engine keeps its own references)
        st = None
        gc.collect()
    out = {
        "model": name,
        "load_before": load_before,
        "fast_options": fast_options or "default (standalone/fast.py COMPILE_OPTIONS)",
        "bytes_read_per_frame": {
            **{d: fast_mode_bytes(cfg, d) for d in ("fp32", "bf16", *fast_dtypes)},
            "q8_0": bytes_read_per_frame(cfg, Q8_0_BYTES),
            "q4_k_m": bytes_read_per_frame(cfg, Q4_K_BYTES),
        },
        "runs": [],
    }
    for b in batches:
        kwargs = prompt_kwargs(cfg, b)
        run = {"batch": b, "frames_per_item": frames, "engines": {}}
        _warm_up(name, run, engines, fast_models, kwargs)
        codes = _timed_rounds(name, run, engines, kwargs, frames, rounds, gguf)
        _summarise_run(run, codes)
        out["runs"].append(run)
    out["load_after"] = load_average()
    single = next((r for r in out["runs"] if r["batch"] == 1), None)
    for r in out["runs"]:
        if single is not None and r["batch"] > 1:
            r["aggregate_over_single"] = {
                s: r["engines"][s]["frames_per_s"] / single["engines"][s]["frames_per_s"] for s in r["engines"]
            }
    del up, st, fast_models, engines
    gc.collect()
    return out


def _warm_up(name: str, run: dict, engines: dict, fast_models: dict, kwargs: dict) -> None:
    """One short generation per engine; for the fast engines this is the compile."""
    for side, fn in engines.items():
        # The engine's compile_seconds accumulates over batch sizes: keep this batch's share.
        compiled_before = fast_models[side.split()[1]]._fast.compile_seconds if side.startswith("fast") else 0.0
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(**kwargs, max_new_tokens=3)
        info = {
            "warmup_seconds": time.perf_counter() - t0,
            "ms_per_frame_rounds": [],
            "ttff_ms_rounds": [],
            "rss_growth_mb": 0.0,
        }
        if side.startswith("fast"):
            info["compile_seconds"] = fast_models[side.split()[1]]._fast.compile_seconds - compiled_before
        run["engines"][side] = info
        print(
            f"[{name}] batch {run['batch']}: {side} warm-up {info['warmup_seconds']:.1f} s (load {load_average()})",
            flush=True,
        )


def _timed_rounds(name: str, run: dict, engines: dict, kwargs: dict, frames: int, rounds: int, gguf) -> dict:
    """``rounds`` timed generations per engine, interleaved; returns each engine's last codes."""
    codes = {}
    for r in range(rounds):
        for side, fn in engines.items():
            info = run["engines"][side]
            with torch.inference_mode():
                t0 = time.perf_counter()
                torch.manual_seed(1)
                fn(**kwargs, max_new_tokens=2)  # prefill + the first frame
                info["ttff_ms_rounds"].append(1e3 * (time.perf_counter() - t0))
                codes[side], seconds, rss = time_generate(fn, kwargs, frames, seed=1)
            info["ms_per_frame_rounds"].append(1e3 * seconds / frames)  # one decode step of the whole batch
            info["rss_growth_mb"] = max(info["rss_growth_mb"], rss.growth / 2**20)
        if gguf and run["batch"] == 1:  # its binding runs one stream per call
            _qwentts_round(run, gguf, frames, kwargs["speakers"][0])
        print(
            f"[{name}] batch {run['batch']} round {r}: "
            + ", ".join(f"{s} {i['ms_per_frame_rounds'][-1]:.1f}" for s, i in run["engines"].items())
            + f" ms/frame (load {load_average()})",
            flush=True,
        )
    return codes


def _summarise_run(run: dict, codes: dict) -> None:
    """Medians, throughput, agreement with upstream's codes and memory of one batch size."""
    failed = {s: i for s, i in run["engines"].items() if not i["ms_per_frame_rounds"]}
    if failed:  # reported, not tabulated
        run["failed_engines"] = {s: run["engines"].pop(s).get("error", "no rounds") for s in failed}
    for side, info in run["engines"].items():
        ms = info["ms_per_frame_rounds"]
        info.update(
            ms_per_frame_median=statistics.median(ms),
            ms_per_frame_min=min(ms),
            ttff_ms_median=statistics.median(info["ttff_ms_rounds"]),
            frames_per_s=1e3 * run["batch"] / statistics.median(ms),
        )
        # qwentts.cpp builds its own prompt from text: its codes are not comparable here.
        info["frames_agreeing_with_upstream"] = (
            _codes_agreement(codes["upstream"], codes[side]) if side in codes and "upstream" in codes else None
        )
    run["exact_codes_identical"] = (
        all(torch.equal(a, c) for a, c in zip(codes["upstream"], codes["exact"]))
        if "upstream" in codes and "exact" in codes
        else None
    )
    run["peak_rss_mb"] = PeakRSS.current() / 2**20
    run["process_max_rss_mb"] = PeakRSS.process_peak_so_far() / 2**20


def environment() -> dict:
    from q3tts.verify.report.parity import versions

    return {
        **versions(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }


# GGUF Q8_0 stores every matrix (heads and embeddings too) in blocks of 32 int8 codes and one f16
# scale: 34 bytes per 32 weights (the 0.6B/1.7B files convert-ckpt --to gguf writes; norms stay f32).
Q8_0_BYTES = 34 / 32
# GGUF Q4_K_M (convert-ckpt --to gguf --quant Q4_K_M): Q4_K, 144 bytes per 256 weights, for every matrix
# a frame streams (its embeddings are Q6_K, but a frame reads only rows of them).
Q4_K_BYTES = 144 / 256


def floor_dtype(engine: str) -> str:
    """Which per-dtype floor an engine is held to: its weight bytes (F16/BF16 GGUF: 2 bytes, Q8_0:
    Q8_0_BYTES, Q4_K_M: Q4_K_BYTES)."""
    if engine.startswith("fast"):
        return engine.split()[1]
    if engine.startswith("qwentts.cpp"):
        if engine.endswith("Q8_0"):
            return "q8_0"
        if engine.endswith("Q4_K_M"):
            return "q4_k_m"
        return "bf16" if engine.endswith(("F16", "BF16")) else "fp32"
    return "fp32"


def decode_loop_ms(run: dict, info: dict) -> float:
    """ms per frame of the decode loop alone: qwentts.cpp's own [Perf] numbers, and for the torch
    engines (whole run - first-frame call) / (frames - 1), the first-frame call being prefill plus
    one frame."""
    if "ar_ms_per_frame_rounds" in info:
        return statistics.median(info["ar_ms_per_frame_rounds"])
    frames = run["frames_per_item"]
    return (info["ms_per_frame_median"] * frames - info["ttff_ms_median"]) / (frames - 1)


def add_floors(results: dict) -> None:
    """Floors from the best bandwidth measured in the run (load only ever lowers a measurement)."""
    best = max(m["bytes_per_s"] for m in results["bandwidth"]["measurements"])
    results["bandwidth"]["bytes_per_s"] = best
    for m in results["models"]:
        m["floor_ms_per_frame"] = {d: 1e3 * b / best for d, b in m["bytes_read_per_frame"].items()}
        for r in m["runs"]:
            for side, info in r["engines"].items():
                dname = floor_dtype(side)
                info["floor_fraction"] = m["floor_ms_per_frame"][dname] / info["ms_per_frame_median"]
                ref = results["bandwidth"].get("reference_bytes_per_s")
                if ref:
                    info["reference_floor_fraction"] = (
                        m["bytes_read_per_frame"][dname] / ref * 1e3 / info["ms_per_frame_median"]
                    )


def write_reports(results: dict, out_dir: Path) -> None:
    add_floors(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    env, bw = results["environment"], results["bandwidth"]
    lines = [
        "# Generation benchmark",
        "",
        f"CPU, {env['threads']} threads, {env['cpu']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"qwen-tts {env['qwen-tts']}. Random weights (fixture initialiser) at the released sizes, custom_voice layout; "
        "all engines in one process, alternating round by round, on identical inputs and seeds (sampling on, EOS moved "
        "out of reach so every run has the same length).",
        "",
        f"Measured read bandwidth: **{bw['bytes_per_s'] / 1e9:.1f} GB/s**, the best of "
        f"{len(bw['measurements'])} measurements taken before and after each model ("
        + ", ".join(f"{x['bytes_per_s'] / 1e9:.1f} GB/s at load {x['load']}" for x in bw["measurements"])
        + f"; {bw['method']}, {bw['threads']} threads, {bw['buffer_bytes'] / 2**30:.0f} GiB, best of 7 reads each). "
        "Floor = weight bytes one frame reads in that dtype / this bandwidth.",
        "",
        *(
            [
                f"Reference bandwidth (given, not measured in this run): {bw['reference_bytes_per_s'] / 1e9:.1f} GB/s; "
                "'ref. floor reached' uses it."
            ]
            if bw.get("reference_bytes_per_s")
            else []
        ),
        "",
        "| model | batch | engine | ms/frame median (min) | decode loop ms/frame | floor ms/frame | floor reached | "
        "ref. floor reached | first frame ms | warm-up s (compile) | RSS growth MB | frames = upstream | "
        "load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += _table_rows(results)
    lines += [
        "",
        "ms/frame: wall time of one decode step of the whole batch (prefill included, amortised over the frames). "
        "First frame: a generate() call that stops after one frame (prefill + one code-predictor frame + one talker "
        "step). Warm-up: the first call (max_new_tokens=3); for fast engines it includes torch.compile, whose share is "
        "in parentheses (first use of each graph). 'frames = upstream': fraction of frames whose codes (all groups) equal "
        "upstream's (fp32) at the same index (the exact path must be 100%; the fast path is not bit-identical, so sampled "
        "runs drift apart after the first differing code). The floor for a tiny model is microseconds and says nothing. "
        f"RSS growth: peak RSS during the timed runs over the RSS before them ({results.get('rss_method', 'sampled')}).",
        "",
    ]
    lines += _run_notes(results)
    if results.get("peers"):
        lines += ["", f"Peers: {results['peers']}"]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")


def _table_rows(results: dict) -> list[str]:
    lines = []
    for m in results["models"]:
        for r in m["runs"]:
            for side, i in r["engines"].items():
                dname = floor_dtype(side)
                meaningful = r["batch"] == 1 and m["floor_ms_per_frame"][dname] >= 1.0
                compile_s = f" ({i['compile_seconds']:.1f})" if "compile_seconds" in i else ""
                lines.append(
                    f"| {m['model']} | {r['batch']} | {side} | {i['ms_per_frame_median']:.1f} ({i['ms_per_frame_min']:.1f}) "
                    f"| {decode_loop_ms(r, i):.1f} "
                    f"| {m['floor_ms_per_frame'][dname]:.1f} | {format(i['floor_fraction'], '.0%') if meaningful else '-'} "
                    f"| {format(i['reference_floor_fraction'], '.0%') if meaningful and 'reference_floor_fraction' in i else '-'} "
                    f"| {i['ttff_ms_median']:.0f} | {i['warmup_seconds']:.1f}{compile_s} | {i['rss_growth_mb']:.0f} "
                    f"| {'-' if i['frames_agreeing_with_upstream'] is None else format(i['frames_agreeing_with_upstream'], '.0%')} "
                    f"| {m['load_before']} / {m['load_after']} |"
                )
    return lines


def _run_notes(results: dict) -> list[str]:
    """Per-run lines under the table: batch scaling, failures, the peer's own timing, exactness, memory."""
    lines = []
    for m in results["models"]:
        for r in m["runs"]:
            if "aggregate_over_single" in r:
                lines.append(
                    f"- {m['model']} batch {r['batch']}: aggregate frames/s over single stream: "
                    + ", ".join(f"{s} {v:.2f}x" for s, v in r["aggregate_over_single"].items())
                )
            for side, err in r.get("failed_engines", {}).items():
                lines.append(f"- {m['model']} batch {r['batch']}: {side} failed: {err}")
            for side, i in r["engines"].items():
                if "ar_ms_per_frame_rounds" in i:
                    lines.append(
                        f"- {m['model']} {side}: decode loop alone (its [Perf] TalkerDecode + CodePredictor) "
                        f"{statistics.median(i['ar_ms_per_frame_rounds']):.1f} ms/frame; {i['frames']} frames per run"
                    )
            same = {True: "yes", False: "NO", None: "not compared (upstream or exact not in this run)"}[
                r["exact_codes_identical"]
            ]
            lines.append(
                f"- {m['model']} batch {r['batch']}: exact codes identical to upstream: {same}; "
                f"process RSS after the runs {r['peak_rss_mb']:.0f} MB"
                + (f", process peak RSS so far {r['process_max_rss_mb']:.0f} MB" if "process_max_rss_mb" in r else "")
            )
    return lines


def merge_reports(paths: list[Path], out_dir: Path) -> None:
    """One report from runs made in separate processes: each model's engines still alternated
    within one process; the bandwidth measurements of all runs are kept, the best sets the floor."""
    runs = [json.loads(p.read_text()) for p in paths]
    merged = dict(runs[0], models=[m for r in runs for m in r["models"]])
    merged["bandwidth"] = dict(
        runs[0]["bandwidth"], measurements=[x for r in runs for x in r["bandwidth"]["measurements"]]
    )
    merged["merged_from"] = [str(p) for p in paths]
    write_reports(merged, out_dir)


def peers_status(template: str | None) -> str:
    try:
        import qwentts_cpp_cpu  # noqa: F401
    except ImportError:
        return "qwentts.cpp skipped: its binding (qwentts_cpp_cpu, extra 'peers') is not installed"
    if not template:
        return "qwentts.cpp skipped: no GGUF files given (--gguf-template, written by convert-ckpt --to gguf)"
    return f"qwentts.cpp through qwentts_cpp_cpu on GGUF files {template}"


def gguf_for(size: str, template: str | None, quants: list[str], prepare: bool) -> dict[str, Path]:
    """The GGUF directories of ``size`` per quant (``template`` formatted with size and quant). With
    ``prepare``, missing ones are written by convert-ckpt's GGUF target from an upstream checkpoint of
    the same initialiser and seed as the torch engines (released-id tokenizer), next to them."""
    if not template or size == "tiny":
        return {}
    out = {q: Path(template.format(size=size, quant=q)) for q in quants}
    missing = [q for q, d in out.items() if not (d / "manifest.json").is_file()]
    if missing and prepare:
        from q3tts.standalone.gguf_conversion import convert_to_gguf
        from q3tts.verify.engines.gguf import write_released_id_tokenizer
        from q3tts.verify.fixtures.writer import write_release_size_checkpoint

        up = Path(template.format(size=size, quant="upstream"))
        if not (up / "config.json").is_file():
            write_release_size_checkpoint(up, size, "custom_voice", seed=0)
            write_released_id_tokenizer(up)
        for q in missing:
            convert_to_gguf(up, out[q], quant=q, force=True)
        missing = []
    if missing:
        raise SystemExit(f"no GGUF files for {size} {missing} under {template} (use --gguf-prepare)")
    return out


def compile_start(size: str, fast_dtypes: tuple[str, ...], options: dict | None) -> dict:
    """Compile time of the fast engines in this process (warm-up generate of 3 tokens), with
    whatever the inductor cache directory holds: run twice to get a first and a second start."""
    config = tiny_config("custom_voice") if size == "tiny" else released_config(size, "custom_voice")
    cfg = Qwen3TTSConfig.from_upstream(config)
    cache_dir = str(compile_cache_dir())  # where the fast engines cache their graphs (standalone/fast.py)
    out = {"size": size, "cache_dir": cache_dir, "cache_existed": Path(cache_dir).exists(), "load": load_average()}
    with torch.device("meta"):
        base = Qwen3TTS(cfg)
    base.to_empty(device="cpu")
    with torch.no_grad():  # values do not matter for the compile time, but must be finite to sample
        for p in base.parameters():
            p.normal_(0.0, 0.02)
    base.eval()
    for dname in fast_dtypes:
        model = fast_model(base, cfg, dname)
        model.compile_fast(options=options)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(**prompt_kwargs(cfg, 1), max_new_tokens=3)
        out[dname] = {"compile_seconds": model._fast.compile_seconds, "warmup_seconds": time.perf_counter() - t0}
        print(f"[{size}] fast {dname}: compile {out[dname]['compile_seconds']:.1f} s", flush=True)
        del model
    out["load_after"] = load_average()
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,0.6B")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--tiny-frames", type=int, default=64)
    ap.add_argument("--batches", default="1", help="comma-separated batch sizes, e.g. 1,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fast-dtypes", default="fp32,bf16")
    ap.add_argument(
        "--fast-options",
        choices=["default", "freezing"],
        default="default",
        help="inductor options of the fast engines: default = standalone/fast.py COMPILE_OPTIONS; freezing = "
        "inductor's freezing on (the default until 7 Dec 2026, reports/fast-compile-cache.md)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--gguf-template",
        default=None,
        help="qwentts.cpp GGUF directories, formatted with {size} and {quant}, e.g. /tmp/b/gguf-{size}-{quant}",
    )
    ap.add_argument("--gguf-quants", default="F32,F16")
    ap.add_argument("--gguf-prepare", action="store_true", help="write missing GGUF directories first (untimed)")
    ap.add_argument(
        "--reference-bandwidth-gbs",
        type=float,
        default=None,
        help="also report the floor at this bandwidth (e.g. one measured on a quiet machine), labelled as such",
    )
    ap.add_argument("--out", default="reports")
    ap.add_argument(
        "--rss-interval",
        type=float,
        default=PeakRSS.interval,
        help="seconds between RSS samples while timing (the sampler thread costs the timed loop a little)",
    )
    ap.add_argument(
        "--no-upstream",
        action="store_true",
        help="leave the upstream engine out (memory: e.g. a qwentts.cpp run at 1.7B with the exact path as anchor)",
    )
    ap.add_argument(
        "--no-exact",
        action="store_true",
        help="leave the exact engine out and free its fp32 tensors once the fast engines are built (memory: 1.7B "
        "with qwentts.cpp F32, whose binding holds about 2.3x its GGUF in RSS while loaded)",
    )
    ap.add_argument(
        "--label",
        default="",
        help="appended to each model's name in the report, to tell apart runs merged with --merge",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only merge benchmark.json files of separate runs (one model per run) into --out",
    )
    ap.add_argument(
        "--compile-start",
        default=None,
        metavar="SIZE",
        help="only time the fast engines' compile at SIZE in a fresh process (appends to --out/compile-times.jsonl)",
    )
    return ap


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.rss_interval <= 0:
        raise SystemExit(f"--rss-interval must be > 0, got {args.rss_interval}")
    if args.compile_start:
        torch.set_num_threads(args.threads)
        options = None if args.fast_options == "default" else {"freezing": True}
        row = compile_start(args.compile_start, tuple(d for d in args.fast_dtypes.split(",") if d), options)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with (Path(args.out) / "compile-times.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        return
    if args.merge:
        merge_reports([Path(p) for p in args.merge], Path(args.out))
        return
    torch.set_num_threads(args.threads)
    PeakRSS.interval = args.rss_interval
    run_benchmark(args)


def _bandwidth(threads: int) -> dict:
    bw = measure_read_bandwidth(threads=threads)
    bw["load"] = load_average()
    print(f"read bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['method']}; load {bw['load']})", flush=True)
    return bw


def run_benchmark(args) -> None:
    """Every model of --sizes, the read bandwidth measured before and after each; reports rewritten
    after each model (a long run keeps what it measured)."""
    first = _bandwidth(args.threads)
    bw = {k: first[k] for k in ("method", "threads", "buffer_bytes")}
    bw["measurements"] = [{"bytes_per_s": first["bytes_per_s"], "load": first["load"]}]
    if args.reference_bandwidth_gbs:
        bw["reference_bytes_per_s"] = args.reference_bandwidth_gbs * 1e9
    cache_dir = str(compile_cache_dir())  # where the fast engines cache their graphs (standalone/fast.py)
    results = {
        "environment": environment(),
        "bandwidth": bw,
        "inductor_cache_dir": cache_dir,
        "inductor_cache_existed": Path(cache_dir).exists(),
        "rss_method": "kernel high-water mark (VmHWM)"
        if _can_reset_peak_rss()
        else f"sampled every {PeakRSS.interval} s",
        "rss_interval_s": PeakRSS.interval,
        "peers": peers_status(args.gguf_template),
        "models": [],
    }
    options = None if args.fast_options == "default" else {"freezing": True}
    peers = results["peers"].startswith("qwentts.cpp through")
    fast_dtypes = tuple(d for d in args.fast_dtypes.split(",") if d)
    for size in args.sizes.split(","):
        config = tiny_config("custom_voice") if size == "tiny" else released_config(size, "custom_voice")
        frames = args.tiny_frames if size == "tiny" else args.frames
        batches = [int(b) for b in args.batches.split(",")]
        gguf = gguf_for(size, args.gguf_template, args.gguf_quants.split(","), args.gguf_prepare) if peers else {}
        name = f"{size} {args.label}".strip()
        results["models"].append(
            bench_model(
                name,
                config,
                frames,
                batches,
                args.rounds,
                fast_dtypes,
                options,
                gguf=gguf,
                upstream=not args.no_upstream,
                exact=not args.no_exact,
            )
        )
        again = _bandwidth(args.threads)
        bw["measurements"].append({"bytes_per_s": again["bytes_per_s"], "load": again["load"]})
        write_reports(results, Path(args.out))
    print(f"wrote {args.out}/benchmark.md and benchmark.json")


if __name__ == "__main__":
    main()
