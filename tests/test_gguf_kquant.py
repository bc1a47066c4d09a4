"""convert-ckpt --to gguf --quant Q4_K_M: qwentts.cpp's 4-bit variant (tools/quantize.cpp's policy:
Q4_K, embeddings Q6_K, rows off the 256-weight block F16, norms/codebooks F32), encoded by the
ggml library of the peer's binding."""

from __future__ import annotations

import numpy as np
import pytest

from q3tts.standalone import gguf_layout as L


def test_q4_k_m_storage_policy():
    st = L.storage_type
    assert st("talker.blk.3.attn_q.weight", (2048, 1024), "Q4_K_M") == "Q4_K"
    assert st("code_pred.lm_head.4.weight", (2048, 1024), "Q4_K_M") == "Q4_K"
    assert st("talker.codec_embd.weight", (3072, 1024), "Q4_K_M") == "Q6_K"
    assert st("code_pred.codec_embd.0.weight", (2048, 1024), "Q4_K_M") == "Q6_K"
    assert st("talker.text_embd.weight", (151936, 2048), "Q4_K_M") == "Q6_K"
    assert st("talker.blk.0.attn_q.weight", (64, 96), "Q4_K_M") == "F16"  # 96 is no multiple of 256
    assert st("talker.blk.0.attn_norm.weight", (1024,), "Q4_K_M") == "F32"
    assert st("tok_dec.vq_first.0.codebook", (2048, 256), "Q4_K_M") == "F32"
    assert st("talker.blk.0.attn_q.weight", (64, 96), "Q8_0") == "Q8_0"  # Q8_0's block is 32


def test_k_quants_round_trip_through_ggml():
    """ggml's encoder and gguf's decoder agree, and the error is what 4 and 6 bits give (a planted
    wrong type id decodes to garbage and fails the same bound)."""
    pytest.importorskip("qwentts_cpp_cpu", reason="the ggml encoder ships with the peer's binding")
    gguf = pytest.importorskip("gguf")
    from q3tts.standalone.ggml_quantize import quantize_rows

    w = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
    for kind, bound in (("Q4_K", 0.12), ("Q6_K", 0.03)):
        blocks = quantize_rows(w, kind)
        back = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[kind])
        rel = np.linalg.norm(back - w) / np.linalg.norm(w)
        assert back.shape == w.shape and 0 < rel < bound, (kind, rel)
    wrong = gguf.quants.dequantize(quantize_rows(w, "Q6_K")[:, : 2 * 144], gguf.GGMLQuantizationType.Q4_K)
    assert not np.linalg.norm(wrong - w) / np.linalg.norm(w) < 0.12  # (nan included)
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_rows(w[:, :96], "Q4_K")


def test_q4_k_m_without_the_binding_says_how_to_install(monkeypatch, tmp_path):
    from q3tts.standalone import ggml_quantize
    from q3tts.standalone.gguf_conversion import GGUFConversionError, convert_to_gguf

    monkeypatch.setattr(ggml_quantize.importlib.util, "find_spec", lambda name: None)
    ggml_quantize._library.cache_clear()
    try:
        with pytest.raises(GGUFConversionError, match=r"\[peers\]"):
            convert_to_gguf(tmp_path / "src", tmp_path / "out", quant="Q4_K_M")
    finally:
        ggml_quantize._library.cache_clear()
    assert not (tmp_path / "out").exists()
