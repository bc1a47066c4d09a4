"""convert-ckpt SRC DST: upstream qwen-tts checkpoint -> standalone checkpoint directory."""

from __future__ import annotations

import sys

import click
import torch

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="keep", show_default=True,
              help="Storage dtype of the converted weights.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(src: str, dst: str, dtype: str, force: bool, debug: bool) -> None:
    """Convert the upstream checkpoint SRC (a directory or a hub repo id) into DST."""
    from q3tts.standalone.model import resolve_checkpoint_dir

    from .convert import ConversionError, convert_checkpoint

    try:
        src_dir = resolve_checkpoint_dir(src)
        s = convert_checkpoint(src_dir, dst, dtype=DTYPES[dtype], force=force)
    except (ConversionError, ValueError, OSError) as e:
        if debug:
            raise
        click.echo(f"convert-ckpt: error: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"converted {s.tensors_in} tensors -> {s.tensors_out} ({s.bytes_out / 1e6:.1f} MB) "
        f"in {s.seconds:.2f} s: {s.dst}"
    )


if __name__ == "__main__":
    main()
