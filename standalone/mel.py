"""Log-mel front end of the speaker encoder, without librosa.

The filterbank reproduces librosa.filters.mel(htk=False, norm="slaney", dtype=float32) including
its rounding: triangle weights are formed in float64, stored as float32, then scaled by the
float64 slaney normalisation and stored as float32 again.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_F_SP = 200.0 / 3  # slaney mel scale: linear below 1 kHz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0  # ... and logarithmic above


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


@functools.lru_cache(maxsize=8)
def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, 1 + n_fft//2] float32, equal to librosa.filters.mel(sr=sr, n_fft=n_fft, ...)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_pts = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    mel_f = mel_to_hz(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    weights.flags.writeable = False
    return weights


def log_mel_spectrogram(
    audio: torch.Tensor,
    *,
    sr: int = 24000,
    n_fft: int = 1024,
    n_mels: int = 128,
    hop: int = 256,
    win: int = 1024,
    fmin: float = 0.0,
    fmax: float = 12000.0,
) -> torch.Tensor:
    """audio [B, N] float32 -> log-mel [B, n_mels, frames].

    Reflect-pads (n_fft - hop)/2 on both sides and runs a non-centred STFT with a periodic Hann
    window; magnitude is sqrt(re^2 + im^2 + 1e-9); log of the mel energies clamped at 1e-5.
    """
    basis = torch.from_numpy(np.array(slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax))).to(audio.device)
    window = torch.hann_window(win, device=audio.device)
    pad = (n_fft - hop) // 2
    audio = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(
        audio,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    mag = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, mag), min=1e-5))
