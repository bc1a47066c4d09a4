"""Speech-tokenizer encoder parity: audio -> codes, standalone vs upstream's Qwen3TTSTokenizer.encode.

Every case encodes the same audio on both sides through the public entry points (upstream's
``Qwen3TTSTokenizer.encode``, the standalone ``Qwen3TTS.encode_audio``) and requires identical
codes. Independently, both encoders are run on the same prepared batch with hooks, and every
stage is compared (front end = the resampled waveforms, conv stack, each transformer layer,
downsample, quantizer codes): the case fails when the codes differ or any stage exceeds the
dtype's tolerance, and names the first such stage and the first differing (item, frame, group).

Component "speech_encoder", kind "encoder". ``encoder_results`` returns the suite's CaseResult
objects.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from q3tts.standalone.audio import normalize_inputs
from q3tts.verify.cases.common import CaseResult
from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.compare import DTYPE_NAMES, first_divergence

COMPONENT = "speech_encoder"


def speech_clip(seed: int, seconds: float, sr: int = 24000) -> np.ndarray:
    """Speech-like tone plus gated noise bursts (spreads codes over the codebooks)."""
    rng = np.random.default_rng(seed)
    wav = speech_like_waveform(seed, seconds, sr)
    gate = np.sin(np.arange(wav.shape[0]) / sr * 2 * np.pi * 1.5) > 0.3
    return (0.7 * wav + 0.2 * rng.standard_normal(wav.shape) * gate).astype(np.float32)


def _stereo_file(directory: Path) -> str:
    import soundfile as sf

    wav = speech_clip(9, 1.2, 44100)
    path = directory / "stereo-44k.wav"
    sf.write(str(path), np.stack([wav, 0.5 * wav[::-1]], axis=-1), 44100, subtype="PCM_16")
    return str(path)


# name -> builder(tmpdir) -> (audio, sr): ``audio`` is what both encode calls receive.
CASES: dict[str, Callable[[Path], tuple[Any, int | None]]] = {
    "short_0.3s": lambda d: (speech_clip(1, 0.3), 24000),
    "one_frame_plus_one": lambda d: (speech_clip(2, 1.0)[:1921], 24000),
    "speech_2s": lambda d: (speech_clip(3, 2.0), 24000),
    # 11 s = 275 frames at 25 Hz: beyond the encoder transformer's 250-frame sliding window,
    # which upstream does not apply (full causal attention).
    "long_11s": lambda d: (speech_clip(4, 11.0), 24000),
    "padded_batch": lambda d: ([speech_clip(5, 0.41), speech_clip(6, 1.73), speech_clip(7, 0.95)], 24000),
    "16kHz": lambda d: (speech_clip(8, 1.7, 16000), 16000),
    "44.1kHz": lambda d: (speech_clip(10, 1.3, 44100), 44100),
    "digital_silence": lambda d: (np.zeros(24000, dtype=np.float32), 24000),
    "clipped_full_scale": lambda d: (np.clip(4.0 * speech_clip(11, 1.5), -1.0, 1.0).astype(np.float32), 24000),
    "stereo_file_44.1kHz": lambda d: (_stereo_file(d), None),
}

STAGE_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}  # max abs / max |ref| per stage


@torch.inference_mode()
def stage_outputs_upstream(tokenizer, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Upstream's per-stage outputs on a prepared batch [B, 1, L], via forward hooks."""
    mimi = tokenizer.model.encoder
    out: dict[str, torch.Tensor] = {}
    handles = [mimi.encoder.register_forward_hook(lambda m, a, o: out.__setitem__("conv_stack", o))]
    for k, layer in enumerate(mimi.encoder_transformer.layers):
        handles.append(
            layer.register_forward_hook(
                lambda m, a, o, k=k: out.__setitem__(f"transformer.layers.{k}", o[0] if isinstance(o, tuple) else o)
            )
        )
    handles.append(mimi.downsample.register_forward_hook(lambda m, a, o: out.__setitem__("downsample", o)))
    try:
        codes = mimi.encode(batch, return_dict=True).audio_codes
    finally:
        for h in handles:
            h.remove()
    out["quantizer"] = codes[:, : tokenizer.model.encoder_valid_num_quantizers]
    return out


@torch.inference_mode()
def stage_outputs_standalone(encoder, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    encoder(batch.to(encoder.dtype), lambda name, t: out.__setitem__(name, t))
    return out


def compare_stages(
    ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], dtype
) -> tuple[dict[str, float], str | None]:
    """(max abs difference per stage, first stage over tolerance). Codes count as over tolerance
    on any difference; a shape difference is infinite."""
    diffs: dict[str, float] = {}
    first = None
    for name, r in ref.items():
        g = got.get(name)
        if g is None or tuple(g.shape) != tuple(r.shape):
            diffs[name] = float("inf")
        elif name == "quantizer":
            diffs[name] = float((r.cpu() != g.cpu()).sum())  # number of differing codes
        else:
            d = (r.float() - g.float()).abs().max().item() if r.numel() else 0.0
            diffs[name] = d
        scale = 1.0 if name == "quantizer" else max(float(r.float().abs().max()), 1e-6)
        bound = 0.0 if name == "quantizer" else STAGE_TOLERANCE[dtype] * scale
        if first is None and diffs[name] > bound:
            first = name
    return diffs, first


def _front_end(tokenizer, audio, sr) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ref = tokenizer._normalize_audio_inputs(audio, sr=sr)
    got = normalize_inputs(audio, sr, 24000)
    return ref, got


def encoder_case(name: str, tokenizer, standalone, dtype: torch.dtype, workdir: Path) -> CaseResult:
    audio, sr = CASES[name](workdir)
    t0 = time.perf_counter()
    ref = [c.cpu() for c in tokenizer.encode(audio, sr=sr).audio_codes]
    t1 = time.perf_counter()
    got = standalone.encode_audio(audio, sr=sr)
    t2 = time.perf_counter()
    divergence = first_divergence(ref, got)

    # Localisation: the front end, then every stage on the same prepared (upstream's) batch.
    wav_ref, wav_got = _front_end(tokenizer, audio, sr)
    fe_diff = max(
        (float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")) for a, b in zip(wav_ref, wav_got)
    )
    lengths = [len(w) for w in wav_ref]
    batch = torch.zeros(len(wav_ref), 1, max(lengths))
    for i, w in enumerate(wav_ref):
        batch[i, 0, : len(w)] = torch.from_numpy(w)
    encoder = standalone.speech_encoder
    up_stages = stage_outputs_upstream(tokenizer, batch.to(tokenizer.model.dtype))
    st_stages = stage_outputs_standalone(encoder, batch)
    diffs, first_stage = compare_stages(up_stages, st_stages, dtype)
    diffs = {"front_end": fe_diff, **diffs}
    if fe_diff > 0:
        first_stage = "front_end"
    passed = divergence is None and first_stage is None
    if not passed and first_stage is None:
        first_stage = "quantizer"  # codes differ through the public path only
    n_codes = sum(int(r.numel()) for r in ref)
    n_bad = sum(int((r != g.cpu()).sum()) for r, g in zip(ref, got) if r.shape == g.shape)
    note = (
        ""
        if passed
        else (
            f"first stage over tolerance: {first_stage}"
            + (
                f"; first differing code at item {divergence[0]}, frame {divergence[1]}, group {divergence[2]}"
                if divergence
                else ""
            )
        )
    )
    return CaseResult(
        case=f"speech_encoder.{name}",
        component=COMPONENT,
        kind="encoder",
        dtype=DTYPE_NAMES[dtype],
        passed=passed,
        metrics={
            "codes_identical": divergence is None,
            "codes": n_codes,
            "codes_differing": n_bad,
            "frames": [int(r.shape[0]) for r in ref],
            "first_divergence": divergence,
            "stage_max_abs": diffs,
        },
        first_bad_layer=first_stage,
        note=note,
        seconds_upstream=t1 - t0,
        seconds_standalone=t2 - t1,
    )


def encoder_results(
    wrapper, standalone, dtype: torch.dtype = torch.float32, cases: tuple[str, ...] | None = None
) -> list[CaseResult]:
    """Encoder parity cases for a base/any checkpoint pair (``wrapper`` = upstream's Qwen3TTSModel)."""
    tokenizer = wrapper.model.speech_tokenizer
    with tempfile.TemporaryDirectory(prefix="q3tts-encoder-parity-") as tmp:
        return [encoder_case(name, tokenizer, standalone, dtype, Path(tmp)) for name in (cases or tuple(CASES))]


def format_encoder_table(results: list[CaseResult]) -> str:
    lines = [
        "| case | dtype | codes identical | differing codes | first stage | max abs per stage |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        stages = ", ".join(f"{k} {v:.1e}" for k, v in m["stage_max_abs"].items() if k != "quantizer")
        lines.append(
            f"| {r.case} | {r.dtype} | {m['codes_identical']} | {m['codes_differing']}/{m['codes']} | "
            f"{r.first_bad_layer or '-'} | {stages} |"
        )
    return "\n".join(lines)
