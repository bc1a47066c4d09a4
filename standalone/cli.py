"""`q3tts`: text to wav on torch alone (`q3tts synthesize`), plus the converter and the verifier
as subcommands when their packages are installed."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Qwen3-TTS without transformers."""


@main.command()
@click.option("--model", "model_dir", required=True, help="Standalone checkpoint directory (convert-ckpt output) or hub id.")
@click.option("--text", required=True, help="Text to speak.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .wav file.")
@click.option("--speaker", default=None, help="Speaker name (custom_voice models).")
@click.option("--instruct", default=None, help="Voice/style instruction (voice_design; custom_voice 1.7B).")
@click.option("--ref-audio", default=None, type=click.Path(exists=True, dir_okay=False), help="Reference audio to clone (base models, 24 kHz).")
@click.option("--ref-text", default=None, help="Transcript of the reference audio (ICL cloning).")
@click.option("--ref-codes", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Reference codes [T, G] (.npy) for ICL cloning; without them cloning uses the x-vector only.")
@click.option("--language", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["keep", "fp32", "bf16"]), default="keep", show_default=True)
@click.option("--seed", type=int, default=None, help="Seed the sampler for a reproducible result.")
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of sampling.")
@click.option("--max-new-tokens", type=int, default=None, help="Cap on generated frames (+1).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--fast", is_flag=True, help="Compiled fast path: close to, not bit-identical with, upstream; compiles on first use.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def synthesize(model_dir, text, out_path, speaker, instruct, ref_audio, ref_text, ref_codes, language, dtype, seed,
               greedy, max_new_tokens, progress, fast, debug) -> None:
    """Synthesize TEXT into a wav file. The voice mode follows the checkpoint's type."""
    import numpy as np
    import torch

    from .dtypes import parse_dtype
    from .model import Qwen3TTS

    try:
        import soundfile as sf
    except ImportError:
        click.echo("q3tts: error: writing wav needs the 'soundfile' package (pip install soundfile)", err=True)
        sys.exit(1)
    try:
        out = Path(out_path)
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: output directory does not exist")
        model = Qwen3TTS.from_pretrained(model_dir, dtype=parse_dtype(dtype), fast=fast)
        kind = model.config.tts_model_type
        if seed is not None:
            torch.manual_seed(seed)
        gen = {}
        if greedy:
            gen.update(do_sample=False, subtalker_dosample=False)
        if max_new_tokens is not None:
            gen["max_new_tokens"] = max_new_tokens
        gen["progress"] = sys.stderr.isatty() if progress is None else progress
        if kind == "custom_voice":
            if not speaker:
                raise ValueError(f"--speaker is required for a custom_voice model; choose one of {model.get_supported_speakers()}")
            wavs, sr = model.generate_custom_voice(text, speaker=speaker, language=language, instruct=instruct, **gen)
        elif kind == "voice_design":
            if not instruct:
                raise ValueError("--instruct is required for a voice_design model (describe the voice)")
            wavs, sr = model.generate_voice_design(text, instruct=instruct, language=language, **gen)
        else:
            if not ref_audio:
                raise ValueError("--ref-audio is required for a base model (voice cloning)")
            audio, ref_sr = sf.read(ref_audio, dtype="float32", always_2d=False)
            codes = torch.from_numpy(np.load(ref_codes)).long() if ref_codes else None
            if codes is not None and not ref_text:
                raise ValueError("--ref-codes needs --ref-text (the transcript of the reference audio)")
            wavs, sr = model.generate_voice_clone(
                text, language=language, ref_audio=(audio, ref_sr), ref_text=ref_text,
                x_vector_only_mode=codes is None, ref_code=codes, **gen,
            )
        tmp = out.with_name(f".{out.name}.partial.wav")
        sf.write(str(tmp), wavs[0], sr)
        tmp.replace(out)  # never a half-written wav at --out
    except (ValueError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(1)
    click.echo(f"wrote {out} ({len(wavs[0]) / sr:.2f} s at {sr} Hz)")


def _attach_plugins() -> None:
    """`q3tts convert` / `q3tts verify` come from the other packages through entry points, so the
    runtime never imports them (the data flow is one way)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="q3tts.commands"):
        try:
            main.add_command(ep.load(), name=ep.name)
        except ImportError:  # a package that is not installed offers no command
            continue


from .finetune_cli import finetune as _finetune  # noqa: E402
main.add_command(_finetune)
_attach_plugins()
