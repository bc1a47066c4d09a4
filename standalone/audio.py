"""Audio front end of the speech-tokenizer encoder: read, mix to mono, resample, validate.

It reproduces what upstream's ``Qwen3TTSTokenizer.encode`` does to its inputs before the model
sees them, without librosa:
- a file is read with soundfile as float32 (libsndfile's int -> float scaling); a multi-channel
  file is mixed down as ``librosa.load(mono=True)`` does it: the mean over the channel axis of
  the [channels, samples] array;
- an array is mixed down over its *last* axis (a [samples, channels] layout, as upstream does),
  except a [channels, samples] array with at most MAX_CHANNELS channels and more samples than
  that, which is recognised and mixed over its first axis (upstream reads [2, 48000] stereo as 2
  samples of 48000 channels);
- a rate other than the target is resampled as ``librosa.resample`` does by default
  ("soxr_hq"): python-soxr's HQ resampler on float32 mono, then zero-padded or truncated at the
  end to ``ceil(n * (target / sr))`` samples, computed in float64 exactly as librosa does.

Inputs that upstream would either reject deep inside a library or turn into garbage (empty,
NaN/inf, sample rate 0, an array without a rate, an unreadable file) raise one ValueError that
names the item.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any

import numpy as np

from .work_memory import check_work, resample_bytes

# librosa.resample's default res_type "soxr_hq" is python-soxr's "HQ".
SOXR_QUALITY = "HQ"
# Sample rates outside this range are refused before anything is allocated: resampling 1 s given
# as sr=1 to 24 kHz would allocate gigabytes (a rate in kHz passed as Hz is the usual cause).
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CHANNELS = 8  # a 2-D array with at most this many rows and more columns is [channels, samples]
# The longest audio resampled in one piece, in seconds at the target rate (Q3TTS_MAX_AUDIO_SECONDS).
MAX_AUDIO_SECONDS_ENV = "Q3TTS_MAX_AUDIO_SECONDS"
DEFAULT_MAX_AUDIO_SECONDS = 3600.0


class AudioReadError(ValueError):
    """An audio file that cannot be read (missing, corrupt, unsupported); CLIs exit 1 on it."""


def resample(wav: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """float32 mono ``wav`` at ``sr`` -> float32 at ``target_sr`` (librosa.resample's default path)."""
    wav = np.asarray(wav, dtype=np.float32)
    if int(sr) == int(target_sr):
        return wav
    try:
        import soxr
    except ImportError as e:  # a declared dependency; only a broken install gets here
        raise ValueError(f"resampling {sr} Hz -> {target_sr} Hz needs the 'soxr' package (pip install soxr)") from e
    ratio = float(target_sr) / sr
    n_out = int(math.ceil(wav.shape[-1] * ratio))
    check_duration(n_out, target_sr, f"resampling {sr} Hz -> {target_sr} Hz")
    check_work(resample_bytes(wav.shape[-1], sr, target_sr), f"resampling {sr} Hz -> {target_sr} Hz")
    out = np.asarray(soxr.resample(wav, sr, target_sr, quality=SOXR_QUALITY), dtype=np.float32)
    if out.shape[-1] > n_out:
        out = out[:n_out]
    elif out.shape[-1] < n_out:
        out = np.pad(out, (0, n_out - out.shape[-1]))
    return out


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float32 mono waveform, native sample rate) of an audio file."""
    try:
        import soundfile as sf
    except ImportError as e:
        raise ValueError("reading audio files needs the 'soundfile' package; pass (waveform, sr) instead") from e
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise AudioReadError(f"{os.fspath(path)}: cannot read audio ({e.strerror or e})") from e
    if not stat.S_ISREG(mode):  # a FIFO would block the read forever, a device read without end
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise AudioReadError(f"{os.fspath(path)}: cannot read audio from {kind}; give a regular audio file")
    try:
        info = sf.info(os.fspath(path))
    except Exception as e:  # soundfile raises its own error types (and RuntimeError) for bad files
        raise AudioReadError(f"{os.fspath(path)}: cannot read audio ({type(e).__name__}: {e})") from e
    try:  # before reading it whole
        check_duration(info.frames, max(int(info.samplerate), 1), os.fspath(path))
    except ValueError as e:
        raise AudioReadError(str(e)) from None
    try:
        data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises its own error types (and RuntimeError) for bad files
        raise AudioReadError(f"{os.fspath(path)}: cannot read audio ({type(e).__name__}: {e})") from e
    data = np.asarray(data).T  # [channels, samples], as librosa holds it
    if data.ndim > 1:
        data = np.mean(data, axis=tuple(range(data.ndim - 1)))
    return np.asarray(data, dtype=np.float32), int(sr)


def check_finite(wav: np.ndarray, what: str) -> None:
    if not np.isfinite(wav).all():
        raise ValueError(f"{what}: waveform has NaN or infinite samples")


def check_rate(sr: Any, what: str) -> int:
    """A positive whole number of Hz; an integral float (24000.0) is taken as upstream takes it.
    A bool is refused: True would be read as 1 Hz and resampling to 24 kHz allocates 24000x."""
    if isinstance(sr, (bool, np.bool_)):
        raise ValueError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    try:
        rate = int(sr)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: sample rate must be a positive integer, got {sr!r}") from None
    if rate <= 0 or rate != sr:
        raise ValueError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    if not MIN_RATE <= rate <= MAX_RATE:
        hint = f" (did you pass kHz? {rate} kHz is sr={rate * 1000})" if rate < MIN_RATE else ""
        raise ValueError(f"{what}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz{hint}")
    return rate


def max_audio_seconds() -> float:
    raw = os.environ.get(MAX_AUDIO_SECONDS_ENV)
    try:
        value = float(raw) if raw else DEFAULT_MAX_AUDIO_SECONDS
    except ValueError:
        raise ValueError(f"{MAX_AUDIO_SECONDS_ENV}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{MAX_AUDIO_SECONDS_ENV}={raw!r} must be a positive number of seconds")
    return value


def check_duration(n_samples: int, rate: int, what: str) -> None:
    """Refuse, before allocating, audio longer than max_audio_seconds() (4 bytes a sample, and
    the encoder's activations a multiple of it)."""
    cap = max_audio_seconds()
    if n_samples > cap * rate:
        raise ValueError(
            f"{what}: {n_samples / rate:.0f} s of audio ({n_samples * 4 / 1e9:.1f} GB as float32) is above the "
            f"{cap:g} s cap; split it, or raise the cap with {MAX_AUDIO_SECONDS_ENV}"
        )


def to_mono(wav: np.ndarray) -> np.ndarray:
    """[samples] as it is; [channels, samples] (at most MAX_CHANNELS rows, more columns than
    that) mixed over the channels; anything else of more than one axis mixed over its last axis,
    as upstream mixes [samples, channels]."""
    if wav.ndim == 2 and wav.shape[0] <= MAX_CHANNELS < wav.shape[1]:
        return np.mean(wav, axis=0)
    if wav.ndim > 1:
        return np.mean(wav, axis=-1)
    return wav


def check_waveform_dtype(wav: np.ndarray, what: str) -> None:
    if not np.issubdtype(wav.dtype, np.number) or np.issubdtype(wav.dtype, np.complexfloating):
        raise TypeError(f"{what}: waveform must be real numbers, got dtype {wav.dtype}")


def as_waveform(x: Any, what: str) -> np.ndarray:
    """An array of real samples (numpy, torch or a list of numbers); anything else is a TypeError
    naming ``what`` rather than an error from deep inside numpy or torch."""
    arr = _as_array(x)
    if arr is None:
        if isinstance(x, (str, bytes, dict)) or x is None or not hasattr(x, "__len__"):
            raise TypeError(f"{what}: expected a waveform array, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}: expected a waveform array ({e})") from None
    check_waveform_dtype(arr, what)
    return arr


def _is_path(x: Any) -> bool:
    return isinstance(x, str) or hasattr(x, "__fspath__")


def _as_array(x: Any) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().float().numpy()
    return None


def normalize_inputs(audio: Any, sr: int | None, target_sr: int) -> list[np.ndarray]:
    """One float32 mono waveform at ``target_sr`` per item.

    ``audio`` is a path, an array (then ``sr`` is required), an ``(array, sr)`` pair, or a list of
    these. Items are resampled one by one, as upstream does.
    """
    items = list(audio) if isinstance(audio, list) else [audio]
    if not items:
        raise ValueError("no audio given (empty list)")
    out = []
    for i, item in enumerate(items):
        what = f"audio item {i}" if len(items) > 1 else "audio"
        if _is_path(item):
            what = f"{what} ({os.fspath(item)})"
            wav, rate = read_audio_file(item)
        elif isinstance(item, tuple):
            if len(item) != 2 or _as_array(item[0]) is None:
                raise ValueError(f"{what}: a tuple must be (waveform array, sample_rate)")
            wav, rate = _as_array(item[0]), check_rate(item[1], what)
        elif _as_array(item) is not None:
            if sr is None:
                raise ValueError(f"{what}: a waveform array needs its sample rate: pass sr=... or (waveform, sr)")
            wav, rate = _as_array(item), check_rate(sr, what)
        else:
            raise ValueError(f"{what}: unsupported input type {type(item).__name__} (path, array or (array, sr))")
        check_waveform_dtype(wav, what)
        wav = to_mono(wav)  # [samples, channels] -> mono as upstream; [channels, samples] recognised
        if wav.ndim != 1:
            raise ValueError(f"{what}: expected a waveform, got a {wav.ndim}-d array")
        if wav.shape[0] == 0:
            raise ValueError(f"{what}: waveform is empty")
        check_finite(wav, what)
        check_duration(wav.shape[0], rate, what)
        out.append(resample(wav.astype(np.float32), rate, target_sr))
    return out
