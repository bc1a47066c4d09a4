"""Every command that writes ends on SIGINT, SIGTERM or SIGHUP with one line and exit 128 +
signal, leaving nothing half-written: the one implementation, used by convert-ckpt and by the
q3tts commands (synthesize, encode, prepare-data, finetune).

``exit_on_interrupt`` turns SIGTERM/SIGHUP into ``Interrupted`` (as SIGINT is KeyboardInterrupt)
from the command's first instruction, so whatever is being written (a conversion into the cache
on first load, an output file) is cleaned up by the ``finally``/``except`` blocks on the way out,
and the command prints ``PROG: interrupted (SIGTERM); NOTE`` instead of a traceback.
``write_replacing`` writes a file beside its target and renames it into place, removing the
temporary file on any error or signal.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import click

from .output_dir import Interrupted, signals_raise_interrupted


def exit_on_interrupt(prog: str, note: str = "nothing was left half-written") -> Callable:
    """Decorate a click command's function: a signal while it runs is one line on stderr and
    exit 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                with signals_raise_interrupted():
                    return fn(*args, **kwargs)
            except KeyboardInterrupt:
                name, code = "SIGINT", 130
            except Interrupted as e:
                name, code = e.name, e.exit_code
            click.echo(f"{prog}: interrupted ({name}); {note}", err=True)
            sys.exit(code)

        return run

    return wrap


def write_replacing(target: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a hidden file beside ``target`` (same suffix, so writers that go by
    the extension pick the same format), then rename it over ``target``; on any error or signal
    the temporary file is removed and ``target`` is left as it was."""
    target = Path(target)
    tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        write(tmp)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
