"""A bounded load test on loopback: N speech requests from C concurrent clients, each streamed
(time to first audio byte) with its own request id, then latency percentiles and a check that
every request came back exactly once with the audio its seed makes.

    python -m q3tts.serve.loadtest --model DIR [--requests 50 --concurrency 8 --max-new-tokens 12]
        [--out reports/serve.md]

It serves DIR in this process (a background uvicorn on 127.0.0.1, the same app as `q3tts serve`)
and talks to it with httpx over a real socket. The tests run it on a tiny checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Result:
    request_id: str
    seed: int
    status: int
    echoed_id: str | None
    audio_sha256: str
    audio_bytes: int
    ttfb_ms: float | None
    ms: float


def speech_body(model_id: str, voice: str | None, seed: int, max_new_tokens: int) -> dict:
    body = {
        "model": model_id,
        "input": "A load test sentence.",
        "response_format": "pcm",
        "stream_format": "audio",
        "seed": seed,
        "max_new_tokens": max_new_tokens,
    }
    if voice is not None:
        body["voice"] = voice
    return body


def one_request(client, url: str, body: dict, request_id: str) -> Result:
    start = time.perf_counter()
    first = None
    digest, size = hashlib.sha256(), 0
    with client.stream("POST", url + "/v1/audio/speech", json=body, headers={"x-request-id": request_id}) as r:
        for chunk in r.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter()
            digest.update(chunk)
            size += len(chunk)
    end = time.perf_counter()
    return Result(
        request_id,
        body["seed"],
        r.status_code,
        r.headers.get("x-request-id"),
        digest.hexdigest(),
        size,
        None if first is None else (first - start) * 1000,
        (end - start) * 1000,
    )


def run_load(
    url: str,
    model_id: str,
    voice: str | None,
    requests: int = 50,
    concurrency: int = 8,
    max_new_tokens: int = 12,
    seeds: int = 5,
) -> tuple[list[Result], float]:
    """Send ``requests`` requests (seeds 0..seeds-1 in turn) from ``concurrency`` threads, each
    with its own httpx client. Returns the results in request order and the wall time."""
    import httpx

    def work(worker: int) -> list[Result]:
        out = []
        with httpx.Client(timeout=120) as client:
            for i in range(worker, requests, concurrency):
                body = speech_body(model_id, voice, i % seeds, max_new_tokens)
                out.append(one_request(client, url, body, f"load-{i:04d}"))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for part in pool.map(work, range(concurrency)) for r in part]
    wall = time.perf_counter() - start
    return sorted(results, key=lambda r: r.request_id), wall


def check(results: list[Result], requests: int) -> list[str]:
    """What is wrong with a run: a status other than 200, a lost or duplicated request id, and
    different audio for the same seed (a mixed-up or partial response)."""
    problems = [f"{r.request_id}: HTTP {r.status}" for r in results if r.status != 200]
    sent = {f"load-{i:04d}" for i in range(requests)}
    echoed = [r.echoed_id for r in results]
    if sorted(echoed) != sorted(sent):
        lost, extra = sorted(sent - set(echoed)), sorted(e for e in set(echoed) if echoed.count(e) > 1 or e not in sent)
        problems.append(f"request ids: lost {lost}, duplicated or unknown {extra}")
    by_seed: dict[int, set[str]] = {}
    for r in results:
        by_seed.setdefault(r.seed, set()).add(r.audio_sha256)
    problems += [f"seed {s}: {len(h)} different audio bodies" for s, h in sorted(by_seed.items()) if len(h) != 1]
    return problems


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": float(a.max())}


def _rows(label: str, results: list[Result], wall: float) -> list[str]:
    lat = percentiles([r.ms for r in results])
    ttfb = percentiles([r.ttfb_ms for r in results if r.ttfb_ms is not None])
    return [
        f"| {label}: latency (sent to last byte) | {len(results) / wall:.1f} | "
        + " | ".join(f"{v:.0f}" for v in lat.values())
        + " |",
        f"| {label}: time to first audio byte | | " + " | ".join(f"{v:.0f}" for v in ttfb.values()) + " |",
    ]


def report(passes: list[tuple[str, list[Result], float]], problems: list[str], setup: dict) -> str:
    """The markdown report: the setup, the verdict of the checked pass, a latency table per pass."""
    label, results, wall = passes[0]
    verdict = (
        "no request lost or duplicated, every seed one audio body"
        if not problems
        else "PROBLEMS: " + "; ".join(problems)
    )
    lines = [
        "# `q3tts serve` load test",
        "",
        "Generated by `python -m q3tts.serve.loadtest` (serve/loadtest.py); the suite runs the same",
        "load (tests/test_serve_load.py) and checks its correctness, never its timing.",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in setup.items()),
        "",
        f"**{label}: {len(results)} requests, {sum(r.status == 200 for r in results)} HTTP 200, {verdict}.**",
        f"Wall time {wall:.2f} s.",
        "",
        "| pass (ms) | requests/s | p50 | p90 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
        *(row for p in passes for row in _rows(*p)),
        "",
        "Requests queue behind one worker (the model runs one request at a time), so under",
        "concurrency the latency and the time to first byte include the wait in the queue; the",
        "single-client pass shows the time to first byte of an idle server.",
        "",
    ]
    return "\n".join(lines)


def cpu_model_name() -> str:
    """lscpu's model name (from /proc/cpuinfo), for the report's machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a converted or upstream checkpoint directory, or a hub id")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--model-label", default=None, help="how the report names the model (default: --model)")
    parser.add_argument("--out", default=None, help="write the markdown report here (default: print it)")
    args = parser.parse_args(argv)
    import torch

    from q3tts.standalone.model import Qwen3TTS

    from .app import create_app
    from .background import BackgroundServer
    from .settings import Limits, Settings
    from .synth import warm_up

    torch.set_num_threads(1)
    model = Qwen3TTS.from_pretrained(args.model)
    warm_up(model)
    settings = Settings(model_id="load", limits=Limits(max_queue=args.max_queue))
    voice = model.get_supported_speakers()[0] if model.config.tts_model_type == "custom_voice" else None
    with BackgroundServer(create_app(model, settings)) as srv:
        results, wall = run_load(srv.url, "load", voice, args.requests, args.concurrency, args.max_new_tokens)
        alone = run_load(srv.url, "load", voice, 10, 1, args.max_new_tokens)
    problems = check(results, args.requests) + check(alone[0], 10)
    passes = [(f"{args.concurrency} clients", results, wall), ("1 client, 10 requests", *alone)]
    setup = {
        "model": f"{model.config.tts_model_type} {model.config.tts_model_size} ({args.model_label or args.model})",
        "requests / concurrent clients": f"{args.requests} / {args.concurrency}",
        "per request": f"streamed pcm, max_new_tokens {args.max_new_tokens}, seeds 0..4 in turn",
        "machine": f"{cpu_model_name()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the start), "
        f"{torch.get_num_threads()} torch thread, torch {torch.__version__}",
    }
    text = report(passes, problems, setup)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
