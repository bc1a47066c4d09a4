"""The structured access log: one JSON object per request on the ``q3tts.serve.access`` logger.

Fields: ts (UTC, ISO 8601), request_id (the client's X-Request-Id, else a new one; echoed in the
response), client, method, path, status (499: the client left before the response started),
bytes (body bytes sent), ms (until the last byte), ttfb_ms (until the first body byte), and what
the handler adds: voice, format, stream, chars, seed, queue_ms, frames, outcome (done, failed,
cancelled, disconnected), error (the error's param and code).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone

from .state import request_log

LOGGER = logging.getLogger("q3tts.serve.access")


class AccessLog:
    """ASGI middleware around the app."""

    def __init__(self, app, logger: logging.Logger = LOGGER):
        self.app = app
        self.logger = logger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = _request_id(scope)
        request_log(scope)["request_id"] = rid  # for the handler (its job carries it)
        seen = {"status": None, "bytes": 0, "first": None}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message = dict(message, headers=[*message.get("headers", []), (b"x-request-id", rid.encode())])
            elif message["type"] == "http.response.body" and message.get("body"):
                if seen["first"] is None:
                    seen["first"] = time.perf_counter()
                seen["bytes"] += len(message["body"])
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            self.logger.info(json.dumps(_record(scope, rid, start, seen), default=str))


def _request_id(scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and 0 < len(value) <= 128:
            return value.decode("latin-1")
    return uuid.uuid4().hex


def _record(scope, rid: str, start: float, seen: dict) -> dict:
    client = scope.get("client")
    record = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "request_id": rid,
        "client": f"{client[0]}:{client[1]}" if client else None,
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": seen["status"] or 499,
        "bytes": seen["bytes"],
        "ms": round((time.perf_counter() - start) * 1000, 1),
        "ttfb_ms": None if seen["first"] is None else round((seen["first"] - start) * 1000, 1),
    }
    record.update(request_log(scope))
    return record
