"""One streamed speech request timed from the client: its status, the request id the server
echoed, a digest of the audio, the time to the first audio byte and to the last."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass


@dataclass
class Result:
    request_id: str
    seed: int
    status: int
    echoed_id: str | None
    audio_sha256: str
    audio_bytes: int
    ttfb_ms: float | None
    ms: float


def one_request(client, url: str, body: dict, request_id: str) -> Result:
    start = time.perf_counter()
    first = None
    digest, size = hashlib.sha256(), 0
    with client.stream("POST", url + "/v1/audio/speech", json=body, headers={"x-request-id": request_id}) as r:
        for chunk in r.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter()
            digest.update(chunk)
            size += len(chunk)
    end = time.perf_counter()
    return Result(
        request_id,
        body["seed"],
        r.status_code,
        r.headers.get("x-request-id"),
        digest.hexdigest(),
        size,
        None if first is None else (first - start) * 1000,
        (end - start) * 1000,
    )
