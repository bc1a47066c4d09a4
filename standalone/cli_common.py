"""Options shared by the `q3tts` commands that take --model, the exit codes, and the group that
prints click's own usage errors on one line."""

from __future__ import annotations

import sys

import click

# What torch.manual_seed accepts; outside it torch says "Overflow when unpacking long long".
SEED = click.IntRange(-(2**63), 2**64 - 1)
POSITIVE_INT = click.IntRange(min=1)


class InputFileError(ValueError):
    """A file named by an option exists but cannot be used (its content is wrong): exit 1."""


class OneLineErrors(click.Group):
    """click's usage errors (a missing option, a value of the wrong type, an unknown option) as
    one line on stderr and exit 2, the same shape as the commands' own errors: a server log or a
    script's caller sees one line naming the option, not the usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `q3tts`: the help text, as click shows it
                e.show()
                sys.exit(e.exit_code)
            where = e.ctx.command_path if e.ctx is not None else "q3tts"
            message = " ".join(e.format_message().split())
            click.echo(f"q3tts: error: {message} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"q3tts: error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is click's exit code (--help returns 0)


no_convert_option = click.option(
    "--no-convert",
    "no_convert",
    is_flag=True,
    help="Refuse an upstream checkpoint instead of converting it once into the conversion cache ($Q3TTS_CACHE).",
)


def exit_code_for(error: BaseException) -> int:
    """2 for a usage error (a bad option value or combination: ValueError/TypeError), 1 when an
    input cannot be used (a file, a checkpoint: OSError, CheckpointError, ConfigError; or work
    whose estimated memory is above the cap: WorkTooLarge)."""
    from .audio import AudioReadError
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .work_memory import WorkTooLarge

    if isinstance(error, (OSError, CheckpointError, ConfigError, AudioReadError, InputFileError, WorkTooLarge)):
        return 1
    return 2
