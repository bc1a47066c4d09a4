"""convert-ckpt SRC DST: upstream qwen-tts checkpoint <-> standalone checkpoint directory.
convert-ckpt --check DIR: re-hash a converted directory against its manifest."""

from __future__ import annotations

import sys

import click

from q3tts.standalone.interrupts import exit_on_interrupt

DTYPE_CHOICES = ("keep", "bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src")
@click.argument("dst", required=False, type=click.Path(file_okay=False))
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default="keep",
    show_default=True,
    help="Storage dtype of floating-point tensors. bf16-mixed / fp16-mixed: half precision for the big "
    "linears and the embeddings, fp32 for norms, logits heads, the speech tokenizer and the speaker encoder "
    "(fp16-mixed also keeps the MLP down projections fp32); the loader restores the split.",
)
@click.option(
    "--shard-size", default=None, metavar="SIZE", help="Split the weights into shards of at most SIZE (e.g. 2GB)."
)
@click.option("--force", is_flag=True, help="Replace DST if it exists (only once the new one is complete).")
@click.option("--dry-run", is_flag=True, help="Print the plan (every source tensor -> target) and write nothing.")
@click.option(
    "--to",
    "to",
    type=click.Choice(["standalone", "upstream", "gguf"]),
    default="standalone",
    show_default=True,
    help="Direction: upstream -> standalone, standalone -> upstream (the reverse of the same map), "
    "or upstream -> qwentts.cpp GGUF (talker + codec files).",
)
@click.option(
    "--quant",
    type=click.Choice(["F32", "F16", "BF16", "Q8_0", "Q4_K_M"], case_sensitive=False),
    default="F32",
    show_default=True,
    help="With --to gguf: storage type (qwentts.cpp's policy keeps norms, codebooks, ... F32). Q4_K_M is "
    "qwentts.cpp's 4-bit variant (Q4_K, embeddings Q6_K), encoded by the ggml of its binding ([peers] extra).",
)
@click.option(
    "--check",
    "check",
    is_flag=True,
    help="Re-hash every file of the converted directory SRC against its manifest; exit 0 only if all match.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar over bytes (default: when stderr is a terminal)."
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@exit_on_interrupt("convert-ckpt", "nothing was written to DST")
def main(src, dst, dtype, shard_size, force, dry_run, to, quant, check, progress, debug) -> None:
    """Convert the checkpoint SRC (a directory or a hub repo id) into DST."""
    from q3tts.standalone.checkpoint import CheckpointError
    from q3tts.standalone.conversion import ConversionError, convert_checkpoint
    from q3tts.standalone.model import resolve_checkpoint_dir
    from q3tts.standalone.precision import parse_mode
    from q3tts.standalone.safetensors_writer import parse_size

    if check:
        sys.exit(_check(src, debug))
    try:
        if dst is None:
            raise ConversionError("missing DST (convert-ckpt SRC DST), or pass --check to check SRC")
        shard_bytes = parse_size(shard_size) if shard_size else None
        src_dir = resolve_checkpoint_dir(src)
        if progress is None:
            progress = sys.stderr.isatty()
        if to == "gguf":
            sys.exit(_to_gguf(src_dir, dst, quant, force, dry_run, debug))
        s = convert_checkpoint(
            src_dir,
            dst,
            dtype=parse_mode(dtype),
            force=force,
            shard_size=shard_bytes,
            to=to,
            dry_run=dry_run,
            progress=progress,
            say=lambda m: click.echo(f"convert-ckpt: {m}", err=True),
        )
    except (ConversionError, CheckpointError, ValueError, OSError) as e:
        if debug:
            raise
        click.echo(f"convert-ckpt: error: {e}", err=True)
        sys.exit(1)
    if dry_run:
        for line in s.plan:
            click.echo(line)
        click.echo(f"dry run: {s.tensors_in} tensors -> {s.tensors_out} ({s.bytes_out / 1e6:.1f} MB), nothing written")
        return
    click.echo(
        f"converted {s.tensors_in} tensors ({s.bytes_in / 1e6:.1f} MB) -> {s.tensors_out} tensors "
        f"({s.bytes_out / 1e6:.1f} MB) in {len(s.files)} file(s), {s.seconds:.2f} s: {s.dst}"
    )


def _to_gguf(src_dir, dst, quant: str, force: bool, dry_run: bool, debug: bool) -> int:
    from q3tts.standalone.checkpoint import CheckpointError
    from q3tts.standalone.gguf_conversion import GGUFConversionError, convert_to_gguf

    try:
        s = convert_to_gguf(
            src_dir,
            dst,
            quant=quant,
            force=force,
            dry_run=dry_run,
            say=lambda m: click.echo(f"convert-ckpt: {m}", err=True),
        )
    except (GGUFConversionError, CheckpointError, ValueError, OSError) as e:
        if debug:
            raise
        click.echo(f"convert-ckpt: error: {e}", err=True)
        return 1
    if dry_run:
        for line in s.plan:
            click.echo(line)
        click.echo(
            f"dry run: {s.tensors_in} tensors -> {s.tensors_out} GGUF tensors, {len(s.dropped)} dropped, nothing written"
        )
        return 0
    click.echo(
        f"converted {s.tensors_in} tensors -> {s.tensors_out} GGUF tensors ({s.quant}, {len(s.dropped)} dropped "
        f"with reasons in conversion-report.json), {s.bytes_out / 1e6:.1f} MB in {s.seconds:.2f} s: {s.dst}"
    )
    return 0


def _check(directory: str, debug: bool) -> int:
    from pathlib import Path

    from q3tts.standalone.checkpoint import CheckpointError
    from q3tts.standalone.conversion import sha256_file
    from q3tts.standalone.manifest import check_hashes, read_manifest

    path = Path(directory)
    try:
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a directory")
        problems, notes = check_hashes(path, sha256_file)
        n = len(read_manifest(path) or {})
    except (CheckpointError, OSError) as e:
        if debug:
            raise
        click.echo(f"convert-ckpt: error: {e}", err=True)
        return 1
    for line in notes + problems:
        click.echo(f"convert-ckpt: {line}", err=True)
    if problems:
        unlisted = sum(line.startswith("unlisted:") for line in problems)
        click.echo(
            f"convert-ckpt: {len(problems) - unlisted} of {n} file(s) do not match the manifest, "
            f"{unlisted} unlisted file(s) a loader would read: convert again",
            err=True,
        )
        return 1
    click.echo(f"ok: {n} file(s) match {path / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    main()
