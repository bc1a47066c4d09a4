"""Audio front end of the speech-tokenizer encoder: read, mix to mono, resample, validate.

It reproduces what upstream's ``Qwen3TTSTokenizer.encode`` does to its inputs before the model
sees them, without librosa:
- a file is read with soundfile as float32 (libsndfile's int -> float scaling); a multi-channel
  file is mixed down as ``librosa.load(mono=True)`` does it: the mean over the channel axis of
  the [channels, samples] array;
- an array is mixed down over its *last* axis (a [samples, channels] layout; upstream does the
  same, so a [channels, samples] array is silently read as ``channels`` samples);
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
from typing import Any

import numpy as np

# librosa.resample's default res_type "soxr_hq" is python-soxr's "HQ".
SOXR_QUALITY = "HQ"


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
    return rate


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
        if wav.ndim > 1:
            wav = np.mean(wav, axis=-1)  # [samples, channels] -> mono, as upstream
        if wav.ndim != 1:
            raise ValueError(f"{what}: expected a waveform, got a {wav.ndim}-d array")
        if wav.shape[0] == 0:
            raise ValueError(f"{what}: waveform is empty")
        check_finite(wav, what)
        out.append(resample(wav.astype(np.float32), rate, target_sr))
    return out
