"""`q3tts`: text to wav on torch alone (`q3tts synthesize`), plus the converter and the verifier
as subcommands when their packages are installed."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click

from .cli_common import POSITIVE_INT, SEED, InputFileError, OneLineErrors, exit_code_for, no_convert_option
from .interrupts import exit_on_interrupt, write_replacing


class PluginGroup(OneLineErrors):
    """`q3tts convert` / `q3tts verify` / `q3tts serve` come from the other packages through entry
    points (group q3tts.commands), so the runtime never imports them (the data flow is one way).
    They load when named (or listed by --help): `q3tts synthesize` imports none of them, and so
    installs its signal handling before anything heavy is imported."""

    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in _plugins():
            try:
                command = _plugins()[name].load()
            except ImportError:  # a package that is not installed offers no command
                return None
            self.add_command(command, name=name)
        return command


@functools.lru_cache(maxsize=1)
def _plugins() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="q3tts.commands")}


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Qwen3-TTS without transformers."""


@main.command()
@click.option(
    "--model",
    "model_dir",
    required=True,
    help="Checkpoint: a standalone or upstream directory, or a hub id (upstream ones are converted once into a cache).",
)
@click.option("--text", required=True, help="Text to speak.")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Output .wav file ('-' with --stream: raw 16-bit 24 kHz mono PCM to stdout).",
)
@click.option("--speaker", default=None, help="Speaker name (custom_voice models).")
@click.option("--instruct", default=None, help="Voice/style instruction (voice_design; custom_voice 1.7B).")
@click.option(
    "--ref-audio",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Reference audio to clone (base models; any sample rate).",
)
@click.option(
    "--ref-text",
    default=None,
    help="Transcript of the reference audio: ICL cloning (codes made from --ref-audio). Without it: x-vector only.",
)
@click.option(
    "--ref-codes",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Precomputed reference codes [T, G] (.npy) for ICL cloning instead of encoding --ref-audio.",
)
@click.option("--language", default="auto", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(["keep", "fp32", "bf16", "bf16-mixed", "fp16-mixed"]),
    default="keep",
    show_default=True,
    help="bf16-mixed / fp16-mixed: half-precision weights for the big linears, fp32 where it matters "
    "(norms, residual stream, logits heads, codec); keep: as stored (a mixed checkpoint stays mixed).",
)
@click.option("--seed", type=SEED, default=None, help="Seed the sampler for a reproducible result.")
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of sampling.")
@click.option("--max-new-tokens", type=POSITIVE_INT, default=None, help="Cap on generated frames (+1).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--stream", is_flag=True, help="Write audio while generating (the wav is valid at every moment).")
@click.option("--chunk-frames", type=POSITIVE_INT, default=8, show_default=True, help="Frames per streamed chunk.")
@click.option(
    "--first-chunk-frames", type=POSITIVE_INT, default=4, show_default=True, help="Frames in the first streamed chunk."
)
@no_convert_option
@click.option(
    "--fast",
    is_flag=True,
    help="Compiled fast path: close to, not bit-identical with, upstream; compiles before generating (cached).",
)
@click.option(
    "--quant",
    default="none",
    show_default=True,
    metavar="MODE",
    help="With --fast: weight-only quantized talker and code-predictor linears: int8 (groups of 64), "
    "int8-g32, int8-g64, int8-g128, int4 (groups of 32, fitted), int4-g32, int4-g64, int4-g128; heads, norms, "
    "embeddings, codec stay in --dtype (keep: fp32). Fidelity: reports/fast_parity-int8.md, -int4.md.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@exit_on_interrupt("q3tts")
def synthesize(
    model_dir,
    text,
    out_path,
    speaker,
    instruct,
    ref_audio,
    ref_text,
    ref_codes,
    language,
    dtype,
    seed,
    greedy,
    max_new_tokens,
    progress,
    stream,
    chunk_frames,
    first_chunk_frames,
    no_convert,
    fast,
    quant,
    debug,
) -> None:
    """Synthesize TEXT into a wav file. The voice mode follows the checkpoint's type."""
    import torch

    from .model import Qwen3TTS
    from .precision import parse_mode

    try:
        import soundfile as sf
    except ImportError:
        click.echo("q3tts: error: writing wav needs the 'soundfile' package (pip install soundfile)", err=True)
        sys.exit(1)
    try:
        if out_path == "-" and not stream:
            raise ValueError("--out - (PCM to stdout) needs --stream")
        out = Path(out_path)
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: output directory does not exist")
        if quant != "none" and not fast:
            raise click.UsageError("--quant runs on the fast path: add --fast")
        model = Qwen3TTS.from_pretrained(
            model_dir, dtype=parse_mode(dtype), convert=not no_convert, quant=None if quant == "none" else quant
        )
        if fast:
            _compile_fast(model)
        if seed is not None:
            torch.manual_seed(seed)
        gen = {}
        if greedy:
            gen.update(do_sample=False, subtalker_dosample=False)
        if max_new_tokens is not None:
            gen["max_new_tokens"] = max_new_tokens
        gen["progress"] = sys.stderr.isatty() if progress is None else progress
        prefix = "generate_"
        if stream:  # the stream_* twins take the same arguments and return a generator of chunks
            prefix = "stream_"
            gen.update(chunk_frames=chunk_frames, first_chunk_frames=first_chunk_frames)
        start = time.perf_counter()
        result = _run_voice_method(
            model, prefix, text, speaker, instruct, ref_audio, ref_text, ref_codes, language, gen
        )
        if stream:
            from .streaming import write_stream

            sr = model.codec.cfg.output_sample_rate
            first = lambda: click.echo(f"first audio after {time.perf_counter() - start:.3f} s", err=True)  # noqa: E731
            n_samples = write_stream(result, out_path, sr, on_first=first)
        else:
            wavs, sr = result
            n_samples = len(wavs[0])
            write_replacing(out, lambda tmp: sf.write(str(tmp), wavs[0], sr, format="WAV"))  # never half a wav
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(exit_code_for(e))
    click.echo(f"wrote {out_path} ({n_samples / sr:.2f} s at {sr} Hz)", err=out_path == "-")


def _compile_fast(model) -> None:
    """Compile the fast path before generating, saying so: a first start compiles for about a
    minute at 0.6B on two cores (later starts load the graphs from the cache), and the time to
    first audio of --stream should not hide it."""
    import logging

    from .fast import compile_cache_dir

    # inductor imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on a CPU
    # machine that has a CUDA_HOME: noise in a CPU tool's output.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    click.echo(f"compiling the fast path (graphs cached in {compile_cache_dir()}) ...", err=True)
    model.compile_fast(warm_up=(1,))
    click.echo(f"fast path ready after {model.fast_engine().compile_seconds:.1f} s", err=True)


def _run_voice_method(model, prefix, text, speaker, instruct, ref_audio, ref_text, ref_codes, language, gen):
    """The voice method the checkpoint's type offers (``prefix`` generate_ or stream_)."""
    import numpy as np
    import torch

    kind = model.config.tts_model_type
    _check_mode_options(
        kind, speaker=speaker, instruct=instruct, ref_audio=ref_audio, ref_text=ref_text, ref_codes=ref_codes
    )
    if kind == "custom_voice":
        if not speaker:
            raise ValueError(
                f"--speaker is required for a custom_voice model; choose one of {model.get_supported_speakers()}"
            )
        return getattr(model, prefix + "custom_voice")(
            text, speaker=speaker, language=language, instruct=instruct, **gen
        )
    if kind == "voice_design":
        if not instruct:
            raise ValueError("--instruct is required for a voice_design model (describe the voice)")
        return getattr(model, prefix + "voice_design")(text, instruct=instruct, language=language, **gen)
    if not ref_audio:
        raise ValueError("--ref-audio is required for a base model (voice cloning)")
    codes = None
    if ref_codes:
        try:
            codes = torch.from_numpy(np.load(ref_codes))
        except (OSError, ValueError, TypeError) as e:  # not an .npy of numbers: the file is unusable
            raise InputFileError(f"--ref-codes {ref_codes}: cannot read codes ({e})") from None
    if codes is not None and not ref_text:
        raise ValueError("--ref-codes needs --ref-text (the transcript of the reference audio)")
    return getattr(model, prefix + "voice_clone")(
        text,
        language=language,
        ref_audio=ref_audio,
        ref_text=ref_text,
        x_vector_only_mode=not ref_text,
        ref_code=codes,
        **gen,
    )


# Which options each model type reads; any other voice option is a usage error, not silently ignored.
_MODE_OPTIONS = {
    "custom_voice": ("speaker", "instruct"),
    "voice_design": ("instruct",),
    "base": ("ref_audio", "ref_text", "ref_codes"),
}


def _check_mode_options(kind: str, **given) -> None:
    for name, value in given.items():
        if value is not None and name not in _MODE_OPTIONS.get(kind, ()):
            users = [k for k, names in _MODE_OPTIONS.items() if name in names]
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} applies to {' and '.join(users)} models; this checkpoint is {kind!r}")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_dir",
    required=True,
    help="Checkpoint: a standalone or upstream directory, or a hub id (upstream ones are converted once into a cache).",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for the .npy code files."
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="Encoder dtype (fp32 reproduces upstream's codes exactly).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@no_convert_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@exit_on_interrupt("q3tts")
def encode(inputs, model_dir, out_dir, dtype, progress, no_convert, debug) -> None:
    """Encode audio files into speech-tokenizer codes: OUT/<name>.npy, int64 [frames, groups].

    Each file is encoded on its own (as upstream's Qwen3TTSTokenizer.encode on one path)."""
    import numpy as np
    from tqdm import tqdm

    from .dtypes import parse_dtype
    from .model import Qwen3TTS

    try:
        out = Path(out_dir)
        stems: dict[str, str] = {}
        for path in inputs:
            stem = Path(path).stem
            if stem in stems:
                raise ValueError(f"{path} and {stems[stem]} would both write {stem}.npy")
            stems[stem] = path
        model = Qwen3TTS.from_pretrained(model_dir, dtype=parse_dtype(dtype), convert=not no_convert)
        show = sys.stderr.isatty() if progress is None else progress
        for path in tqdm(inputs, desc="encode", unit="file", disable=not show):
            codes = model.encode_audio(path)[0].numpy()
            out.mkdir(parents=True, exist_ok=True)  # only once there is a file to write: a refusal leaves nothing
            target = out / f"{Path(path).stem}.npy"
            write_replacing(target, lambda tmp, c=codes: np.save(tmp, c))  # never a half-written .npy
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(exit_code_for(e))
    click.echo(f"wrote {len(inputs)} code file(s) to {out}")


from .finetune_cli import finetune as _finetune  # noqa: E402 - after main exists: the commands attach to it
from .finetune_cli import prepare_data as _prepare_data  # noqa: E402

main.add_command(_finetune)
main.add_command(_prepare_data)
