"""`q3tts serve --fast` builds the fast path and warms up before its port opens.

The real command runs in a child process; only the compile step is gated: compile_fast waits
for a file the test creates, then builds the real fast engine with torch.compile switched off
(FastEngine's own ``compile=False``: the same engine and warm-up, eager, in milliseconds rather
than the ~25 s a tiny compile costs; tests/test_fast_*.py compile it for real). While the step
waits, the port must refuse connections; after it, the server warms up, opens the port and
serves through the fast engine."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
from serve_helpers import MODEL_ID  # tests/ on sys.path

GATED = """
import pathlib, sys, time
from q3tts.standalone.cli import main
from q3tts.standalone.model import Qwen3TTS
gate, real = pathlib.Path(sys.argv[1]), Qwen3TTS.compile_fast
def gated(self, warm_up=(), **options):
    print("compile step: waiting for the gate", file=sys.stderr, flush=True)
    while not gate.exists():
        time.sleep(0.01)
    return real(self, warm_up=warm_up, compile=False, **options)
Qwen3TTS.compile_fast = gated
main(sys.argv[2:])
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(stream, out: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        out.put(raw.decode(errors="replace").rstrip("\n"))


def _wait_line(lines: queue.Queue, seen: list, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} in q3tts serve's stderr: {seen}") from None


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        return True
    return False


def test_serve_fast_compiles_and_warms_up_before_the_port_opens(checkpoints, tmp_path):
    port, gate = _free_port(), tmp_path / "gate"
    health = f"http://127.0.0.1:{port}/health"
    args = ["serve", str(checkpoints["custom_voice"][1]), "--port", str(port), "--model-name", MODEL_ID, "--fast"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", GATED, str(gate), *args], stderr=subprocess.PIPE, env=env)
    lines, seen = queue.Queue(), []
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    try:
        _wait_line(lines, seen, "compile step: waiting for the gate")
        probes = [_refused(health) for _ in range(20)]  # the model is loaded, the fast path not built
        assert all(probes), "the port answered before the fast path was built"
        gate.touch()
        _wait_line(lines, seen, "Uvicorn running")
        h = httpx.get(health, timeout=10).json()
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/audio/speech",
            json={"model": MODEL_ID, "voice": "alice", "input": "Hi.", "max_new_tokens": 4, "response_format": "wav"},
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    order = ["compile step: waiting", "compiling the fast path", "fast path ready", "warmed up in", "Uvicorn running"]
    at = {key: next(i for i, line in enumerate(seen) if key in line) for key in order[2:]}
    assert at["fast path ready"] < at["warmed up in"] < at["Uvicorn running"], seen
    assert any(order[1] in line for line in seen[: at["fast path ready"]])
    assert h["status"] == "ok" and h["talker_steps_counted"] is False  # the fast engine serves
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and len(r.content) > 44
