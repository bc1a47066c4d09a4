"""Options shared by the `q3tts` commands that take --model."""

from __future__ import annotations

import click

no_convert_option = click.option(
    "--no-convert", "no_convert", is_flag=True,
    help="Refuse an upstream checkpoint instead of converting it once into the conversion cache ($Q3TTS_CACHE).",
)
