"""The one thread that runs the model, fed by a bounded queue.

The model is not thread-safe (neither is upstream's), so every job (a synthesis, a stream, a
voice registration) runs on this thread, one at a time. ``submit`` never blocks: a full queue is
a 429 and a stopping server a 503. A job is cancelled by its request handler when the client goes
away: a queued job is then skipped, a running one stops before its next talker step (``Job.check``
once per frame, from a hook on the decode loop), whole-body and streamed alike.

The worker also counts the talker's forward passes per job (a forward hook on
``talker.codec_head``: the prompt prefill and every decode step of the exact path; the compiled
path is not counted, ``Job.steps`` stays None) and, for a job cancelled by its handler, how many
ran after the cancel and how long the worker took to be free again (``Worker.last_job`` and
``last_cancelled``, shown by GET /health): the figures that show a client leaving stops the work.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable

from .errors import ApiError


class Cancelled(Exception):
    """The job's client went away (or the server is shutting down)."""


class Job:
    """One unit of model work. ``fn(model, job)`` runs on the worker thread; it may ``emit``
    items (stream chunks) and must call ``check`` between steps. The request handler awaits
    ``result()`` or iterates ``items()`` on the event loop."""

    def __init__(
        self,
        fn: Callable[[Any, Job], Any],
        loop: asyncio.AbstractEventLoop,
        label: str = "job",
        request_id: str | None = None,
    ):
        self.fn = fn
        self.loop = loop
        self.label = label
        self.request_id = request_id
        self.events: asyncio.Queue = asyncio.Queue()
        self._cancel = threading.Event()
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.finished: float | None = None
        self.state = "queued"  # -> running -> done | cancelled | failed
        self.frames = 0
        self.steps: int | None = None  # talker forward passes run for this job (None: not counted)
        self.cancelled_at: float | None = None  # when cancel() was first called
        self.steps_at_cancel: int | None = None
        self.ran = False  # whether the worker started it (a job cancelled while queued never runs)

    # --- worker side ---------------------------------------------------------------------
    def emit(self, item) -> None:
        self.post(("item", item))

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled

    def post(self, event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    # --- handler side --------------------------------------------------------------------
    def cancel(self) -> None:
        if not self._cancel.is_set():
            self.cancelled_at = time.perf_counter()
            self.steps_at_cancel = self.steps
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def result(self):
        while True:
            kind, payload = await self.events.get()
            if kind == "done":
                return payload
            if kind == "error":
                raise payload

    async def items(self):
        while True:
            kind, payload = await self.events.get()
            if kind == "item":
                yield payload
            elif kind == "done":
                return
            else:
                raise payload

    @property
    def queue_ms(self) -> float | None:
        return None if self.started is None else (self.started - self.submitted) * 1000

    def summary(self) -> dict:
        """For a finished job: how it ended, the talker steps it ran (None where not counted) and,
        if its handler cancelled it, the steps after the cancel and the milliseconds from the
        cancel to the worker being done with it."""
        cancelled = self.cancelled_at is not None and self.finished is not None
        after = None if self.steps is None or not cancelled else self.steps - (self.steps_at_cancel or 0)
        return {
            "label": self.label,
            "request_id": self.request_id,
            "state": self.state,
            "ran": self.ran,
            "steps": self.steps,
            "steps_after_cancel": after,
            "cancel_to_free_ms": round((self.finished - self.cancelled_at) * 1000, 1) if cancelled else None,
        }


class Worker:
    def __init__(self, model, max_queue: int):
        self.model = model
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stats: Counter = Counter()
        self.current: Job | None = None
        self.accepting = True
        self.last_job: dict | None = None  # Job.summary of the last job finished
        self.last_cancelled: dict | None = None  # and of the last one cancelled
        self._hooks: list = []
        self.counts_steps = False  # whether Job.steps is counted (the exact path; see _install_step_counter)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="q3tts-serve-worker", daemon=True)
        counter = self._install_step_counter()
        self.counts_steps = counter is not None
        self._hooks = [h for h in (self._install_frame_check(), counter) if h is not None]
        self._thread.start()

    def _install_step_counter(self):
        """Count the running job's talker forward passes: ``talker.codec_head`` runs once per
        Talker.step (the prefill and each decode step of the exact path). The compiled fast path
        runs its decode steps inside a graph, where a hook would not see them: there nothing is
        counted (None), rather than a wrong number. Returns the hook's handle, or None."""
        module = getattr(getattr(self.model, "talker", None), "codec_head", None)
        fast = getattr(self.model, "fast_engine", None)
        if module is None or (fast is not None and fast() is not None):
            return None

        def count(_module, _inputs, _output):
            job = self.current
            if job is not None and threading.current_thread() is self._thread:
                job.steps += 1

        return module.register_forward_hook(count)

    def _install_frame_check(self):
        """Check the running job for cancellation once per generated frame, on every path (exact
        and compiled, whole-body and streamed): the decode loop embeds each frame's group-0 code
        through ``talker.codec_embedding``, an eager module call in both, so a forward pre-hook
        there runs before every talker step. Returns the hook's handle (None without that module)."""
        module = getattr(getattr(self.model, "talker", None), "codec_embedding", None)
        if module is None:
            return None

        def check(_module, _inputs):
            job = self.current
            if job is not None and threading.current_thread() is self._thread:
                job.check()

        return module.register_forward_pre_hook(check)

    def submit(self, job: Job) -> Job:
        if not self.accepting:
            raise ApiError(503, "the server is shutting down", None, "shutting_down", "server_error")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count("rejected")
            raise ApiError(
                429,
                f"the queue is full ({self.max_queue} requests waiting, --max-queue); retry later",
                None,
                "queue_full",
                "rate_limit_error",
            ) from None
        self._count("accepted")
        return job

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def waiting_cancelled(self) -> int:
        """Waiting jobs whose client has already left (they will be skipped, never started)."""
        with self._queue.mutex:
            return sum(1 for job in self._queue.queue if job is not None and job.cancelled)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        job.started = time.perf_counter()
        job.steps = 0 if self.counts_steps else None
        if job.cancelled:  # the client left while the job waited: never start it
            job.state = "cancelled"
            job.finished = job.started
            self._finished(job)
            job.post(("error", Cancelled()))
            return
        job.state, job.ran = "running", True
        self.current = job
        try:
            result = job.fn(self.model, job)
        except Cancelled as e:
            job.state, event = "cancelled", ("error", e)
        except Exception as e:  # noqa: BLE001 - the handler turns it into a response
            job.state, event = "failed", ("error", e)
        else:
            job.state, event = "done", ("done", result)
        finally:
            self.current = None
        job.finished = time.perf_counter()
        self._finished(job)
        job.post(event)

    def _finished(self, job: Job) -> None:
        with self._lock:
            self.stats[job.state] += 1
            if job.steps is not None:
                self.stats["talker_steps"] += job.steps
            self.last_job = job.summary()
            if job.state == "cancelled" and job.cancelled_at is not None:
                self.last_cancelled = self.last_job
                self.stats["talker_steps_after_cancel"] += self.last_job["steps_after_cancel"] or 0

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new jobs, cancel the waiting ones and the running one, and join the thread."""
        self.accepting = False
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                self._run(job)  # marks it cancelled and wakes its handler
        if self.current is not None:
            self.current.cancel()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
