"""`q3tts serve` under load and when clients leave: 50 streamed requests from 8 clients all come
back once with their seed's audio; a client that leaves mid-stream stops the talker; a client that
leaves while queued never starts; SIGTERM lets the request in flight finish and cancels the rest."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serve_helpers import MODEL_ID, count_talker_steps, served, worker_held  # tests/ on sys.path

from q3tts.serve import disconnects, loadtest
from q3tts.serve.loadclient import one_request

STREAM = {"model": MODEL_ID, "voice": "alice", "input": "Hi there.", "response_format": "pcm", "stream_format": "audio"}
# At temperature 0.1 the tiny model does not reach EOS for hundreds of frames (seed 0: at frame 522),
# so a request that stops early was stopped by the server.
LONG = {**STREAM, "seed": 0, "temperature": 0.1}


@pytest.fixture(scope="module")
def cv(checkpoints):
    with served(checkpoints["custom_voice"][1], max_queue=8) as s:
        yield s


def _idle(app, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while app.state.worker.current is not None or app.state.worker.waiting:
        assert time.monotonic() < deadline, "the worker did not go idle"
        time.sleep(0.01)


def test_load_no_request_lost_or_duplicated(cv, tmp_path, caplog):
    """50 requests, 8 concurrent clients: every request id echoed once, every response 200 with
    the audio its seed gives alone, the worker ran exactly 50 jobs, the access log has 50 lines."""
    srv, app, _ = cv
    refs = {}
    for seed in range(5):
        with httpx.stream(
            "POST", srv.url + "/v1/audio/speech", json=loadtest.speech_body(MODEL_ID, "alice", seed, 6)
        ) as r:
            refs[seed] = r.read()
    before = app.state.worker.stats["done"]
    with caplog.at_level(logging.INFO, logger="q3tts.serve.access"):
        results, wall = loadtest.run_load(srv.url, MODEL_ID, "alice", requests=50, concurrency=8, max_new_tokens=6)
        # inside the level: the last line is written just after the client's last byte, and a line
        # logged once the level is restored is dropped (seen once under load: load-0049 missing)
        speech = _access_lines(caplog, 50, lambda line: line["request_id"].startswith("load-"))
    assert loadtest.check(results, 50) == []
    assert len(results) == 50 and all(r.audio_bytes > 0 and r.ttfb_ms is not None for r in results)
    import hashlib

    assert all(r.audio_sha256 == hashlib.sha256(refs[r.seed]).hexdigest() for r in results)
    assert app.state.worker.stats["done"] - before == 50
    assert sorted(line["request_id"] for line in speech) == sorted(f"load-{i:04d}" for i in range(50))
    assert all(line["status"] == 200 and line["outcome"] == "done" and line["ttfb_ms"] is not None for line in speech)
    text = loadtest.report([("8 clients", results, wall)], [], {"model": "tiny"})
    assert "no request lost or duplicated" in text and "| 8 clients: time to first audio byte |" in text


def _access_lines(caplog, n: int, keep, timeout: float = 10) -> list[dict]:
    """The access-log lines ``keep`` selects, once there are ``n`` (a line is written just after
    its response's last byte, so the client can be a moment ahead of the log)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "q3tts.serve.access"]
        lines = [line for line in lines if keep(line)]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def _next_body(seed: int) -> dict:
    return loadtest.speech_body(MODEL_ID, "alice", seed, 6)


def _expected(url: str, seed: int) -> dict[int, str]:
    """seed -> sha256 of the audio the next request must get (asked before any client leaves)."""
    with httpx.Client(timeout=60) as client:
        return {seed: one_request(client, url, _next_body(seed), f"ref-{seed}").audio_sha256}


def _job_steps(app, model, monkeypatch) -> list:
    """Every Talker.step from now on, as the request id of the job it ran for (counted apart
    from the server's own counter, which the tests check against it)."""

    def running():
        job = app.state.worker.current
        return None if job is None else job.request_id

    return count_talker_steps(model, monkeypatch, tag=running)


def _assert_stopped(d: disconnects.Disconnect, steps: list, expected: dict) -> None:
    """The figures reports/serve.md shows: the server's count of talker steps is the true count
    (every Talker.step, counted independently), the job stopped far short of the 200 steps it
    was allowed, at most one step ran after the server saw the client leave, no step ran once
    the worker was free, and the next request got its seed's audio."""
    n = steps.count(d.request_id)
    time.sleep(0.2)
    assert steps.count(d.request_id) == n, "the talker kept stepping after the worker reported the job over"
    assert d.steps == n, (d.steps, n)
    assert disconnects.check_disconnects([d], expected) == []
    assert d.ran and 1 <= d.steps < d.allowed == disconnects.ALLOWED_STEPS and d.steps_after_cancel <= 1, d
    row = f"| {d.scenario} | {d.steps} of {d.allowed} | {d.steps_after_cancel} | {d.cancel_to_free_ms:.1f} |"
    text = "\n".join(disconnects.report_section([d], []))
    assert row in text and "work stopped every time, the next request served" in text


def _left(caplog, request_id: str) -> bool:
    """The access log has the request as a 499 whose client left (disconnected)."""
    lines = _access_lines(caplog, 1, lambda line: line["request_id"] == request_id)
    return [(line["status"], line["outcome"]) for line in lines] == [(499, "disconnected")]


def test_a_client_leaving_mid_stream_stops_the_talker(cv, monkeypatch):
    """The client reads the first chunk and closes the connection: the job is cancelled and the
    talker takes at most one more step, far short of the 200 the request allowed."""
    srv, app, model = cv
    _idle(app)
    expected = _expected(srv.url, 1)
    steps = _job_steps(app, model, monkeypatch)
    cancelled = app.state.worker.stats["cancelled"]
    body = disconnects.leaving_body(MODEL_ID, "alice")
    d = disconnects.leave_mid_stream(srv.url, body, _next_body(1), request_id="mid")
    assert app.state.worker.stats["cancelled"] == cancelled + 1 and d.request_id == "mid"
    _assert_stopped(d, steps, expected)


def test_a_client_leaving_a_whole_body_request_stops_the_talker(cv, monkeypatch, caplog):
    """No streaming: the client closes the connection 50 ms into the generation, before any byte
    of the body, and the talker stops within a step, not at the 200 steps allowed."""
    srv, app, model = cv
    _idle(app)
    expected = _expected(srv.url, 2)
    steps = _job_steps(app, model, monkeypatch)
    cancelled = app.state.worker.stats["cancelled"]
    body = disconnects.leaving_body(MODEL_ID, "alice")
    with caplog.at_level(logging.INFO, logger="q3tts.serve.access"):
        d = disconnects.leave_whole_body(srv.url, body, _next_body(2), request_id="whole")
    assert app.state.worker.stats["cancelled"] == cancelled + 1 and d.request_id == "whole"
    assert _left(caplog, "whole")
    _assert_stopped(d, steps, expected)


def test_a_client_leaving_while_queued_never_starts(cv, monkeypatch, caplog):
    """The worker is busy; a client gives up while its request waits. The handler cancels the
    job; once the worker is free it skips the job: no talker step, and the next request is served."""
    srv, app, model = cv
    _idle(app)
    expected = _expected(srv.url, 3)
    steps = _job_steps(app, model, monkeypatch)
    cancelled = app.state.worker.stats["cancelled"]
    body = disconnects.leaving_body(MODEL_ID, "alice")
    with caplog.at_level(logging.INFO, logger="q3tts.serve.access"):
        d = disconnects.leave_while_queued(srv.url, body, _next_body(3), worker_held(app), request_id="gone")
    assert app.state.worker.stats["cancelled"] == cancelled + 1 and d.request_id == "gone"
    assert _left(caplog, "gone")
    assert not d.ran and d.steps == 0 and steps.count("gone") == 0 and d.steps_ahead == 0
    assert disconnects.check_disconnects([d], expected) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cli_server(model_dir, port: int, *extra) -> subprocess.Popen:
    code = "import sys; from q3tts.standalone.cli import main; main(sys.argv[1:])"
    args = [sys.executable, "-c", code, "serve", str(model_dir), "--port", str(port), "--model-name", MODEL_ID, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "q3tts serve did not open its port"
        time.sleep(0.1)


def _read(url: str, body: dict, out: dict, key: str, started: threading.Event | None = None) -> None:
    data = b""
    try:
        with httpx.stream("POST", url, json=body, timeout=60) as r:
            for chunk in r.iter_raw():
                data += chunk
                if started is not None:
                    started.set()
        out[key] = (data, True)
    except httpx.HTTPError:
        out[key] = (data, False)  # the server ended the body early


def test_sigterm_finishes_the_request_in_flight_and_cancels_the_rest(checkpoints):
    """`q3tts serve` warms up before its port opens; on SIGTERM the streaming request in flight
    completes (the same bytes as before), the one queued behind it is cancelled when the grace
    period ends, and the process exits 0 with one access-log line per request."""
    port = _free_port()
    # The grace must end before the queued request can end by itself: LONG (seed 0) reaches EOS at frame
    # 522, 1.29 s at one thread on an AMD EPYC; with 1 s it once finished "done" there. The request in
    # flight (12 frames) needs tens of milliseconds.
    proc = _start_cli_server(checkpoints["custom_voice"][1], port, "--graceful-timeout", "0.5")
    url = f"http://127.0.0.1:{port}/v1/audio/speech"
    try:
        short = {**STREAM, "seed": 2, "max_new_tokens": 12, "chunk_frames": 1, "first_chunk_frames": 1}
        reference = httpx.post(url, json=short, timeout=60).content
        out, started = {}, threading.Event()
        first = threading.Thread(target=_read, args=(url, short, out, "short", started))
        first.start()
        assert started.wait(30)
        long = {**LONG, "max_new_tokens": 2000}
        second = threading.Thread(target=_read, args=(url, long, out, "long"))
        second.start()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        first.join(60)
        second.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode()
    assert out["short"] == (reference, True)
    assert out["long"][1] is False or len(out["long"][0]) < 2000 * 1920 * 2
    assert err.index("warmed up in") < err.index("Uvicorn running")
    log = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    speech = [line for line in log if line["path"] == "/v1/audio/speech"]
    assert len(speech) == 3 and [line["outcome"] for line in speech[:2]] == ["done", "done"]
    assert speech[2]["outcome"] in ("disconnected", "cancelled") and speech[2]["frames"] < 2000


def test_background_server_connections_send_without_nagle_delay(cv):
    """The load test's server (BackgroundServer) binds its own socket; its connections must have
    TCP_NODELAY as `q3tts serve`'s have (asyncio sets it only on IPPROTO_TCP sockets). Without it
    each reply on a kept-alive connection waited ~40 ms for the client's delayed ACK, and the
    report's latencies measured that, not the server."""
    srv = cv[0]
    with httpx.Client(timeout=10) as client:
        assert client.get(srv.url + "/health").status_code == 200  # the connection stays open
        sockets = [c.transport.get_extra_info("socket") for c in srv.server.server_state.connections]
        assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
