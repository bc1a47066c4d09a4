"""The speaker encoder's mel front end, without librosa, equals librosa's filterbank exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3tts.standalone.mel import log_mel_spectrogram, slaney_mel_filterbank


@pytest.mark.reference
@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [
        (24000, 1024, 128, 0, 12000),
        (16000, 512, 80, 20, 7600),
        (22050, 2048, 96, 50, 11025),
        (24000, 1024, 128, 0, 8000),
    ],
)
def test_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa", reason="librosa is the reference; install the 'upstream' extra")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


@pytest.mark.reference
def test_log_mel_equals_upstream_mel_spectrogram():
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    wav = torch.from_numpy(np.random.default_rng(0).uniform(-0.8, 0.8, 30000).astype(np.float32))[None]
    ref = mel_spectrogram(
        wav, n_fft=1024, num_mels=128, sampling_rate=24000, hop_size=256, win_size=1024, fmin=0, fmax=12000
    )
    torch.testing.assert_close(log_mel_spectrogram(wav), ref, atol=0, rtol=0)


def test_wrong_hop_is_visible():
    wav = torch.from_numpy(np.random.default_rng(0).uniform(-0.8, 0.8, 30000).astype(np.float32))[None]
    assert log_mel_spectrogram(wav, hop=240).shape != log_mel_spectrogram(wav).shape
