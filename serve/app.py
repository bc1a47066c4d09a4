"""The web app: routes, OpenAI-shaped errors, the worker's life, the access log."""

from __future__ import annotations

import contextlib
import time

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import speech, voice_routes
from .accesslog import AccessLog
from .errors import ApiError
from .formats import available_formats
from .schema import ModelInfo
from .settings import Settings
from .state import ServerState, log_fields, server
from .synth import model_info
from .voices import VoiceStore
from .worker import Worker


def create_app(model, settings: Settings, formats: tuple[str, ...] | None = None):
    """The ASGI app serving ``model`` (loaded, warmed up): FastAPI wrapped in the access log.
    The worker thread starts with the app's lifespan and stops with it (queued and running jobs
    cancelled)."""
    info = model_info(model, available_formats() if formats is None else formats)
    state = ServerState(
        settings, info, Worker(model, settings.limits.max_queue), VoiceStore(settings.limits.max_voices)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.worker.start()
        try:
            yield
        finally:
            state.worker.stop(timeout=30)

    app = FastAPI(title="q3tts serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.state.started = time.time()
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_api_route("/v1/audio/speech", speech.speech, methods=["POST"])
    for path in ("/v1/voices", "/v1/audio/voices"):
        app.add_api_route(path, voice_routes.create_voice, methods=["POST"])
        app.add_api_route(path, voice_routes.list_voices, methods=["GET"])
        app.add_api_route(path + "/{voice_id}", voice_routes.delete_voice, methods=["DELETE"])
    wrapped = AccessLog(app)
    wrapped.state = state  # tests and the load test reach the worker through it
    return wrapped


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    log_fields(request, error={"param": error.param, "code": error.code})
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the same JSON shape."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    api = ApiError(error.status_code, f"{request.method} {request.url.path}: {error.detail}", None, code)
    return await _api_error(request, api)


def _model_object(settings: Settings, info: ModelInfo, created: float) -> dict:
    return {"id": settings.model_id, "object": "model", "created": int(created), "owned_by": "q3tts", "type": info.kind}


async def list_models(request: Request) -> JSONResponse:
    state = server(request)
    return JSONResponse(
        {"object": "list", "data": [_model_object(state.settings, state.info, request.app.state.started)]}
    )


async def get_model(request: Request) -> JSONResponse:
    state = server(request)
    mid = request.path_params["model_id"]
    if mid != state.settings.model_id:
        raise ApiError(
            404,
            f"model {mid!r} is not served here; this server serves {state.settings.model_id!r}",
            "model",
            "model_not_found",
        )
    return JSONResponse(_model_object(state.settings, state.info, request.app.state.started))


async def health(request: Request) -> JSONResponse:
    """Liveness and load: the queue, the running job, what the worker has done (jobs by outcome,
    talker steps in all and after a cancel), and the last job finished and the last cancelled."""
    state = server(request)
    worker = state.worker
    return JSONResponse(
        {
            "status": "ok" if worker.accepting else "stopping",
            "model": state.settings.model_id,
            "type": state.info.kind,
            "formats": list(state.info.formats),
            "speakers": list(state.info.speakers),
            "queue": {
                "waiting": worker.waiting,
                "waiting_cancelled": worker.waiting_cancelled,
                "max": worker.max_queue,
                "busy": worker.current is not None,
            },
            "jobs": dict(worker.stats),
            "talker_steps_counted": worker.counts_steps,
            "last_job": worker.last_job,
            "last_cancelled": worker.last_cancelled,
            "voices": len(state.voices.list()),
        }
    )
