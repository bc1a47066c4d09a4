"""What the routes share (settings, model info, the worker, the voices) and how a handler waits
for its job while watching for the client to leave."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.requests import Request

from .errors import ApiError
from .schema import ModelInfo
from .settings import Settings
from .voices import VoiceStore
from .worker import Cancelled, Job, Worker


@dataclass
class ServerState:
    settings: Settings
    info: ModelInfo
    worker: Worker
    voices: VoiceStore


def server(request: Request) -> ServerState:
    return request.app.state.server


class ClientGone(Exception):
    """The client disconnected before the response could start."""


def request_log(scope) -> dict:
    """This request's access-log fields (accesslog.AccessLog writes them as one line)."""
    return scope.setdefault("state", {}).setdefault("log", {})


def log_fields(request: Request, **fields) -> None:
    request_log(request.scope).update(fields)


async def _disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_for(request: Request, job: Job, awaitable):
    """Await ``awaitable`` (the job's result or first event); if the client leaves first, cancel
    the job (a queued job never starts) and raise ClientGone."""
    watcher = asyncio.ensure_future(_disconnect(request))
    getter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({watcher, getter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself is cancelled (the server's shutdown timed out)
        getter.cancel()
        job.cancel()
        raise
    finally:
        watcher.cancel()
    if getter in done:
        return getter.result()
    getter.cancel()
    job.cancel()
    raise ClientGone


def job_error(error: BaseException) -> ApiError:
    """A job's exception as the response it deserves."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, Cancelled):
        return ApiError(
            503, "the request was cancelled (the server is shutting down)", None, "cancelled", "server_error"
        )
    if isinstance(error, (ValueError, TypeError)):  # the model refused an input the schema let through
        return ApiError(400, str(error), None, "invalid_value")
    return ApiError(500, f"synthesis failed: {type(error).__name__}: {error}", None, "internal_error", "server_error")


async def json_body(request: Request, limit: int):
    """The parsed JSON body; a body over ``limit`` bytes is a 413, malformed JSON a 400 naming ``body``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the body has {length} bytes; the limit is {limit}", "body", "too_large")
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"the body has {len(raw)} bytes; the limit is {limit}", "body", "too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"body: malformed JSON ({e})", "body", "invalid_json") from None
