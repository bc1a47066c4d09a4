"""verify-parity: prove, with numbers, that the standalone model matches upstream qwen-tts."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click

DTYPE_CHOICES = ("fp32", "bf16")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", required=False)
@click.option("--standalone", "standalone_dir", type=click.Path(file_okay=False, exists=True),
              help="Use this converted directory instead of converting SRC.")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(DTYPE_CHOICES),
              help="Dtypes to check (repeatable). Default: fp32 and bf16.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shared inputs.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(src: str | None, standalone_dir: str | None, dtypes: tuple[str, ...], seed: int, debug: bool) -> None:
    """Compare upstream and standalone forwards on SRC (an upstream checkpoint directory or hub
    id). Without SRC, builds the tiny fixtures of all three model types (the embedded default).
    Exits 0 only when every case passes."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        ok = _run(src, standalone_dir, dtypes or DTYPE_CHOICES, seed)
    except Exception as e:  # one line unless --debug
        if debug:
            raise
        click.echo(f"verify-parity: error: {type(e).__name__}: {e}", err=True)
        sys.exit(2)
    sys.exit(0 if ok else 1)


def _run(src, standalone_dir, dtype_names, seed) -> bool:
    from q3tts.convert import convert_checkpoint
    from q3tts.standalone import Qwen3TTS
    from q3tts.standalone.model import resolve_checkpoint_dir

    from .compare import DTYPES
    from .fixtures import MODEL_TYPES, write_upstream_checkpoint
    from .forward_parity import format_table, load_upstream, run_forward_cases

    with tempfile.TemporaryDirectory(prefix="verify-parity-") as work:
        work = Path(work)
        pairs = []
        if src is None:
            click.echo("No SRC given: building the tiny fixtures (base, custom_voice, voice_design).")
            for mt in MODEL_TYPES:
                up = write_upstream_checkpoint(work / f"upstream-{mt}", mt, seed=seed)
                st = work / f"standalone-{mt}"
                convert_checkpoint(up, st)
                pairs.append((mt, up, st))
        else:
            up = resolve_checkpoint_dir(src)
            st = Path(standalone_dir) if standalone_dir else work / "standalone"
            if not standalone_dir:
                convert_checkpoint(up, st)
            pairs.append((Path(up).name, up, st))

        all_ok = True
        for name, up, st in pairs:
            for dn in dtype_names:
                dtype = DTYPES[dn]
                t0 = time.perf_counter()
                upstream = load_upstream(up, dtype)
                standalone = Qwen3TTS.from_pretrained(st, dtype=dtype)
                results = run_forward_cases(upstream, standalone, dtype, seed=seed)
                ok = all(r.passed for r in results)
                all_ok &= ok
                click.echo(f"\n== {name} / {dn}: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - t0:.1f} s)")
                click.echo(format_table(results))
        verdict = "PASS: every forward case matches upstream" if all_ok else "FAIL: some cases differ (see above)"
        click.echo(f"\nverdict: {verdict}")
        return all_ok


if __name__ == "__main__":
    main()
