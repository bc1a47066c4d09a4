"""Clients that leave, measured from outside: a client leaves mid-stream, leaves a whole-body
request, or leaves while its request waits in the queue. Each scenario talks to a running server
over a raw socket (so the client closes exactly when it decides to), then reads the server's own
figures from GET /health (the worker's count of talker steps and its record of the last cancelled
job) and sends the next request, which must be served as usual.

The load test (loadtest.py) runs the three scenarios for reports/serve.md; the suite
(tests/test_serve_load.py) runs the same functions and asserts the same figures.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .loadclient import Result, one_request

# "Hi there." at temperature 0.1, seed 0: the suite's tiny custom-voice model reaches no EOS in
# 400 frames, so a request that stops short of its max_new_tokens was stopped by the server.
ALLOWED_STEPS = 200


def leaving_body(model_id: str, voice: str | None, max_new_tokens: int = ALLOWED_STEPS) -> dict:
    """A streamed request that runs ``max_new_tokens`` frames unless stopped, one frame a chunk."""
    body = {
        "model": model_id,
        "input": "Hi there.",
        "response_format": "pcm",
        "stream_format": "audio",
        "seed": 0,
        "temperature": 0.1,
        "max_new_tokens": max_new_tokens,
        "chunk_frames": 1,
        "first_chunk_frames": 1,
    }
    if voice is not None:
        body["voice"] = voice
    return body


@dataclass
class Disconnect:
    scenario: str
    request_id: str
    allowed: int  # the request's max_new_tokens
    state: str  # how the job ended: cancelled, or done (ran to its end: not stopped)
    ran: bool  # whether the worker started the job at all
    steps: int | None  # talker steps the job ran in all (the server's count; None: not counted)
    steps_after_cancel: int | None  # of those, the ones after the server saw the client leave
    cancel_to_free_ms: float | None  # server: from the cancel to the worker being done with the job
    close_to_free_ms: float | None  # client: from its close to /health showing the job over
    next: Result  # the request sent afterwards
    steps_ahead: int | None = None  # queued scenario: talker steps of the request ahead


def health(url: str, client: httpx.Client | None = None) -> dict:
    if client is None:
        return httpx.get(url + "/health", timeout=10).json()
    return client.get(url + "/health").json()


def wait_health(url: str, ready, timeout: float = 60.0, client: httpx.Client | None = None) -> dict:
    """Poll GET /health (every 2 ms, on one kept-alive connection: ``client``, else a new one)
    until ``ready(health)``; returns that health."""
    if client is None:
        with httpx.Client(timeout=10) as own:
            return wait_health(url, ready, timeout, own)
    deadline = time.monotonic() + timeout
    while True:
        h = health(url, client)
        if ready(h):
            return h
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server never reached the awaited state; last /health: {h}")
        time.sleep(0.002)


def open_request(url: str, body: dict, request_id: str) -> socket.socket:
    """POST /v1/audio/speech on a raw socket (the response is left unread)."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    )
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    sock.sendall(head.encode() + data)
    return sock


def read_first_body_bytes(sock: socket.socket) -> bytes:
    """Read until the status line, the headers and some of the body have arrived."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0 or len(buf) == end + 4:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"the server closed the connection early: {buf[:200]!r}")
        buf += piece
    status = buf.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"expected a 200 stream, got {status!r}")
    return buf


def _after_close(url: str, request_id: str, closed: float, client: httpx.Client) -> tuple[dict, float]:
    """Wait for the worker to be done with ``request_id`` (cancelled, or run to its end if the
    server failed to stop it): (the worker's record of it, ms since the close). ``client`` is
    made (and connected) before the close, so its setup is not timed."""
    h = wait_health(url, lambda h: (h.get("last_job") or {}).get("request_id") == request_id, client=client)
    return h["last_job"], (time.perf_counter() - closed) * 1000


def _result(scenario: str, body: dict, summary: dict, close_ms, next_result: Result, **extra) -> Disconnect:
    return Disconnect(
        scenario,
        summary["request_id"],
        body["max_new_tokens"],
        summary["state"],
        summary["ran"],
        summary["steps"],
        summary["steps_after_cancel"],
        summary["cancel_to_free_ms"],
        close_ms,
        next_result,
        **extra,
    )


def _next(url: str, next_body: dict, request_id: str) -> Result:
    with httpx.Client(timeout=120) as client:
        return one_request(client, url, next_body, request_id + "-next")


def leave_mid_stream(url: str, body: dict, next_body: dict, request_id: str = "leave-stream") -> Disconnect:
    """The client reads the stream's first bytes, then closes the connection."""
    sock = open_request(url, body, request_id)
    with httpx.Client(timeout=10) as poll:
        try:
            health(url, poll)  # connect the poller now, not after the close
            read_first_body_bytes(sock)
        finally:
            sock.close()
        summary, close_ms = _after_close(url, request_id, time.perf_counter(), poll)
    return _result("mid-stream (after the first chunk)", body, summary, close_ms, _next(url, next_body, request_id))


def leave_whole_body(
    url: str, body: dict, next_body: dict, request_id: str = "leave-whole", after: float = 0.05
) -> Disconnect:
    """A whole-body request (no streaming): the client waits until the worker runs it, ``after``
    seconds more, then closes the connection without reading anything."""
    sock = open_request(url, {**body, "stream_format": None}, request_id)
    with httpx.Client(timeout=10) as poll:
        try:
            wait_health(url, lambda h: h["queue"]["busy"], client=poll)
            time.sleep(after)
        finally:
            sock.close()
        summary, close_ms = _after_close(url, request_id, time.perf_counter(), poll)
    scenario = f"whole body ({after * 1000:.0f} ms into generation)"
    return _result(scenario, body, summary, close_ms, _next(url, next_body, request_id))


@contextlib.contextmanager
def request_ahead(url: str, body: dict, request_id: str = "ahead"):
    """Keep the worker busy with ``body`` (streamed to the end on a thread) for the block; yields
    a dict that holds its Result once the block has ended."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=_next(url, body, request_id)))
    thread.start()
    try:
        wait_health(url, lambda h: h["queue"]["busy"])
        yield out
    finally:
        thread.join(300)


def leave_while_queued(url: str, body: dict, next_body: dict, hold, request_id: str = "leave-queued") -> Disconnect:
    """``hold`` (a context manager) keeps the worker busy; the client's whole-body request
    queues behind it and the client closes while it waits. The worker must skip it."""
    before = health(url)["jobs"].get("talker_steps")
    with hold:
        sock = open_request(url, {**body, "stream_format": None}, request_id)
        try:
            wait_health(url, lambda h: h["queue"]["waiting"] >= 1)
        finally:
            sock.close()
        wait_health(url, lambda h: h["queue"]["waiting_cancelled"] >= 1)  # the handler saw it leave
    with httpx.Client(timeout=10) as poll:
        summary, _ = _after_close(url, request_id, time.perf_counter(), poll)
    after = health(url)["jobs"].get("talker_steps")
    ahead = None if before is None or after is None else after - before - (summary["steps"] or 0)
    result = _next(url, next_body, request_id)
    return _result("while queued (behind a running request)", body, summary, None, result, steps_ahead=ahead)


def check_disconnects(runs: list[Disconnect], expected: dict[int, str], max_after: int = 1) -> list[str]:
    """What is wrong: a job that ran to its limit or ran more than ``max_after`` talker steps
    after the cancel, a queued job that started, a next request not served with the audio its
    seed gives (``expected``: seed -> sha256)."""
    problems = []
    for d in runs:
        if d.state != "cancelled":
            problems.append(f"{d.scenario}: the job was not cancelled ({d.state}, {d.steps} talker steps)")
        if d.steps is None:
            problems.append(f"{d.scenario}: the server did not count talker steps")
            continue
        if d.steps >= d.allowed or (d.steps_after_cancel or 0) > max_after:
            problems.append(f"{d.scenario}: {d.steps} talker steps, {d.steps_after_cancel} after the cancel")
        if d.scenario.startswith("while queued") and (d.ran or d.steps):
            problems.append(f"{d.scenario}: the cancelled job ran ({d.steps} steps)")
        n = d.next
        if n.status != 200 or expected.get(n.seed) not in (None, n.audio_sha256):
            problems.append(f"{d.scenario}: the next request got HTTP {n.status} or other audio")
    return problems


def run_scenarios(url: str, model_id: str, voice: str | None, next_body) -> list[Disconnect]:
    """The three scenarios in turn on an otherwise idle server; ``next_body(seed)`` is the request
    sent after each (seeds 1, 2, 3). The queued one waits behind the same long request, run to its end."""
    leaving = leaving_body(model_id, voice)
    return [
        leave_mid_stream(url, leaving, next_body(1)),
        leave_whole_body(url, leaving, next_body(2)),
        leave_while_queued(url, leaving, next_body(3), request_ahead(url, leaving)),
    ]


def report_section(runs: list[Disconnect], problems: list[str]) -> list[str]:
    """Markdown lines: one table row per scenario, and the verdict."""
    rows = []
    for d in runs:
        steps = "not counted" if d.steps is None else f"{d.steps} of {d.allowed}"
        if not d.ran:
            steps += " (never started)"
        close = "" if d.close_to_free_ms is None else f"{d.close_to_free_ms:.1f}"
        free = f"{d.cancel_to_free_ms:.1f}" if d.ran and d.cancel_to_free_ms is not None else ""
        n = d.next
        rows.append(
            f"| {d.scenario} | {steps} | {d.steps_after_cancel} | {free} | {close} | HTTP {n.status}, {n.ms:.0f} ms |"
        )
    ahead = [d.steps_ahead for d in runs if d.steps_ahead is not None]
    verdict = "work stopped every time, the next request served" if not problems else "PROBLEMS: " + "; ".join(problems)
    return [
        "## Clients that leave",
        "",
        "Each request would run its max_new_tokens in talker steps (a long, EOS-free request: the",
        "prompt's prefill and one step per frame); the client leaves, and the server's own counters",
        "(GET /health: the worker counts talker forward passes per job and records each job's end)",
        "say how far it got. The client's time runs from its close to /health showing the job over,",
        "polled every 2 ms on an open connection: it adds the server noticing the closed connection",
        "and up to one poll. A job whose client left while it waited is skipped when the worker",
        "reaches it. The suite runs the same scenarios (serve/disconnects.py) and asserts the same",
        "step counts, never the times.",
        "",
        "| the client leaves | talker steps run | after the server saw it leave | "
        "cancel to worker free (server, ms) | close to worker free (client, ms) | next request |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"**{verdict}.**"
        + (
            f" The same request run to its end (the one ahead of the queued client): {ahead[0]} talker steps."
            if ahead
            else ""
        ),
        "",
    ]
