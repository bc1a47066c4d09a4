"""Streaming benchmark: time to first audio and real-time factor while streaming, next to the
offline path's time to complete audio, at a released size with random weights (exact path).

    python -m q3tts.verify.bench_streaming --work /tmp/q3tts-bench --out reports/ [--frames 24]

Builds (once, in --work) an upstream 0.6B CustomVoice checkpoint with random weights and its
conversion, then per dtype: the offline path (generate codes, then decode them) and the stream
(first chunk, every chunk, the end) from the same seed. Timings on a shared machine are noisy:
/proc/loadavg is recorded with every row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.dtypes import BY_SHORT, SHORT_NAME
from q3tts.standalone.streaming import CodecStream

from .bench_generation import environment
from .compare import snr_db


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build(work: Path, size: str) -> Path:
    from q3tts.convert import convert_checkpoint

    from .fixtures import write_release_size_checkpoint

    up, st = work / f"upstream-{size}", work / f"standalone-{size}"
    if not (st / "manifest.json").is_file():
        if not (up / "config.json").is_file():
            write_release_size_checkpoint(up, size, "custom_voice")
        convert_checkpoint(up, st)
    return st


def bench_dtype(st: Path, dtype: torch.dtype, frames: int, chunk: int, first: int, seed: int = 0) -> dict:
    model = Qwen3TTS.from_pretrained(st, dtype=dtype)
    speaker = model.get_supported_speakers()[0]
    kw = dict(
        text="Streaming synthesis benchmark sentence.", speaker=speaker, language="auto", max_new_tokens=frames + 1
    )
    _ = model.codec  # load the codec outside the timings
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
    # One first-chunk decode on its own (the floor of time to first audio, with one frame).
    stream = CodecStream(model.codec, chunk, first)
    t0 = time.perf_counter()
    stream.push(codes[:first])
    t_first_decode = time.perf_counter() - t0
    # Streaming, same seed: the same codes.
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    t_first, parts = None, []
    for audio in model.stream_custom_voice(**kw, chunk_frames=chunk, first_chunk_frames=first):
        if t_first is None:
            t_first = time.perf_counter() - t0
        parts.append(audio)
    t_stream = time.perf_counter() - t0
    streamed = np.concatenate(parts).astype(np.float64)
    samples, chunks = len(streamed), len(parts)
    same = streamed.shape == wav.shape
    max_abs = float(np.abs(streamed - wav).max()) if same else float("inf")
    snr = snr_db(wav, streamed) if same else float("-inf")
    audio_s = n * 1920 / sr
    return dict(
        dtype=SHORT_NAME[dtype],
        frames=n,
        audio_seconds=audio_s,
        chunk_frames=chunk,
        first_chunk_frames=first,
        chunks=chunks,
        streamed_samples=samples,
        offline_generate_s=t_gen,
        offline_decode_s=t_dec,
        offline_complete_audio_s=t_gen + t_dec,
        offline_rtf=(t_gen + t_dec) / audio_s,
        seconds_per_frame=t_gen / max(n, 1),
        first_chunk_decode_s=t_first_decode,
        stream_first_audio_s=t_first,
        stream_total_s=t_stream,
        stream_rtf=t_stream / audio_s,
        stream_vs_offline_max_abs=max_abs,
        stream_vs_offline_snr_db=snr,
        goal_first_audio_s=2 * (t_gen / max(n, 1) + t_first_decode),
        loadavg_before=load_before,
        loadavg_after=loadavg(),
    )


def write_report(rows: list[dict], out: Path, size: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    (out / "streaming-benchmark.json").write_text(json.dumps(dict(size=size, environment=env, rows=rows), indent=2))
    lines = [
        f"# Streaming benchmark: {size} CustomVoice, random released-size weights, exact (eager) path, CPU",
        "",
        "Time to first audio (TTFA) and real-time factor (RTF = wall time / audio duration) of "
        "`stream_custom_voice`, next to the offline path (`generate_custom_voice`: all codes, then the "
        "300-frame chunked decode). Same seed, same codes. Goal from issue #13: TTFA within 2 x (one "
        "frame + one first-chunk decode). The machine is shared with other engineers' test runs: "
        "the load average is recorded with each row, and the numbers are noisy.",
        "",
        "| dtype | frames | audio s | chunk/first | s/frame | first-chunk decode s | TTFA s | goal s | stream RTF | offline complete s | offline RTF | stream vs offline max abs (SNR dB) | loadavg (before → after) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['frames']} | {r['audio_seconds']:.2f} | {r['chunk_frames']}/{r['first_chunk_frames']} | "
            f"{r['seconds_per_frame']:.3f} | {r['first_chunk_decode_s']:.3f} | {r['stream_first_audio_s']:.3f} | "
            f"{r['goal_first_audio_s']:.3f} | {r['stream_rtf']:.2f} | {r['offline_complete_audio_s']:.2f} | "
            f"{r['offline_rtf']:.2f} | {r['stream_vs_offline_max_abs']:.2e} ({r['stream_vs_offline_snr_db']:.1f}) | "
            f"{r['loadavg_before']} → {r['loadavg_after']} |"
        )
    lines += [
        "",
        f"torch {env.get('torch')}, {env.get('threads')} threads, {env.get('cores')} cores, {env.get('cpu', '')}",
        "",
    ]
    (out / "streaming-benchmark.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="Directory for the random released-size checkpoints.")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--size", default="0.6B")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--first-chunk-frames", type=int, default=4)
    p.add_argument("--dtypes", default="fp32,bf16")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    st = build(a.work, a.size)
    rows = []
    for name in a.dtypes.split(","):
        rows.append(bench_dtype(st, BY_SHORT[name], a.frames, a.chunk_frames, a.first_chunk_frames))
        print(json.dumps(rows[-1]), flush=True)
        write_report(rows, a.out, a.size)


if __name__ == "__main__":
    main()
