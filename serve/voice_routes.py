"""Voice clones: POST /v1/voices (also /v1/audio/voices, OpenAI's path) takes a multipart form
with the reference recording (``audio_sample``, or ``file``), its transcript (``text``; without
it the voice is x-vector only) and an optional ``name``; it returns the voice object whose ``id``
is then a ``voice`` for /v1/audio/speech. GET lists them, DELETE /v1/voices/{id} forgets one."""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import synth
from .errors import ApiError, bad_field
from .state import ClientGone, job_error, log_fields, server, wait_for
from .voices import decode_upload, new_voice, voice_id
from .worker import Job

FORM_OVERHEAD = 1024 * 1024  # the form's other fields and the multipart framing


async def create_voice(request: Request) -> Response:
    state = server(request)
    limits = state.settings.limits
    if state.info.kind != "base":
        raise ApiError(
            400, f"this model is {state.info.kind!r}; cloning a voice needs a base model", None, "unsupported"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_upload_bytes + FORM_OVERHEAD:
        raise ApiError(
            413,
            f"the upload has {length} bytes; the limit is {limits.max_upload_bytes} (--max-upload-mb)",
            "audio_sample",
            "too_large",
        )
    data, text, name = await _form(request, limits)
    loop = asyncio.get_running_loop()
    wav, sr = await loop.run_in_executor(None, decode_upload, data, limits)
    vid = voice_id(data, text)
    log_fields(request, voice=vid)
    known = state.voices.get(vid)
    if known is not None:
        return JSONResponse(known.describe())
    state.voices.check_room(vid)
    job = state.worker.submit(Job(synth.register(wav, sr, text), loop, "voice"))
    try:
        prompt = await wait_for(request, job, job.result())
    except ClientGone:
        return Response(status_code=499)
    except (ValueError, TypeError) as e:
        raise bad_field("audio_sample", f"audio_sample cannot be cloned: {e}") from e
    except Exception as e:  # noqa: BLE001
        raise job_error(e) from e
    voice = new_voice(vid, name, text, len(wav) / sr)
    voice.prompt = prompt
    state.voices.add(voice)
    return JSONResponse(voice.describe())


async def _form(request: Request, limits) -> tuple[bytes, str | None, str | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(
            400, f"body: expected multipart/form-data, got {kind or 'no content type'!r}", "body", "invalid_form"
        )
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=limits.max_upload_bytes + 1)
    except Exception as e:  # noqa: BLE001 - starlette's parser errors: a malformed form
        raise ApiError(400, f"body: expected a multipart form ({e})", "body", "invalid_form") from None
    upload = form.get("audio_sample") or form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_field("audio_sample", "audio_sample is required (a file field of the multipart form)")
    data = await upload.read(limits.max_upload_bytes + 1)
    fields = {}
    for key in ("text", "name"):
        value = form.get(key)
        if value is not None and not isinstance(value, str):
            raise bad_field(key, f"{key} must be a text field")
        if value is not None and len(value) > limits.max_input_chars:
            raise bad_field(key, f"{key} has {len(value)} characters; the limit is {limits.max_input_chars}")
        fields[key] = value.strip() if value else None
    return data, fields["text"], fields["name"]


async def list_voices(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [v.describe() for v in server(request).voices.list()]})


async def delete_voice(request: Request) -> Response:
    vid = request.path_params["voice_id"]
    if not server(request).voices.remove(vid):
        raise ApiError(404, f"voice_id {vid!r} is not registered", "voice_id", "unknown_voice")
    return JSONResponse({"id": vid, "object": "audio.voice.deleted", "deleted": True})
