"""Every bad request to `q3tts serve` is a 4xx with a JSON error body naming the field, never
reaches the model, and the server keeps serving; a full queue is a 429."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from serve_helpers import MODEL_ID, served, worker_held  # tests/ on sys.path

MAX_CHARS = 40
GOOD = {
    "model": MODEL_ID,
    "input": "Hi there.",
    "voice": "alice",
    "response_format": "wav",
    "seed": 1,
    "max_new_tokens": 8,
}


def _without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


# (case, JSON body or raw bytes, status, the field the error names)
CATALOGUE = [
    ("unknown voice", {**GOOD, "voice": "zed"}, 400, "voice"),
    ("missing voice", _without("voice"), 400, "voice"),
    ("voice not a string", {**GOOD, "voice": 3}, 400, "voice"),
    ("empty input", {**GOOD, "input": ""}, 400, "input"),
    ("whitespace input", {**GOOD, "input": " \n\t"}, 400, "input"),
    ("missing input", _without("input"), 400, "input"),
    ("input not a string", {**GOOD, "input": ["a"]}, 400, "input"),
    ("oversize input", {**GOOD, "input": "a" * (MAX_CHARS + 1)}, 400, "input"),
    ("lone surrogate in input", b'{"model": "tiny", "voice": "alice", "input": "a\\ud800"}', 400, "input"),
    ("format without encoder", {**GOOD, "response_format": "aac"}, 400, "response_format"),
    ("unknown format", {**GOOD, "response_format": "ogg"}, 400, "response_format"),
    (
        "streaming a whole-file format",
        {**GOOD, "response_format": "flac", "stream_format": "audio"},
        400,
        "stream_format",
    ),
    ("unknown stream_format", {**GOOD, "stream_format": "video"}, 400, "stream_format"),
    ("stream not a boolean", {**GOOD, "stream": "yes"}, 400, "stream"),
    ("negative temperature", {**GOOD, "temperature": -1}, 400, "temperature"),
    ("top_p above 1", {**GOOD, "top_p": 2}, 400, "top_p"),
    ("top_k a string", {**GOOD, "top_k": "50"}, 400, "top_k"),
    ("do_sample a string", {**GOOD, "do_sample": "yes"}, 400, "do_sample"),
    ("repetition_penalty 0", {**GOOD, "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("subtalker_temperature 0", {**GOOD, "subtalker_temperature": 0}, 400, "subtalker_temperature"),
    ("max_new_tokens over the limit", {**GOOD, "max_new_tokens": 51}, 400, "max_new_tokens"),
    ("max_new_tokens 0", {**GOOD, "max_new_tokens": 0}, 400, "max_new_tokens"),
    ("seed a string", {**GOOD, "seed": "1"}, 400, "seed"),
    ("chunk_frames 0", {**GOOD, "chunk_frames": 0}, 400, "chunk_frames"),
    ("speed other than 1", {**GOOD, "speed": 2.0}, 400, "speed"),
    ("unknown language", {**GOOD, "language": "klingon"}, 400, "language"),
    ("unknown field", {**GOOD, "temprature": 0.5}, 400, "temprature"),
    ("instructions not a string", {**GOOD, "instructions": 5}, 400, "instructions"),
    ("malformed JSON", b'{"model": "tiny", "input": ', 400, "body"),
    ("JSON not an object", b"[1, 2]", 400, "body"),
    ("body not UTF-8", b"\xff\xfe\x00", 400, "body"),
    ("body too large", b'{"input": "' + b"a" * (4 * MAX_CHARS + 64 * 1024) + b'"}', 413, "body"),
    ("unknown model", {**GOOD, "model": "tts-1"}, 404, "model"),
    ("missing model", _without("model"), 400, "model"),
]


@pytest.fixture(scope="module")
def cv(checkpoints):
    with served(checkpoints["custom_voice"][1], max_input_chars=MAX_CHARS, max_new_tokens=50, max_queue=1) as s:
        yield s


def _post(url: str, payload, **kw) -> httpx.Response:
    if isinstance(payload, bytes):
        return httpx.post(url, content=payload, headers={"content-type": "application/json"}, timeout=30, **kw)
    return httpx.post(url, json=payload, timeout=30, **kw)


def _assert_error(r: httpx.Response, status: int, param) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    if param is not None:
        assert param in error["message"]  # the message names the field too
    return error


def test_every_bad_request_is_a_4xx_naming_the_field_and_the_server_keeps_serving(cv):
    srv, app, _ = cv
    for case, payload, status, param in CATALOGUE:
        r = _post(srv.url + "/v1/audio/speech", payload)
        try:
            _assert_error(r, status, param)
        except AssertionError as e:
            raise AssertionError(f"{case}: {e}") from None
    assert app.state.worker.stats["accepted"] == 0  # none of them reached the model
    good = _post(srv.url + "/v1/audio/speech", GOOD)
    assert good.status_code == 200 and sf.read(io.BytesIO(good.content))[1] == 24000


def test_the_openai_client_sees_the_field(cv):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=cv[0].url + "/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as e:
            client.audio.speech.create(model=MODEL_ID, voice="zed", input="Hi.")
        assert e.value.status_code == 400 and e.value.param == "voice" and e.value.code == "unknown_voice"
        with pytest.raises(openai.NotFoundError) as e:
            client.audio.speech.create(model="tts-1", voice="alice", input="Hi.")
        assert e.value.param == "model"


def test_other_routes_answer_json_errors(cv):
    url = cv[0].url
    _assert_error(httpx.get(url + "/v1/models/tts-1"), 404, "model")
    _assert_error(httpx.get(url + "/v1/audio/speech"), 405, None)
    _assert_error(httpx.get(url + "/v2/nothing"), 404, None)
    _assert_error(httpx.delete(url + "/v1/voices/voice_x"), 404, "voice_id")
    wav = io.BytesIO()
    sf.write(wav, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    r = httpx.post(url + "/v1/voices", files={"audio_sample": ("a.wav", wav.getvalue())}, data={"text": "Hi."})
    assert _assert_error(r, 400, None)["code"] == "unsupported"  # a custom_voice model clones nothing


def test_a_full_queue_is_a_429_and_the_queued_request_still_completes(cv):
    """--max-queue 1: with the worker busy, one request waits and the next is refused at once."""
    srv, app, _ = cv
    done = {}
    with worker_held(app):
        waiting = threading.Thread(target=lambda: done.setdefault("r", _post(srv.url + "/v1/audio/speech", GOOD)))
        waiting.start()
        deadline = time.monotonic() + 10
        while app.state.worker.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.worker.waiting == 1, "the first request never reached the queue"
        refused = _post(srv.url + "/v1/audio/speech", GOOD)
        error = _assert_error(refused, 429, None)
        assert error["code"] == "queue_full" and "--max-queue" in error["message"]
        assert httpx.get(srv.url + "/health").json()["queue"] == {
            "waiting": 1,
            "waiting_cancelled": 0,
            "max": 1,
            "busy": True,
        }
    waiting.join(30)
    assert done["r"].status_code == 200 and done["r"].content == _post(srv.url + "/v1/audio/speech", GOOD).content


def test_bad_uploads_name_the_field(checkpoints):
    with served(checkpoints["base"][1], max_upload_bytes=100_000, max_ref_seconds=2.0, max_input_chars=MAX_CHARS) as (
        srv,
        app,
        _,
    ):
        url = srv.url + "/v1/voices"

        def wav_bytes(seconds: float) -> bytes:
            buf = io.BytesIO()
            sf.write(buf, np.zeros(int(16000 * seconds), dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
            return buf.getvalue()

        _assert_error(httpx.post(url, data={"text": "Hi."}, files={"other": ("x", b"x")}), 400, "audio_sample")
        _assert_error(httpx.post(url, files={"audio_sample": ("a.wav", b"not audio at all")}), 400, "audio_sample")
        _assert_error(httpx.post(url, files={"audio_sample": ("a.wav", wav_bytes(2.5))}), 400, "audio_sample")
        _assert_error(httpx.post(url, files={"audio_sample": ("a.wav", b"\0" * 200_000)}), 413, "audio_sample")
        long_text = {"text": "a" * (MAX_CHARS + 1)}
        _assert_error(httpx.post(url, files={"audio_sample": ("a.wav", wav_bytes(1))}, data=long_text), 400, "text")
        _assert_error(httpx.post(url, json={"audio_sample": "x"}), 400, "body")
        speech = srv.url + "/v1/audio/speech"
        _assert_error(_post(speech, {**GOOD, "voice": "voice_unknown"}), 400, "voice")
        _assert_error(_post(speech, {**GOOD, "voice": "voice_unknown", "instructions": "calm"}), 400, "voice")
        assert app.state.worker.stats["accepted"] == 0
        ok = httpx.post(url, files={"audio_sample": ("a.wav", wav_bytes(1))}, timeout=60)
        assert ok.status_code == 200 and ok.json()["mode"] == "x_vector_only"
        _assert_error(_post(speech, {**GOOD, "voice": ok.json()["id"], "instructions": "calm"}), 400, "instructions")


def test_a_stopping_worker_cancels_the_waiting_and_refuses_new_jobs_with_503():
    """Shutdown: the job still waiting is cancelled (its handler answers 503 'cancelled'), never
    run, and a job submitted afterwards is refused at once with a 503, not queued."""
    import asyncio

    from q3tts.serve.errors import ApiError
    from q3tts.serve.state import job_error
    from q3tts.serve.worker import Cancelled, Job, Worker

    loop = asyncio.new_event_loop()
    try:
        ran = []
        worker = Worker(model=None, max_queue=2)  # not started: the job stays queued
        waiting = worker.submit(Job(lambda model, job: ran.append(1), loop, "waiting"))
        worker.stop(timeout=1)
        assert waiting.state == "cancelled" and not waiting.ran and ran == []
        event = loop.run_until_complete(waiting.events.get())
        assert event[0] == "error" and isinstance(event[1], Cancelled) and job_error(event[1]).status == 503
        with pytest.raises(ApiError) as refused:
            worker.submit(Job(lambda model, job: ran.append(1), loop, "late"))
        assert refused.value.status == 503 and refused.value.code == "shutting_down"
    finally:
        loop.close()
