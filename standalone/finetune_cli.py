"""`q3tts finetune`: fine-tune a Base checkpoint into a custom voice from a prepared JSONL
(upstream's format after prepare_data: audio, text, ref_audio, audio_codes[, language])."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_common import POSITIVE_INT, SEED, InputFileError, exit_code_for, no_convert_option
from .interrupts import exit_on_interrupt


class DataError(InputFileError):
    """A training or raw JSONL whose content cannot be used (exit 1)."""


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); a JSONL file is UTF-8") from None


def read_train_jsonl(path: Path, groups: int, sample_rate: int) -> list[dict]:
    """Every line checked before training starts; the first problem is one error naming the
    file and line."""
    import soundfile as sf

    rows = []
    ref_ok: dict[str, None] = {}
    lines = _read_lines(path)
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        for key in ("text", "ref_audio", "audio_codes"):
            if key not in row:
                raise DataError(
                    f"{where}: missing field {key!r}" + (" (run prepare-data first)" if key == "audio_codes" else "")
                )
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: empty text")
        codes = row["audio_codes"]
        if not isinstance(codes, list) or not codes:
            raise DataError(f"{where}: audio_codes must be a non-empty list of frames")
        bad = next((i for i, fr in enumerate(codes) if not isinstance(fr, list) or len(fr) != groups), None)
        if bad is not None:
            raise DataError(
                f"{where}: audio_codes frame {bad} has {len(codes[bad]) if isinstance(codes[bad], list) else 'no'}"
                f" groups, the model has {groups}"
            )
        ref = str(row["ref_audio"])
        ref_path = Path(ref) if Path(ref).is_absolute() else (path.parent / ref)
        if ref not in ref_ok:
            try:
                info = sf.info(str(ref_path))
            except Exception as e:  # soundfile raises its own error types
                raise DataError(f"{where}: cannot read ref_audio {ref_path} ({e})") from None
            if info.samplerate != sample_rate:
                raise DataError(
                    f"{where}: ref_audio {ref_path} is {info.samplerate} Hz, the speaker encoder needs {sample_rate} Hz"
                )
            ref_ok[ref] = None
        row["_ref_path"] = str(ref_path)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no training lines")
    return rows


@click.command("finetune")
@click.option(
    "--model", "model_dir", required=True, help="Base checkpoint: a standalone or upstream directory, or a hub id."
)
@click.option(
    "--train-jsonl",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL with text, ref_audio (24 kHz) and audio_codes per line.",
)
@click.option("--speaker-name", required=True, help="Name of the new voice (lower case).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory; each epoch writes OUT/checkpoint-epoch-N.",
)
@click.option("--epochs", type=POSITIVE_INT, default=3, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-5, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=2, show_default=True)
@click.option("--grad-accum", type=POSITIVE_INT, default=4, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--recipe",
    type=click.Choice(["aligned", "upstream"]),
    default="aligned",
    show_default=True,
    help="aligned: consistent with generation; upstream: sft_12hz.py@022e286, its misalignments included.",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: autocast over fp32 weights.",
)
@click.option("--save-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute layer activations in backward.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@no_convert_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@exit_on_interrupt("q3tts", "no partial checkpoint was left")
def finetune(
    model_dir,
    train_jsonl,
    speaker_name,
    out_dir,
    epochs,
    lr,
    batch_size,
    grad_accum,
    seed,
    recipe,
    dtype,
    save_dtype,
    gradient_checkpointing,
    progress,
    no_convert,
    debug,
) -> None:
    """Fine-tune a Base model into a custom voice named SPEAKER_NAME."""
    import torch

    from .dtypes import parse_dtype
    from .finetune import FinetuneOptions, check_speaker_name, save_custom_voice_checkpoint, train_epochs
    from .model import Qwen3TTS
    from .output_dir import Interrupted, signals_raise_interrupted

    written: list[Path] = []  # finished epochs' checkpoints, for the message on interruption
    pending: list = []  # (target, its inode before this write): the checkpoint being written
    try:
        check_speaker_name(speaker_name)
        opts = FinetuneOptions(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            grad_accum=grad_accum,
            seed=seed,
            recipe=recipe,
            dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
        )
        model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32, convert=not no_convert)
        if model.config.tts_model_type != "base" or model.speaker_encoder is None:
            raise ValueError(
                f"{model_dir}: fine-tuning starts from a Base checkpoint (this one is {model.config.tts_model_type!r})"
            )
        items, spks = _training_items(model, Path(train_jsonl))
        show = sys.stderr.isatty() if progress is None else progress
        bar = _bar(epochs * -(-len(items) // batch_size), show)
        out = Path(out_dir)

        def on_step(s):
            bar.update(1)
            bar.set_postfix(epoch=s.epoch, loss=f"{s.loss:.4f}")

        save_as = parse_dtype(save_dtype)
        # SIGTERM/SIGHUP stop the run between checkpoint writes as cleanly as SIGINT does (during a
        # write the writer handles them itself): no partial checkpoint, a message, 128 + signal.
        with signals_raise_interrupted():
            for epoch, baked in train_epochs(model, items, torch.stack(spks), opts, on_step=on_step):
                target = out / f"checkpoint-epoch-{epoch}"
                pending[:] = [(target, _inode(target))]
                path = save_custom_voice_checkpoint(
                    model, model.checkpoint_dir, target, speaker_name, baked, save_dtype=save_as
                )
                written.append(path)
                pending.clear()
                bar.write(f"epoch {epoch}: wrote {path}")
        bar.close()
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(exit_code_for(e))
    except KeyboardInterrupt:
        click.echo(_interrupted_message("SIGINT", written, pending), err=True)
        sys.exit(130)
    except Interrupted as e:
        click.echo(_interrupted_message(e.name, written, pending), err=True)
        sys.exit(e.exit_code)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _interrupted_message(signal_name: str, written: list[Path], pending: list) -> str:
    # A signal after a checkpoint's rename into place but before the loop took note of it: that
    # epoch is complete on disk (a new directory, so a new inode), and is counted as finished.
    for target, inode_before in pending:
        if _inode(target) not in (None, inode_before):
            written.append(target)
    kept = ", ".join(str(p) for p in written) if written else "none (no epoch had finished)"
    return (
        f"q3tts: interrupted ({signal_name}) during epoch {len(written)}; that epoch is lost and left no "
        f"checkpoint; finished epochs kept: {kept}"
    )


def _training_items(model, train_jsonl: Path):
    """The JSONL's utterances as training items, and each one's reference x-vector (computed once
    per reference file). Everything is checked before training starts."""
    import numpy as np
    import soundfile as sf
    import torch

    from .training import TrainingItem, training_text_ids

    cfg = model.config
    rows = read_train_jsonl(train_jsonl, cfg.talker.num_code_groups, cfg.speaker_encoder.sample_rate)
    vocab = cfg.talker.code_predictor.vocab_size
    items, spk_cache, spks = [], {}, []
    for no, row in enumerate(rows, 1):
        codes = torch.tensor(row["audio_codes"], dtype=torch.long)
        if codes.min() < 0 or codes.max() >= vocab:
            raise DataError(f"{train_jsonl}: item {no}: codes must lie in [0, {vocab})")
        items.append(TrainingItem(training_text_ids(model.text_tokenizer, row["text"]), codes))
        ref = row["_ref_path"]
        if ref not in spk_cache:
            audio, sr = sf.read(ref, dtype="float32", always_2d=False)
            if audio.ndim > 1:
                audio = np.mean(audio, axis=-1)
            spk_cache[ref] = model.extract_speaker_embedding(audio, sr).clone()
        spks.append(spk_cache[ref])
    return items, spks


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def write(self, s):
        click.echo(s)

    def close(self):
        pass


def _bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="batch", desc="finetune")


# Upstream's prepare_data.py encodes 32 utterances per batch; a right-padded batch can change a
# shorter item's last frame, so the same batching is what reproduces its codes.
PREPARE_BATCH = 32


@click.command("prepare-data")
@click.argument("raw_jsonl", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "model_dir",
    required=True,
    help="Base checkpoint (its speech tokenizer encodes): a standalone or upstream directory, or a hub id.",
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output JSONL with audio_codes added."
)
@click.option(
    "--batch-size",
    type=POSITIVE_INT,
    default=PREPARE_BATCH,
    show_default=True,
    help="Utterances per encoder batch (upstream's prepare_data.py uses 32).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@no_convert_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@exit_on_interrupt("q3tts", "nothing was written to --out")
def prepare_data(raw_jsonl, model_dir, out_path, batch_size, progress, no_convert, debug) -> None:
    """Add `audio_codes` to upstream's fine-tuning JSONL (audio, text, ref_audio[, language]),
    encoded by the standalone speech-tokenizer encoder, as upstream's prepare_data.py does."""
    import os
    import tempfile

    from .model import Qwen3TTS

    src, out = Path(raw_jsonl), Path(out_path)
    try:
        if not out.resolve().parent.is_dir():
            raise ValueError(f"{out.parent}: output directory does not exist")
        rows = _read_raw_jsonl(src)
        model = Qwen3TTS.from_pretrained(model_dir, convert=not no_convert)
        bar = _bar(len(rows), sys.stderr.isatty() if progress is None else progress)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            codes = model.encode_audio([r["_audio_path"] for r in batch])
            for row, c in zip(batch, codes):
                row["audio_codes"] = c.tolist()
            bar.update(len(batch))
        bar.close()
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(
                        json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, ensure_ascii=False) + "\n"
                    )
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (ValueError, TypeError, OSError) as e:
        if debug:
            raise
        click.echo(f"q3tts: error: {e}", err=True)
        sys.exit(exit_code_for(e))
    click.echo(f"wrote {out}: {len(rows)} utterances with audio_codes")


def _umask() -> int:
    from .output_dir import current_umask

    return current_umask()


def _read_raw_jsonl(path: Path) -> list[dict]:
    """Every line checked before encoding; the first problem names the file and line."""
    rows = []
    for no, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        for key in ("audio", "text", "ref_audio"):
            if key not in row:
                raise DataError(f"{where}: missing field {key!r}")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: empty text")
        audio = Path(str(row["audio"]))
        audio = audio if audio.is_absolute() else path.parent / audio
        if not audio.is_file():
            raise DataError(f"{where}: audio file {audio} does not exist")
        row["_audio_path"] = str(audio)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no lines")
    return rows
