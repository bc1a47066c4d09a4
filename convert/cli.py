"""convert-ckpt SRC DST: upstream qwen-tts checkpoint <-> standalone checkpoint directory."""

from __future__ import annotations

import sys

import click

from q3tts.standalone.dtypes import parse_dtype

DTYPE_CHOICES = ("keep", "bf16", "fp16", "fp32")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="keep", show_default=True,
              help="Storage dtype of floating-point tensors.")
@click.option("--shard-size", default=None, metavar="SIZE", help="Split the weights into shards of at most SIZE (e.g. 2GB).")
@click.option("--force", is_flag=True, help="Replace DST if it exists (only once the new one is complete).")
@click.option("--dry-run", is_flag=True, help="Print the plan (every source tensor -> target) and write nothing.")
@click.option("--to", "to", type=click.Choice(["standalone", "upstream"]), default="standalone", show_default=True,
              help="Direction: upstream -> standalone, or standalone -> upstream (the reverse of the same map).")
@click.option("--progress/--no-progress", default=None, help="Progress bar over bytes (default: when stderr is a terminal).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(src, dst, dtype, shard_size, force, dry_run, to, progress, debug) -> None:
    """Convert the checkpoint SRC (a directory or a hub repo id) into DST."""
    from q3tts.standalone.checkpoint import CheckpointError
    from q3tts.standalone.model import resolve_checkpoint_dir

    from .convert import ConversionError, convert_checkpoint
    from .stream_io import parse_size

    try:
        shard_bytes = parse_size(shard_size) if shard_size else None
        src_dir = resolve_checkpoint_dir(src)
        if progress is None:
            progress = sys.stderr.isatty()
        s = convert_checkpoint(src_dir, dst, dtype=parse_dtype(dtype), force=force, shard_size=shard_bytes, to=to,
                               dry_run=dry_run, progress=progress)
    except (ConversionError, CheckpointError, ValueError, OSError) as e:
        if debug:
            raise
        click.echo(f"convert-ckpt: error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("convert-ckpt: interrupted; nothing was written to DST", err=True)
        sys.exit(130)
    if dry_run:
        for line in s.plan:
            click.echo(line)
        click.echo(f"dry run: {s.tensors_in} tensors -> {s.tensors_out} ({s.bytes_out / 1e6:.1f} MB), nothing written")
        return
    click.echo(
        f"converted {s.tensors_in} tensors ({s.bytes_in / 1e6:.1f} MB) -> {s.tensors_out} tensors "
        f"({s.bytes_out / 1e6:.1f} MB) in {len(s.files)} file(s), {s.seconds:.2f} s: {s.dst}"
    )


if __name__ == "__main__":
    main()
