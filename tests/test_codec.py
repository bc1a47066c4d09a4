"""The standalone speech-tokenizer decoder reproduces upstream's audio, chunk boundaries included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.verify.compare import AUDIO_TOLERANCES, snr_db

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


# 71/72/80 frames straddle the transformer's 72-frame sliding window; 299-301 and 625 cross the
# 300-frame chunks (25 frames of left context).
LENGTHS = [1, 5, 71, 72, 80, 299, 300, 301, 625]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("frames", LENGTHS)
def test_decode_matches_upstream(load_pair, frames, dtype):
    upstream, standalone = load_pair("base", dtype)
    codes = torch.randint(0, 16, (frames, 4), generator=torch.Generator().manual_seed(frames))
    (ref,), sr_ref = upstream.speech_tokenizer.decode([{"audio_codes": codes}])
    (got,), sr = standalone.decode_codes([codes])
    assert sr == sr_ref == 24000 and got.dtype == np.float32 and got.shape == ref.shape == (frames * 1920,)
    max_abs = float(np.abs(ref - got).max())
    bound, min_snr = AUDIO_TOLERANCES[dtype]
    assert max_abs <= bound and snr_db(ref, got) >= min_snr, (
        f"max abs diff {max_abs:.3e}, SNR {snr_db(ref, got):.1f} dB"
    )
    if frames > 1:
        assert max_abs == 0.0, f"measured bit-identical for clips of 2+ frames; now {max_abs:.3e}"
    assert np.sqrt(np.mean(ref**2)) > 0.05  # the fixture codec makes real audio


def test_batch_with_different_lengths(load_pair):
    upstream, standalone = load_pair("base", torch.float32)
    g = torch.Generator().manual_seed(1)
    codes = [torch.randint(0, 16, (n, 4), generator=g) for n in (7, 40, 13)]
    ref, _ = upstream.speech_tokenizer.decode([{"audio_codes": c} for c in codes])
    got, _ = standalone.decode_codes(codes)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_chunking_is_reproduced_not_bypassed(load_pair):
    """Chunked and whole-sequence decoding differ past 300 frames; matching upstream needs the former."""
    _, standalone = load_pair("base", torch.float32)
    codes = torch.randint(0, 16, (1, 4, 330), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole = standalone.codec(codes)[0, 0].numpy()
        chunked = standalone.codec.chunked(codes)[0, 0].numpy()
    # Before the boundary only GEMM blocking differs (shorter input); after it the context does.
    assert np.abs(whole[: 300 * 1920] - chunked[: 300 * 1920]).max() < 1e-3
    assert np.abs(whole[300 * 1920 :] - chunked[300 * 1920 :]).max() > 1e-2


def test_every_codec_weight_matters(load_pair):
    upstream, standalone = load_pair("base", torch.float32)
    codes = torch.randint(0, 16, (80, 4), generator=torch.Generator().manual_seed(3))
    (ref,), _ = upstream.speech_tokenizer.decode([{"audio_codes": codes}])
    codec = standalone.codec
    g = torch.Generator().manual_seed(0)
    undetected = []
    # The quantizer's input projections belong to the encoder side: unused when decoding.
    params = {k: v for k, v in codec.named_parameters() if not k.endswith("_input_proj")}
    for name, p in params.items():
        original = p.detach().clone()
        with torch.no_grad():
            p.add_(1e-2 * original.float().pow(2).mean().sqrt().clamp(min=1e-3) * torch.randn(p.shape, generator=g))
        try:
            (got,), _ = standalone.decode_codes([codes])
            if np.abs(got - ref).max() < 1e-6:
                undetected.append(name)
        finally:
            with torch.no_grad():
                p.copy_(original)
    assert not undetected, undetected


def test_codes_with_wrong_group_count_are_rejected(load_pair):
    _, standalone = load_pair("base", torch.float32)
    with pytest.raises(ValueError, match=r"must be \[frames, 4\]"):
        standalone.decode_codes([torch.zeros(5, 3, dtype=torch.long)])


def test_a_codec_first_loaded_under_inference_mode_has_ordinary_weights(checkpoints):
    """The codec loads lazily, often inside an inference-mode caller; its weights must still be
    ordinary tensors (editable, trainable), as the talker's are."""
    model = Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype=torch.float32)
    with torch.inference_mode():
        model.decode_codes([torch.zeros(2, 4, dtype=torch.long)])
        model.encode_audio(np.zeros(4800, np.float32), sr=24000)
    for module in (model.codec, model.speech_encoder):
        assert not any(p.is_inference() for p in module.parameters())
