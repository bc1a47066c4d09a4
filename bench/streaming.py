"""Streaming benchmark: time to first audio and real-time factor while streaming, next to the
offline path's time to complete audio, at the released sizes with random weights (exact path).

    /work/cpu bench python -m q3tts.bench.streaming --work /tmp/q3tts-bench --out reports/

Builds (once, in --work) upstream CustomVoice checkpoints with random weights at each --sizes and
their conversions, then per size and dtype: the offline path (generate codes, then decode them),
the stream (first chunk, every chunk, the end) from the same seed, and the time to first audio
with a one-frame first chunk. /proc/loadavg is recorded with every row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from q3tts.bench.generation import environment
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.dtypes import BY_SHORT, SHORT_NAME
from q3tts.standalone.streaming import DEFAULT_CHUNK_FRAMES, DEFAULT_FIRST_CHUNK_FRAMES, CodecStream
from q3tts.verify.compare import snr_db


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build(work: Path, size: str) -> Path:
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures.writer import write_release_size_checkpoint

    up, st = work / f"upstream-{size}", work / f"standalone-{size}"
    if not (st / "manifest.json").is_file():
        if not (up / "config.json").is_file():
            write_release_size_checkpoint(up, size, "custom_voice")
        convert_checkpoint(up, st)
    return st


def _warm_up(model, speaker: str) -> None:
    """One tiny generation and decode, so oneDNN's first-call setup is not charged to a path."""
    torch.manual_seed(0)
    (codes,) = model.generate_custom_voice("Warm up.", speaker=speaker, max_new_tokens=3, return_codes=True)
    if codes.shape[0]:
        model.decode_codes([codes])


def _first_chunk_decode(codec, codes, chunk: int, first: int) -> float:
    stream = CodecStream(codec, chunk, first)
    t0 = time.perf_counter()
    stream.push(codes[:first])
    return time.perf_counter() - t0


def _time_to_first_audio(model, kw: dict, chunk: int, first: int, seed: int) -> float:
    """Seconds to the first streamed chunk; the stream is closed right after it (cancelled)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    stream = model.stream_custom_voice(**kw, chunk_frames=chunk, first_chunk_frames=first)
    next(stream)
    seconds = time.perf_counter() - t0
    stream.close()
    return seconds


def _load(st: Path, dtype: torch.dtype, fast: bool):
    """(model, load seconds, compile seconds, compile-cache hits)."""
    from torch._dynamo.utils import counters

    t0 = time.perf_counter()
    model = Qwen3TTS.from_pretrained(st, dtype=dtype)
    t_load = time.perf_counter() - t0
    hits = counters["inductor"]["fxgraph_cache_hit"]
    t0 = time.perf_counter()
    if fast:  # every graph compiled (or loaded from the compile cache) before the first request
        model.compile_fast(warm_up=(1,))
    return model, t_load, time.perf_counter() - t0, counters["inductor"]["fxgraph_cache_hit"] - hits


def _timed_stream(model, kw: dict, chunk: int, first: int, seed: int) -> tuple[float | None, float, list]:
    """(seconds to the first audio, seconds for the whole stream, the chunks)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    t_first, parts = None, []
    for audio in model.stream_custom_voice(**kw, chunk_frames=chunk, first_chunk_frames=first):
        if t_first is None:
            t_first = time.perf_counter() - t0
        parts.append(audio)
    return t_first, time.perf_counter() - t0, parts


def bench_dtype(
    st: Path, dtype: torch.dtype, frames: int, chunk: int, first: int, seed: int = 0, fast: bool = False
) -> dict:
    from torch._dynamo.utils import counters

    model, t_load, t_compile, cache_hits = _load(st, dtype, fast)
    t0 = time.perf_counter()
    speaker = model.get_supported_speakers()[0]
    kw = dict(
        text="Streaming synthesis benchmark sentence.", speaker=speaker, language="auto", max_new_tokens=frames + 1
    )
    graphs = counters["stats"]["unique_graphs"]
    _warm_up(model, speaker)
    t_ready = time.perf_counter() - t0
    # Offline: codes, then audio (what generate_custom_voice does), timed apart.
    load_before = loadavg()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    (codes,) = model.generate_custom_voice(**kw, return_codes=True)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    (wav,), sr = model.decode_codes([codes])
    t_dec = time.perf_counter() - t0
    n = int(codes.shape[0])
    # One first-chunk decode on its own (the goal's decode term), at the first chunk and at one frame.
    t_first_decode, t_first_decode_1 = (_first_chunk_decode(model.codec, codes, chunk, f) for f in (first, 1))
    t_first, t_stream, parts = _timed_stream(model, kw, chunk, first, seed)  # same seed: the same codes
    # The smallest first chunk (one frame): the stream is closed after its audio.
    t_first_1 = _time_to_first_audio(model, kw, chunk, 1, seed)
    streamed = np.concatenate(parts).astype(np.float64)
    same = streamed.shape == wav.shape
    max_abs = float(np.abs(streamed - wav).max()) if same else float("inf")
    snr = snr_db(wav, streamed) if same else float("-inf")
    audio_s = n * 1920 / sr
    per_frame = t_gen / max(n, 1)
    new_graphs = counters["stats"]["unique_graphs"] - graphs
    del model
    return dict(
        dtype=SHORT_NAME[dtype],
        path="fast" if fast else "exact",
        load_s=t_load,
        compile_warm_up_s=t_compile,
        compile_cache_hits=cache_hits,
        graphs_compiled_after_warm_up=new_graphs,
        load_and_warm_up_s=t_load + t_compile + t_ready,
        frames=n,
        audio_seconds=audio_s,
        chunk_frames=chunk,
        first_chunk_frames=first,
        chunks=len(parts),
        streamed_samples=len(streamed),
        offline_generate_s=t_gen,
        offline_decode_s=t_dec,
        offline_complete_audio_s=t_gen + t_dec,
        offline_rtf=(t_gen + t_dec) / audio_s,
        seconds_per_frame=per_frame,
        first_chunk_decode_s=t_first_decode,
        stream_first_audio_s=t_first,
        first_chunk_1_decode_s=t_first_decode_1,
        stream_first_audio_first_chunk_1_s=t_first_1,
        goal_first_audio_first_chunk_1_s=2 * (per_frame + t_first_decode_1),
        stream_total_s=t_stream,
        stream_rtf=t_stream / audio_s,
        stream_vs_offline_max_abs=max_abs,
        stream_vs_offline_snr_db=snr,
        goal_first_audio_s=2 * (per_frame + t_first_decode),
        loadavg_before=load_before,
        loadavg_after=loadavg(),
    )


def write_report(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    (out / "streaming-benchmark.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2) + "\n")
    lines = [
        "# Streaming benchmark: CustomVoice, random released-size weights, CPU",
        "",
        "Time to first audio (TTFA) and real-time factor (RTF = wall time / audio duration) of "
        "`stream_custom_voice`, next to the offline path (`generate_custom_voice`: all codes, then the "
        "300-frame chunked decode): same seed, same codes. Each process runs alone on the machine "
        "(`/work/cpu bench`); the load average is recorded with each row. Goal from issue #13: TTFA "
        "within 2 x (one frame + one first-chunk decode); 'one frame' is the offline generation time "
        "divided by its frames (prefill included). TTFA at first chunk 1 is measured by closing the "
        "stream after its first chunk.",
        "",
        "Path `exact` is the eager path (bit-identical to upstream); `fast` is the compiled path "
        "(`compile_fast(warm_up=(1,))`): every graph is compiled before the first request, so TTFA "
        "excludes it; its compile column gives that time and whether the graphs came from the compile "
        "cache (a second process start) or were compiled (first start), and the next column counts "
        "graphs compiled after the warm-up (must be 0).",
        "",
        "| size | dtype | path | frames | chunk/first | s/frame | first-chunk decode s | TTFA s | goal s "
        "| TTFA, first chunk 1 s | goal s (1) | stream RTF | offline complete s | offline RTF "
        "| stream vs offline max abs (SNR dB) | load + warm-up s | compile s (cache) | graphs after warm-up "
        "| loadavg before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        warm = f"{r['load_and_warm_up_s']:.1f}" if "load_and_warm_up_s" in r else "n/a"  # rows from before it
        lines.append(
            f"| {r['size']} | {r['dtype']} | {r['path']} | {r['frames']} | {r['chunk_frames']}/{r['first_chunk_frames']} | "
            f"{r['seconds_per_frame']:.3f} | {r['first_chunk_decode_s']:.3f} | {r['stream_first_audio_s']:.2f} | "
            f"{r['goal_first_audio_s']:.2f} | {r['stream_first_audio_first_chunk_1_s']:.2f} | "
            f"{r['goal_first_audio_first_chunk_1_s']:.2f} | {r['stream_rtf']:.2f} | "
            f"{r['offline_complete_audio_s']:.2f} | {r['offline_rtf']:.2f} | "
            f"{r['stream_vs_offline_max_abs']:.2e} ({r['stream_vs_offline_snr_db']:.1f}) | "
            f"{warm} | {_compile_cell(r)} | {r.get('graphs_compiled_after_warm_up', 'n/a')} | "
            f"{r['loadavg_before']} → {r['loadavg_after']} |"
        )
    lines += [
        "",
        f"torch {env.get('torch')}, {env.get('threads')} threads, {env.get('cores')} cores, {env.get('cpu', '')}",
        "",
    ]
    (out / "streaming-benchmark.md").write_text("\n".join(lines))


def _compile_cell(r: dict) -> str:
    if r["path"] != "fast" or "compile_warm_up_s" not in r:
        return "-"
    return f"{r['compile_warm_up_s']:.1f} ({'hit' if r['compile_cache_hits'] else 'compiled'})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="Directory for the random released-size checkpoints.")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--sizes", default="0.6B,1.7B")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--chunk-frames", type=int, default=DEFAULT_CHUNK_FRAMES)
    p.add_argument("--first-chunk-frames", type=int, default=DEFAULT_FIRST_CHUNK_FRAMES)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--paths", default="exact", help="exact, fast or both (comma-separated).")
    p.add_argument(
        "--keep", action="store_true", help="Keep the report's other rows; replace only the (size, dtype, path) run."
    )
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    rows = _kept_rows(a.out) if a.keep else []
    for size in a.sizes.split(","):
        st = build(a.work, size)
        for path in a.paths.split(","):
            for name in a.dtypes.split(","):
                row = dict(
                    size=size,
                    **bench_dtype(
                        st, BY_SHORT[name], a.frames, a.chunk_frames, a.first_chunk_frames, fast=path == "fast"
                    ),
                )
                rows = [r for r in rows if (r["size"], r["dtype"], r["path"]) != (size, row["dtype"], row["path"])]
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_report(sorted(rows, key=lambda r: (r["size"], r["path"], r["dtype"])), a.out)


def _kept_rows(out: Path) -> list[dict]:
    report = out / "streaming-benchmark.json"
    return json.loads(report.read_text())["rows"] if report.is_file() else []


if __name__ == "__main__":
    main()
