"""The standalone speech-tokenizer encoder gives upstream's codes, bit for bit in fp32.

Reference: upstream's own ``Qwen3TTSTokenizer.encode`` (the object ``Qwen3TTSModel`` holds as
``model.speech_tokenizer``) on the tiny base fixture; the standalone side is the converted
checkpoint's ``Qwen3TTS.encode_audio``.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from q3tts.verify.cases.forward import speech_like_waveform

pytestmark = pytest.mark.reference  # drives upstream qwen-tts

FP32 = torch.float32


@pytest.fixture(scope="module")
def pair(load_models):
    wrapper, standalone = load_models("base", FP32)
    return wrapper.model.speech_tokenizer, standalone


def noisy_speech(seed: int, seconds: float, sr: int = 24000) -> np.ndarray:
    """Speech-like tone plus broadband bursts: the fixture's encoder spreads these over its codebooks."""
    rng = np.random.default_rng(seed)
    wav = speech_like_waveform(seed, seconds, sr)
    bursts = rng.standard_normal(wav.shape) * (np.sin(np.arange(wav.shape[0]) / sr * 2 * np.pi * 1.5) > 0.3)
    return (0.7 * wav + 0.2 * bursts).astype(np.float32)


def assert_same_codes(ref: list[torch.Tensor], got: list[torch.Tensor]) -> None:
    assert len(ref) == len(got)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert g.dtype == torch.int64 and tuple(g.shape) == tuple(r.shape), (i, tuple(r.shape), tuple(g.shape))
        bad = (r.cpu() != g).nonzero()
        assert bad.numel() == 0, (
            f"item {i}: {bad.shape[0]} codes differ, first at (frame, group) {tuple(bad[0].tolist())}"
        )


# name -> (waveform, sr). 1919/1920/1921 samples straddle one 12.5 Hz frame; 11 s is 275 frames
# at 25 Hz, beyond the encoder transformer's 250-frame (unapplied) sliding window.
CLIPS = {
    "short-0.3s": lambda: (noisy_speech(1, 0.3), 24000),
    "1919-samples": lambda: (noisy_speech(2, 1.0)[:1919], 24000),
    "1920-samples": lambda: (noisy_speech(3, 1.0)[:1920], 24000),
    "1921-samples": lambda: (noisy_speech(4, 1.0)[:1921], 24000),
    "speech-2s": lambda: (noisy_speech(5, 2.0), 24000),
    "long-11s": lambda: (noisy_speech(6, 11.0), 24000),
    "16kHz": lambda: (noisy_speech(7, 1.7, 16000), 16000),
    "44.1kHz": lambda: (noisy_speech(8, 1.3, 44100), 44100),
    "8kHz": lambda: (noisy_speech(9, 0.9, 8000), 8000),
    "float64-48kHz": lambda: (noisy_speech(10, 0.7, 48000).astype(np.float64), 48000),
    "digital-silence": lambda: (np.zeros(24000, dtype=np.float32), 24000),
    "clipped-full-scale": lambda: (np.clip(4.0 * noisy_speech(11, 1.5), -1.0, 1.0).astype(np.float32), 24000),
    "stereo-[T,2]": lambda: (np.stack([noisy_speech(12, 1.0), noisy_speech(13, 1.0)], axis=-1), 24000),
}


@pytest.mark.parametrize("name", list(CLIPS))
def test_codes_identical_to_upstream(pair, name):
    tokenizer, standalone = pair
    wav, sr = CLIPS[name]()
    ref = tokenizer.encode(wav, sr=sr).audio_codes
    assert_same_codes(ref, standalone.encode_audio(wav, sr=sr))
    assert_same_codes(ref, standalone.encode_audio((wav, sr)))


def test_padded_batch_of_unequal_lengths(pair):
    tokenizer, standalone = pair
    wavs = [noisy_speech(20 + i, s) for i, s in enumerate([0.41, 1.73, 0.95, 1.0])]
    ref = tokenizer.encode(wavs, sr=24000).audio_codes
    got = standalone.encode_audio(wavs, sr=24000)
    assert_same_codes(ref, got)
    assert [g.shape[0] for g in got] == [-(-len(w) // 1920) for w in wavs]
    # The batch semantics are real: a shorter item's last frame sees the padding's activations.
    alone = [standalone.encode_audio(w, sr=24000)[0] for w in wavs]
    assert all(torch.equal(a[:-1], g[:-1]) for a, g in zip(alone, got))
    assert any(not torch.equal(a[-1], g[-1]) for a, g in zip(alone, got))


def test_paths_mono_stereo_and_resampled(pair, tmp_path):
    tokenizer, standalone = pair
    files = []
    for i, (sr, channels, subtype) in enumerate([(24000, 1, "PCM_16"), (44100, 2, "FLOAT"), (16000, 1, "PCM_24")]):
        wav = noisy_speech(30 + i, 1.1 + 0.3 * i, sr)
        data = np.stack([wav, 0.5 * wav[::-1]], axis=-1) if channels == 2 else wav
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, data, sr, subtype=subtype)
        files.append(str(path))
    for f in files:
        assert_same_codes(tokenizer.encode(f).audio_codes, standalone.encode_audio(f))
    assert_same_codes(tokenizer.encode(files).audio_codes, standalone.encode_audio(files))


def test_fixture_codes_are_diverse(pair):
    """A test on constant codes could not fail: every group must use much of its codebook."""
    _, standalone = pair
    codes = standalone.encode_audio(noisy_speech(40, 3.0), sr=24000)[0]
    size = standalone.speech_encoder.cfg.codebook_size
    for g in range(codes.shape[1]):
        assert len(set(codes[:, g].tolist())) >= size // 3, (g, codes[:, g].tolist())


def test_every_encoder_weight_matters(pair):
    """A 1% perturbation (of the tensor's RMS, random direction) of any tensor the encoder uses
    changes the codes. With a 16-entry codebook a single direction can miss for the smallest
    tensors (LayerNorm biases), so up to three directions are tried; a weight that does not reach
    the codes fails all three."""
    _, standalone = pair
    enc = standalone.speech_encoder
    rng = np.random.default_rng(43)
    wavs = [
        noisy_speech(41, 8.0),
        np.clip(3 * noisy_speech(42, 4.0), -1, 1).astype(np.float32),
        (rng.standard_normal(4 * 24000) * np.linspace(0.01, 0.8, 4 * 24000)).astype(np.float32),
    ]
    ref = [enc.encode(w, sr=24000)[0] for w in wavs]
    # Decoding with the encoder's own codebooks (output projections) and the "initialized" flags
    # are not part of encoding, upstream's included; codebooks past the kept groups are computed
    # by upstream and dropped, and never influence the kept ones.
    unused = {"semantic_output_proj", "acoustic_output_proj", "codebook_initialized"}
    valid = enc.cfg.valid_num_quantizers
    g = torch.Generator().manual_seed(0)

    def changes_codes() -> bool:
        return any(not torch.equal(enc.encode(w, sr=24000)[0], r) for w, r in zip(wavs, ref))

    undetected = []
    for name, p in enc.named_parameters():
        if name in unused:
            continue
        original = p.detach().clone()
        target = p[:valid] if name.startswith("codebook_") else p
        rms = target.detach().pow(2).mean().sqrt().clamp(min=1e-3)
        detected = False
        try:
            for _ in range(3):
                with torch.no_grad():
                    target.add_(torch.randn(target.shape, generator=g) * 1e-2 * rms)
                detected = changes_codes()
                with torch.no_grad():
                    p.copy_(original)
                if detected:
                    break
        finally:
            with torch.no_grad():
                p.copy_(original)
        if not detected:
            undetected.append(name)
    assert not undetected, undetected


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda p: (np.zeros(0, dtype=np.float32), 24000), "empty"),
        (lambda p: (np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), 24000), "NaN"),
        (lambda p: (np.array([0.1, np.inf] * 100, dtype=np.float32), 16000), "NaN or infinite"),
        (lambda p: (np.zeros(100, dtype=np.float32), 0), "sample rate"),
        (lambda p: (np.zeros(100, dtype=np.float32), -8000), "sample rate"),
        (lambda p: np.zeros(100, dtype=np.float32), "needs its sample rate"),
        (lambda p: str(p / "garbage.wav"), "cannot read audio"),
        (lambda p: str(p / "missing.wav"), "cannot read audio"),
        (lambda p: [], "no audio"),
        (lambda p: 3.5, "unsupported input type"),
    ],
)
def test_bad_input_is_one_clear_value_error(pair, tmp_path, bad, match):
    _, standalone = pair
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00not a wave file at all")
    with pytest.raises(ValueError, match=match):
        standalone.encode_audio(bad(tmp_path))
