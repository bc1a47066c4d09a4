"""`q3tts serve MODEL`: load the model once, warm it up, then serve it over HTTP (uvicorn)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from q3tts.standalone.cli_common import POSITIVE_INT, exit_code_for, no_convert_option

from .settings import Limits


def default_model_id(model: str) -> str:
    """The id `model` must name: a hub id as given, a directory by its name."""
    path = Path(model)
    return path.resolve().name if path.exists() else model


@click.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--model-name", default=None, help="The id clients pass as `model` [default: MODEL's directory name or hub id]."
)
@click.option(
    "--dtype",
    type=click.Choice(["keep", "fp32", "bf16", "bf16-mixed", "fp16-mixed"]),
    default="keep",
    show_default=True,
    help="As `q3tts synthesize --dtype`.",
)
@click.option("--fast", is_flag=True, help="Compile the fast path before the port opens (as `synthesize --fast`).")
@no_convert_option
@click.option(
    "--max-queue",
    type=POSITIVE_INT,
    default=Limits.max_queue,
    show_default=True,
    help="Requests waiting behind the running one; more get 429.",
)
@click.option(
    "--max-input-chars",
    type=POSITIVE_INT,
    default=Limits.max_input_chars,
    show_default=True,
    help="Longest `input` (and `instructions`).",
)
@click.option(
    "--max-new-tokens",
    type=POSITIVE_INT,
    default=Limits.max_new_tokens,
    show_default=True,
    help="Most frames a request may generate.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Largest reference recording (POST /v1/voices).",
)
@click.option(
    "--max-ref-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=Limits.max_ref_seconds,
    show_default=True,
    help="Longest reference recording.",
)
@click.option(
    "--max-voices",
    type=POSITIVE_INT,
    default=Limits.max_voices,
    show_default=True,
    help="Registered voices kept in memory.",
)
@click.option(
    "--chunk-frames",
    type=click.IntRange(1, 300),
    default=8,
    show_default=True,
    help="Frames per streamed chunk (a request may override).",
)
@click.option(
    "--first-chunk-frames",
    type=click.IntRange(1, 300),
    default=4,
    show_default=True,
    help="Frames in the first streamed chunk.",
)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT: seconds in-flight requests may finish before they are cancelled.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def serve(model, host, port, model_name, dtype, fast, no_convert, debug, graceful_timeout, **limits) -> None:
    """Serve MODEL (a converted or upstream directory, or a hub id) with OpenAI's speech API:
    POST /v1/audio/speech, GET /v1/models, GET /health, POST /v1/voices."""
    try:
        import uvicorn

        from .app import create_app
        from .settings import Settings
    except ImportError as e:
        click.echo(
            f"q3tts: error: serve needs the web stack ({e.name} is missing): pip install 'qwen3-tts-standalone[serve]'",
            err=True,
        )
        sys.exit(1)
    _configure_logging()
    chunks = {k: limits.pop(k) for k in ("chunk_frames", "first_chunk_frames")}
    limits["max_upload_bytes"] = int(limits.pop("max_upload_mb") * 1024 * 1024)
    settings = Settings(model_id=model_name or default_model_id(model), limits=Limits(**limits), **chunks)
    try:
        loaded = _load(model, dtype, no_convert, fast)
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(exit_code_for(e))
    app = create_app(loaded, settings)
    click.echo(f"serving {settings.model_id!r} ({loaded.config.tts_model_type}) on http://{host}:{port}", err=True)
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="info", timeout_graceful_shutdown=graceful_timeout
    )
    _exit_cleanly_after_shutdown()
    uvicorn.Server(config).run()


def _exit_cleanly_after_shutdown() -> None:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again against the
    handlers it found: make that a clean exit (status 0, one line), not a kill or a traceback."""
    import signal

    def stopped(signum, _frame):
        click.echo(f"q3tts serve: stopped ({signal.Signals(signum).name})", err=True)
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopped)


def _load(model: str, dtype: str, no_convert: bool, fast: bool):
    """The model, loaded, compiled with --fast, and warmed up: the port opens only after this."""
    import time

    from q3tts.standalone.model import Qwen3TTS
    from q3tts.standalone.precision import parse_mode

    from .synth import warm_up

    start = time.perf_counter()
    loaded = Qwen3TTS.from_pretrained(model, dtype=parse_mode(dtype), convert=not no_convert)
    click.echo(f"loaded {model} in {time.perf_counter() - start:.1f} s", err=True)
    if fast:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        click.echo("compiling the fast path ...", err=True)
        loaded.compile_fast(warm_up=(1,))
        click.echo(f"fast path ready after {loaded.fast_engine().compile_seconds:.1f} s", err=True)
    click.echo(f"warmed up in {warm_up(loaded):.2f} s", err=True)
    return loaded


def _configure_logging() -> None:
    """The access log as bare JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("q3tts.serve.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
