"""Options shared by the `q3tts` commands that take --model."""

from __future__ import annotations

import click

no_convert_option = click.option(
    "--no-convert",
    "no_convert",
    is_flag=True,
    help="Refuse an upstream checkpoint instead of converting it once into the conversion cache ($Q3TTS_CACHE).",
)


def exit_code_for(error: BaseException) -> int:
    """2 for a usage error (a bad option value or combination: ValueError/TypeError), 1 when an
    input cannot be used (a file, a checkpoint: OSError, CheckpointError, ConfigError)."""
    from .audio import AudioReadError
    from .checkpoint import CheckpointError
    from .config import ConfigError

    if isinstance(error, (OSError, CheckpointError, ConfigError, AudioReadError)):
        return 1
    return 2
