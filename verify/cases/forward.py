"""Component forward parity: upstream qwen-tts and the standalone model on identical inputs.

Cases (each side computes from its own weights; only integer ids, codes and the waveform are shared):
- text_projection:            text_projection(text_embedding(ids))
- talker.prefill.hidden/logits: talker over T(text ids) + C(codec ids), all-ones attention mask
- talker.padded.hidden/logits:  a left-padded batch, compared on the real positions only
- code_predictor.group{k}:    teacher-forced code-predictor logits of every residual group
- speaker_encoder.mel / speaker_encoder.embedding (base models only): from a waveform; the
  embedding case also holds every block's output to the tolerance

When a case fails, two layers are named (forward hooks on both sides): the first whose output
exceeds tolerance (``first_bad_layer``) and the first whose output differs at all
(``first_diff_layer``, where the bug enters when the fault-free pair is bit-identical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.verify.compare import Comparison, capture_outputs, compare, first_differing_layer, first_divergent_layer


@dataclass(frozen=True)
class ParityInputs:
    text_ids: torch.Tensor  # [B, L]
    codec_ids: torch.Tensor  # [B, L]
    pad_lengths: tuple[int, ...]  # left padding per row of the padded batch
    frame_codes: torch.Tensor  # [B, G]
    waveform: np.ndarray  # float32, 24 kHz

    @classmethod
    def make(cls, model: Qwen3TTS, seed: int = 0, batch: int = 2, length: int = 12) -> ParityInputs:
        cfg = model.config.talker
        g = torch.Generator().manual_seed(seed)
        text_ids = torch.randint(0, cfg.text_vocab_size, (batch, length), generator=g)
        codec_ids = torch.randint(0, cfg.vocab_size, (batch, length), generator=g)
        pads = tuple(int(i * max(1, length // 3)) for i in range(batch))
        codes = torch.randint(0, cfg.code_predictor.vocab_size, (batch, cfg.num_code_groups), generator=g)
        return cls(text_ids, codec_ids, pads, codes, speech_like_waveform(seed))


def mrope_probe_positions(bsz: int, length: int) -> torch.Tensor:
    """Three different M-RoPE position rows [3, bsz, length] for the talker probes (exact suite and
    fast path). Generation feeds three equal rows, where M-RoPE equals 1-D RoPE; only different
    rows can see how the sections are laid out.

    The rows are spread far apart (slopes 1, 4, -3) because a contiguous-instead-of-interleaved
    section layout moves the bf16 fast step by only 2.5e-2 max rel with gentler rows, inside its
    tolerance; with these it moves by 8.5e-2 (cosine 0.9956), against 6.3e-3 clean.

    The first row must advance by exactly 1 per position. Upstream passes it to transformers'
    create_causal_mask as the text position ids, and with no attention mask and no cache
    transformers reads every other step as the start of a new packed sequence
    (masking_utils.find_packed_sequence_indices) and masks attention across it: upstream itself
    then answers a different question (the exact path differs by 2.85 for rows [3p, ...])."""
    p = torch.arange(length).float()
    rows = torch.stack([p, 4 * p + 10, 40 - 3 * p])
    return rows.unsqueeze(1).expand(3, bsz, length)


def talker_probe_inputs(
    hidden_size: int, rms_norm_eps: float, dtype: torch.dtype, seed: int
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The inputs of the two talker probes, (name, hidden states, M-RoPE positions), shared by the
    exact suite and the fast path:

    - ``mrope``: three *different* M-RoPE position rows (mrope_probe_positions). Generation always
      feeds three identical rows (which makes M-RoPE equal to 1-D RoPE), so only this probe can see
      the section split and the interleaving.
    - ``small_rms``: hidden states whose mean square is ten times the RMSNorm eps. Real embeddings
      have mean squares near 1, where an eps of 1e-3 instead of 1e-6 moves the normalisation by
      ~4e-4 relative: under bf16's 8-bit mantissa, so no other bf16 forward case can see eps. Here an
      eps ten times too large shrinks the first layer's attention input by a quarter (sqrt(11/20)).
    """
    bsz, length = 2, 9
    g = torch.Generator().manual_seed(seed + 11)
    mrope_x = torch.randn(bsz, length, hidden_size, generator=g).to(dtype)
    g = torch.Generator().manual_seed(seed + 13)
    small_x = ((10 * rms_norm_eps) ** 0.5 * torch.randn(bsz, length, hidden_size, generator=g)).to(dtype)
    plain_pos = torch.arange(length).float().expand(3, bsz, length)
    return [("mrope", mrope_x, mrope_probe_positions(bsz, length)), ("small_rms", small_x, plain_pos)]


def speech_like_waveform(seed: int, seconds: float = 1.0, sr: int = 24000) -> np.ndarray:
    """Deterministic harmonic tone with vibrato and a little noise, peak about 0.6.

    The harmonics reach 6 kHz and the noise floor sits 40 dB down so that every Res2Net branch of
    the fixture speaker encoder has live ReLU channels: with 11 harmonics (1.7 kHz) and a -30 dB
    floor, branch 3 of block 1 fired in 4% of the frames and a 0.1% perturbation of its bias went
    unseen (tests/test_speaker_encoder_sharpness.py)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * math.pi * 3 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sr
    wav = sum((0.3 / k) * np.sin(k * phase + rng.uniform(0, 2 * math.pi)) for k in range(1, 43))
    wav = wav * (0.6 + 0.4 * np.sin(2 * math.pi * 2 * t)) + 0.005 * rng.standard_normal(t.shape)
    return (0.6 * wav / np.abs(wav).max()).astype(np.float32)


def load_upstream_wrapper(src: str | Path, dtype: torch.dtype):
    """Upstream's Qwen3TTSModel (processor + model), loaded the way its README loads it."""
    from qwen_tts import Qwen3TTSModel

    wrapper = Qwen3TTSModel.from_pretrained(str(src), dtype=dtype)
    wrapper.model.eval()
    align_weights(wrapper.model)
    align_weights(wrapper.model.speech_tokenizer.model)
    return wrapper


WEIGHT_ALIGNMENT = 64  # bytes: torch's CPU allocator, and so every tensor upstream's loader casts


def align_weights(module: torch.nn.Module) -> int:
    """Move every parameter and buffer of ``module`` that is not 64-byte aligned into fresh
    torch-allocated memory (same values, same strides); returns how many moved.

    transformers keeps an uncast safetensors tensor as a view into the mapped file, at whatever
    address the file's layout gives (8 mod 16 bytes is common); a cast tensor (every released
    checkpoint is bf16, so every fp32 load of one) lands 64-byte aligned. On some CPUs MKL's fp32
    matrix-vector product rounds by the weight's address (AMD EPYC, measured: upstream's own
    speaker embedding moves by 1.9e-06 when its fixture weights are realigned; no change on the
    Intel Xeon with AVX-512), so both sides are compared with weights where a cast would put them,
    which is where the standalone's reader always puts them."""
    moved = 0
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.numel() and t.data_ptr() % WEIGHT_ALIGNMENT:
                t.data = t.data.clone()
                moved += 1
    return moved


def load_upstream(src: str | Path, dtype: torch.dtype):
    """Upstream's Qwen3TTSForConditionalGeneration."""
    return load_upstream_wrapper(src, dtype).model


def _layer_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}.layers.{i}" for i in range(n)]


@torch.inference_mode()
def run_forward_cases(upstream, standalone: Qwen3TTS, dtype: torch.dtype, seed: int = 0) -> list[Comparison]:
    inp = ParityInputs.make(standalone, seed)
    up_talker, st_talker = upstream.talker, standalone.talker
    ref = up_talker.text_projection(up_talker.model.text_embedding(inp.text_ids))
    results = [compare("text_projection", ref, st_talker.embed_text(inp.text_ids), dtype)]
    bsz, length = inp.text_ids.shape
    results += _talker_case(
        upstream, standalone, inp, "talker.prefill", torch.ones(bsz, length, dtype=torch.long), dtype
    )
    mask = torch.ones(bsz, length, dtype=torch.long)
    for row, pad in enumerate(inp.pad_lengths):
        mask[row, :pad] = 0
    results += _talker_case(upstream, standalone, inp, "talker.padded", mask, dtype)
    results += _code_predictor_cases(upstream, standalone, inp, dtype)
    if upstream.speaker_encoder is not None:
        results += _speaker_encoder_cases(upstream, standalone, inp, dtype)
    return results


def _talker_case(upstream, standalone, inp, name: str, mask: torch.Tensor, dtype) -> list[Comparison]:
    """Talker prefill (hidden states and logits on the real positions), unpadded or left-padded."""
    up_talker, st_talker = upstream.talker, standalone.talker
    up_x = up_talker.text_projection(up_talker.model.text_embedding(inp.text_ids)) + up_talker.model.codec_embedding(
        inp.codec_ids
    )
    st_x = st_talker.embed_text(inp.text_ids) + st_talker.codec_embedding(inp.codec_ids)
    n_layers = len(up_talker.model.layers)
    with capture_outputs([*up_talker.model.layers, up_talker.model.norm]) as up_cap:
        up_out = up_talker(inputs_embeds=up_x, attention_mask=mask, use_cache=False)
    with capture_outputs(list(st_talker.decoder.layers)) as st_cap:
        st_hidden, st_logits = st_talker(st_x, attention_mask=mask)
    real = mask.bool()
    hidden_cmp = compare(f"{name}.hidden", up_cap[-1][0][real], st_hidden[real], dtype)
    logits_cmp = compare(f"{name}.logits", up_out.logits[real], st_logits[real], dtype)
    if not (hidden_cmp.passed and logits_cmp.passed):
        names, ups, sts = _layer_names("talker", n_layers), [c[0] for c in up_cap[:-1]], [c[0] for c in st_cap]
        bad = first_divergent_layer(names, ups, sts, dtype, select=lambda t: t[real])
        diff = first_differing_layer(names, ups, sts, select=lambda t: t[real])
        for c in (hidden_cmp, logits_cmp):
            c.first_bad_layer = bad or "talker.norm/codec_head"
            c.first_diff_layer = diff or "talker.norm/codec_head"
    return [hidden_cmp, logits_cmp]


def _code_predictor_cases(upstream, standalone, inp, dtype) -> list[Comparison]:
    """Teacher-forced logits of every residual group."""
    up_talker, st_talker = upstream.talker, standalone.talker
    h = up_talker.text_projection(up_talker.model.text_embedding(inp.text_ids[:, :1]))[:, 0]
    h_st = st_talker.embed_text(inp.text_ids[:, :1])[:, 0]
    cp_layers = up_talker.code_predictor.model.layers
    with capture_outputs(list(cp_layers)) as up_cap:
        ref_logits, _ = up_talker.forward_sub_talker_finetune(inp.frame_codes, h)
    with capture_outputs(list(standalone.code_predictor.decoder.layers)) as st_cap:
        got_logits = standalone.code_predictor.teacher_forced_logits(h_st, inp.frame_codes, st_talker.codec_embedding)
    names, ups, sts = _layer_names("code_predictor", len(cp_layers)), [c[0] for c in up_cap], [c[0] for c in st_cap]
    bad_cp = first_divergent_layer(names, ups, sts, dtype)
    diff_cp = first_differing_layer(names, ups, sts)
    results = []
    for k in range(ref_logits.shape[1]):
        c = compare(f"code_predictor.group{k + 1}", ref_logits[:, k], got_logits[:, k], dtype)
        if not c.passed:
            c.first_bad_layer = bad_cp or f"code_predictor.heads[{k}]"
            c.first_diff_layer = diff_cp or f"code_predictor.heads[{k}]"
        results.append(c)
    return results


def _speaker_encoder_cases(upstream, standalone, inp, dtype) -> list[Comparison]:
    """The mel front end and the x-vector, with every block's output held to the tolerance."""
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    from q3tts.standalone.mel import log_mel_spectrogram

    wav = torch.from_numpy(inp.waveform)[None]
    ref_mel = mel_spectrogram(
        wav, n_fft=1024, num_mels=128, sampling_rate=24000, hop_size=256, win_size=1024, fmin=0, fmax=12000
    )
    results = [compare("speaker_encoder.mel", ref_mel, log_mel_spectrogram(wav), torch.float32)]
    up_blocks = list(upstream.speaker_encoder.blocks)
    with capture_outputs(up_blocks) as up_cap:
        ref = upstream.extract_speaker_embedding(inp.waveform, 24000)
    with capture_outputs(list(standalone.speaker_encoder.blocks)) as st_cap:
        got = standalone.extract_speaker_embedding(inp.waveform, 24000)
    c = compare("speaker_encoder.embedding", ref, got, dtype)
    # The block outputs are compared too: attentive pooling and the final projection attenuate
    # some Res2Net branches so much that a 0.1% change of one reaches the x-vector below the fp32
    # bound (measured: 4.8e-6 for block 2, branch 0), while the block's own output moves by orders
    # of magnitude more.
    names = [f"speaker_encoder.blocks.{i}" for i in range(len(up_blocks))]
    ups, sts = [x[0] for x in up_cap], [x[0] for x in st_cap]
    bad_block = first_divergent_layer(names, ups, sts, dtype)
    if not c.passed or bad_block:
        c.passed = False
        c.first_bad_layer = bad_block or "speaker_encoder.mfa/asp/fc"
        c.first_diff_layer = first_differing_layer(names, ups, sts) or "speaker_encoder.mfa/asp/fc"
        if bad_block and not c.note:
            c.note = f"{bad_block} output over tolerance"
    results.append(c)
    return results


def format_table(results: list[Comparison]) -> str:
    header = f"{'case':34} {'dtype':5} {'max_abs':>10} {'max_rel':>10} {'cosine':>10} {'bound':>10}  verdict"
    lines = [header, "-" * len(header)]
    for r in results:
        verdict = (
            "PASS" if r.passed else "FAIL" + (f" (first bad layer: {r.first_bad_layer})" if r.first_bad_layer else "")
        )
        if not r.passed and r.first_diff_layer and r.first_diff_layer != r.first_bad_layer:
            verdict += f" (first difference: {r.first_diff_layer})"
        if r.note:
            verdict += f" [{r.note}]"
        lines.append(
            f"{r.case:34} {r.dtype:5} {r.max_abs:10.3e} {r.max_rel:10.3e} {r.cosine:10.7f} {r.bound:10.3e}  {verdict}"
        )
    return "\n".join(lines)
