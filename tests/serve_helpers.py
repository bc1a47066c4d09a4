"""Helpers for the `q3tts serve` tests: a server on a background thread for a tiny checkpoint,
and `q3tts synthesize` run in this process (click's runner) for the audio to compare with."""

from __future__ import annotations

import contextlib
import threading

import torch
from click.testing import CliRunner

from q3tts.serve.app import create_app
from q3tts.serve.background import BackgroundServer
from q3tts.serve.settings import Limits, Settings
from q3tts.serve.synth import warm_up
from q3tts.serve.worker import Job
from q3tts.standalone import Qwen3TTS

MODEL_ID = "tiny"


@contextlib.contextmanager
def served(model_dir, **limits):
    """(server, app, model): a freshly loaded model, warmed up, served on 127.0.0.1:<free port>."""
    model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32)
    warm_up(model)
    app = create_app(model, Settings(model_id=MODEL_ID, limits=Limits(**limits)))
    with BackgroundServer(app) as srv:
        yield srv, app, model


def synthesize(*args) -> tuple[int, bytes, str]:
    """`q3tts synthesize ARGS` in this process: (exit code, stdout bytes, stderr)."""
    from q3tts.standalone.cli import main

    result = CliRunner().invoke(main, ["synthesize", *map(str, args)])
    return result.exit_code, result.stdout_bytes, result.stderr


def count_talker_steps(model, monkeypatch, tag=None) -> list:
    """A list that grows by one at every talker step (prefill included) of ``model``: ``tag()``
    if given (e.g. the running job's request id), else 1."""
    steps: list = []
    real = model.talker.step

    def counting(*a, **k):
        steps.append(1 if tag is None else tag())
        return real(*a, **k)

    monkeypatch.setattr(model.talker, "step", counting)
    return steps


@contextlib.contextmanager
def worker_held(app):
    """Occupy the server's one worker until the block ends (a job that waits on an event), so
    requests sent meanwhile queue behind it."""
    import asyncio

    release, running = threading.Event(), threading.Event()

    def hold(model, job):
        running.set()
        release.wait(30)

    loop = asyncio.new_event_loop()
    try:
        app.state.worker.submit(Job(hold, loop, "hold"))
        assert running.wait(10), "the worker did not take the holding job"
        yield
    finally:
        release.set()
        loop.close()
