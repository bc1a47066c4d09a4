"""POST /v1/audio/speech: whole bodies through the worker, or chunks as they are generated."""

from __future__ import annotations

import asyncio
import base64
import json

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import synth
from .formats import MEDIA_TYPES, encode, streaming_wav_header
from .schema import parse_speech
from .state import ClientGone, job_error, json_body, log_fields, request_log, server, wait_for
from .worker import Job

# A JSON body bigger than this is refused before parsing: the text limit in UTF-8 plus room for the other fields.
BODY_OVERHEAD = 64 * 1024


async def speech(request: Request) -> Response:
    state = server(request)
    body = await json_body(request, 4 * state.settings.limits.max_input_chars + BODY_OVERHEAD)
    req = parse_speech(body, state.settings, state.info, state.voices)
    log_fields(
        request,
        voice=req.speaker or req.voice_id,
        format=req.response_format,
        stream=req.stream_format,
        chars=len(req.text),
        seed=req.seed,
    )
    loop = asyncio.get_running_loop()
    make = synth.whole if req.stream_format is None else synth.stream
    rid = request_log(request.scope).get("request_id")
    job = state.worker.submit(Job(make(req, state.voices), loop, "speech", request_id=rid))
    try:
        if req.stream_format is None:
            wav = await wait_for(request, job, job.result())
            data = await loop.run_in_executor(None, encode, wav, state.info.sample_rate, req.response_format)
            _log_job(request, job)
            return Response(data, media_type=MEDIA_TYPES[req.response_format])
        first = await wait_for(request, job, job.events.get())
    except ClientGone:
        _log_job(request, job, status=499)
        log_fields(request, outcome="disconnected")  # the job is cancelled: skipped, or stopped at its next frame
        return Response(status_code=499)
    except Exception as e:  # noqa: BLE001 - the job's error as a response
        raise job_error(e) from e
    if first[0] == "error":
        raise job_error(first[1]) from first[1]
    media = "text/event-stream" if req.stream_format == "sse" else MEDIA_TYPES[req.response_format]
    return JobStream(job, _stream_body(request, job, first, req), media_type=media)


class JobStream(StreamingResponse):
    """A streamed body tied to its job: however the response ends (done, the client left, the
    server stops), the job is cancelled, so the talker takes no step for nobody."""

    def __init__(self, job: Job, content, media_type: str):
        super().__init__(content, media_type=media_type)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.job.state not in ("done", "failed"):
                self.job.cancel()
                request_log(scope)["outcome"] = "disconnected"
            await self.body_iterator.aclose()


def _log_job(request: Request, job: Job, **extra) -> None:
    log_fields(request, queue_ms=_ms(job.queue_ms), frames=job.frames, outcome=job.state, **extra)


def _ms(value):
    return None if value is None else round(value, 1)


async def _events(job: Job, first):
    """The job's chunks, starting from the ``first`` event already taken from its queue."""
    kind, payload = first
    if kind == "done":
        return
    yield payload
    async for item in job.items():
        yield item


async def _stream_body(request: Request, job: Job, first, req):
    """The response body: a wav header then PCM, raw PCM, or SSE events carrying either. Ends
    early (cancelling the job) when the client leaves or the server stops."""
    sse = req.stream_format == "sse"
    header = streaming_wav_header(server(request).info.sample_rate) if req.response_format == "wav" else b""
    sent = 0
    _log_job(request, job)
    try:
        async for chunk in _events(job, first):
            piece = header + chunk
            header = b""
            sent += len(chunk)
            yield _sse("speech.audio.delta", audio=base64.b64encode(piece).decode()) if sse else piece
        if sse:
            yield _sse("speech.audio.done", usage={"output_frames": job.frames, "output_samples": sent // 2})
    except Exception:  # noqa: BLE001 - the status is sent: end the body short, the log says why
        job.cancel()
    finally:
        job.cancel()  # no-op when the job is done; stops the talker when the client left
        _log_job(request, job)


def _sse(kind: str, **fields) -> bytes:
    return f"data: {json.dumps({'type': kind, **fields})}\n\n".encode()
