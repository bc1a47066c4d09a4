"""Parity of qwentts.cpp (GGML, through its Python binding ``qwentts_cpp_cpu``) with the
standalone model, which is itself bit-identical to upstream qwen-tts on the exact path.

Both sides get the same text, speaker, language and greedy settings. The binding's dump
directory gives its prompt ids and codes, so prompts are compared exactly, not assumed:

- prompt ids identical or not (first differing position);
- greedy code agreement: identical frames out of the shorter run, first divergence (frame, group);
- audio from identical codes: qwentts.cpp's own decode of its codes against the standalone codec
  decoding the same codes (max abs, SNR in dB).

The binding does not expose teacher-forced logits per step (only a prefill dump), so
teacher-forced argmax agreement is not reported here.

Entry point for ``verify-parity --engine qwentts.cpp``: ``gguf_parity(...)`` (returns a JSON-able
dict) and ``GGUFEngineUnavailable`` (raised with install instructions when the binding is absent).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BINDING_MODULE = "qwentts_cpp_cpu"
INSTALL_HINT = ("the qwentts.cpp engine needs its Python binding: pip install 'qwen3-tts-standalone[peers]' "
                "(the wheel realtimetts-qwen-native-cpu, import qwentts_cpp_cpu; CPU with AVX2)")

# Measured on the tiny fixtures and 0.6B random weights (see reports/gguf-fidelity.md); audio from
# identical codes through qwentts.cpp's GGML codec (conv kernels run in F16 whatever the file).
AUDIO_SNR_DB_MIN = {"F32": 25.0, "F16": 25.0, "BF16": 15.0, "Q8_0": 15.0}


class GGUFEngineUnavailable(RuntimeError):
    """The qwentts.cpp binding is not installed; the message says how to install it."""


def load_binding():
    try:
        import qwentts_cpp_cpu
    except ImportError as e:
        raise GGUFEngineUnavailable(INSTALL_HINT) from e
    return qwentts_cpp_cpu


def read_dump(path: str | Path) -> np.ndarray:
    """One qwentts.cpp debug dump: int32 ndims, int32 shape[ndims], float32 data."""
    raw = Path(path).read_bytes()
    nd = int(np.frombuffer(raw[:4], np.int32)[0])
    shape = tuple(int(s) for s in np.frombuffer(raw[4:4 + 4 * nd], np.int32))
    return np.frombuffer(raw[4 + 4 * nd:], np.float32).reshape(shape)


def run_qwentts(gguf_dir: str | Path, *, text: str, language: str = "english", speaker: str | None = None,
                instruct: str | None = None, max_new_tokens: int = 16, threads: int = 2) -> dict[str, Any]:
    """Greedy synthesis through the binding: prompt ids, codes [frames, G], audio, timings."""
    binding = load_binding()
    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="qwentts-dump-") as dump:
        t0 = time.perf_counter()
        tts = binding.QwenTTS(talker, codec, cpu_threads=threads)
        load_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            error = None
            try:
                audio, sr = tts.synthesize(text=text, lang=language, speaker=speaker, instruct=instruct,
                                           do_sample=False, subtalker_do_sample=False, repetition_penalty=1.0,
                                           max_new_tokens=max_new_tokens, dump_dir=dump)
            except binding.QwenTTSError as e:
                # e.g. its codec hard-codes 16 codebooks: codes are still dumped, audio is not
                audio, sr, error = np.zeros(0, np.float32), 0, str(e) or "synthesize failed"
            synth_s = time.perf_counter() - t0
        finally:
            tts.close()
        ids = read_dump(Path(dump) / "prompt-ids.bin").astype(np.int64).tolist()
        codes_path = Path(dump) / "codes-full.bin"
        codes = read_dump(codes_path).astype(np.int64) if codes_path.is_file() else np.zeros((0, 0), np.int64)
    return {"prompt_ids": ids, "codes": codes, "audio": np.asarray(audio, np.float32), "sample_rate": sr,
            "load_s": load_s, "synth_s": synth_s, "error": error}


def run_standalone(model, *, text: str, language: str = "english", speaker: str | None = None,
                   instruct: str | None = None, max_new_tokens: int = 16, non_streaming_mode: bool = True) -> dict[str, Any]:
    """The same request on the standalone model (greedy): prompt ids (text part) and codes.
    ``non_streaming_mode=True`` is upstream's default in generate_custom_voice / voice_design /
    voice_clone and the prompt layout qwentts.cpp builds (all text in the prefill)."""
    from q3tts.standalone.text import TextTokenizer

    tok = TextTokenizer.from_dir(model.checkpoint_dir)
    ids = tok.encode(tok.assistant_text(text))
    instruct_ids = [torch.tensor([tok.encode(tok.instruct_text(instruct))])] if instruct else None
    t0 = time.perf_counter()
    codes, _ = model.generate(input_ids=[torch.tensor([ids])], instruct_ids=instruct_ids, languages=[language],
                              speakers=[speaker], do_sample=False, subtalker_dosample=False,
                              repetition_penalty=1.0, max_new_tokens=max_new_tokens,
                              non_streaming_mode=non_streaming_mode)
    return {"prompt_ids": ids, "codes": codes[0].cpu().numpy().astype(np.int64), "synth_s": time.perf_counter() - t0}


def first_difference(a, b) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def code_agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    n = min(len(ref), len(got))
    same = [bool(np.array_equal(ref[i], got[i])) for i in range(n)]
    first = next((i for i, s in enumerate(same) if not s), None)
    group = None if first is None else int(np.flatnonzero(ref[first] != got[first])[0])
    if first is None and len(ref) != len(got):
        # one side stopped (EOS) earlier: the group-0 choice at frame n differs. Upstream blocks
        # EOS for the first 2 frames (min_new_tokens=2); qwentts.cpp at the pinned wheel does not.
        first, group = n, 0
    return {"frames_ref": int(len(ref)), "frames_engine": int(len(got)), "identical_frames": int(sum(same)),
            "compared_frames": n, "first_divergence": None if first is None else {"frame": first, "group": group},
            "same_length": len(ref) == len(got)}


def audio_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    n = min(len(ref), len(got))
    if n == 0:
        return {"samples": 0, "max_abs": None, "snr_db": None, "length_ref": len(ref), "length_engine": len(got)}
    r, g = ref[:n].astype(np.float64), got[:n].astype(np.float64)
    err = float(np.sum((r - g) ** 2))
    snr = float("inf") if err == 0 else 10 * np.log10(max(float(np.sum(r ** 2)), 1e-30) / err)
    return {"samples": n, "max_abs": float(np.max(np.abs(r - g))), "snr_db": snr,
            "length_ref": int(len(ref)), "length_engine": int(len(got))}


def gguf_parity(model_dir: str | Path, gguf_dir: str | Path, *, text: str = "Hello world.", language: str = "english",
                speaker: str | None = None, instruct: str | None = None, max_new_tokens: int = 16,
                threads: int = 2, model=None) -> dict[str, Any]:
    """The report ``verify-parity --engine qwentts.cpp`` prints: ``model_dir`` is the upstream (or
    standalone) checkpoint, ``gguf_dir`` its ``convert-ckpt --to gguf`` output."""
    load_binding()
    if model is None:
        from q3tts.standalone.model import Qwen3TTS
        model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32)
    import json
    manifest = json.loads((Path(gguf_dir) / "manifest.json").read_text())
    eng = run_qwentts(gguf_dir, text=text, language=language, speaker=speaker, instruct=instruct,
                      max_new_tokens=max_new_tokens, threads=threads)
    ref = run_standalone(model, text=text, language=language, speaker=speaker, instruct=instruct,
                         max_new_tokens=max_new_tokens)
    # qwentts.cpp dumps the text ids it tokenised (the assistant-templated text)
    diff = first_difference(ref["prompt_ids"], eng["prompt_ids"])
    report: dict[str, Any] = {
        "engine": "qwentts.cpp", "quant": manifest.get("quant"), "model_type": model.config.tts_model_type,
        "prompt_ids": {"identical": diff is None, "first_difference": diff,
                       "ref_len": len(ref["prompt_ids"]), "engine_len": len(eng["prompt_ids"])},
        "codes": code_agreement(ref["codes"], eng["codes"]),
        "teacher_forced": "not exposed by the binding (no per-step logits)",
        "timing": {"engine_s": eng["synth_s"], "standalone_s": ref["synth_s"]},
    }
    if eng["error"]:
        report["engine_error"] = eng["error"]
    if eng["codes"].size and eng["audio"].size:
        wavs, _ = model.decode_codes(torch.as_tensor(eng["codes"]))
        report["audio_from_engine_codes"] = audio_metrics(np.asarray(wavs[0], np.float32), eng["audio"])
    else:
        report["audio_from_engine_codes"] = {"samples": 0, "note": eng["error"] or "engine produced no frames (EOS first)"}
    return report


def write_sixteen_group_checkpoint(dst: str | Path, model_type: str = "custom_voice", *, seed: int = 0,
                                   released_codec: bool = True) -> Path:
    """A tiny upstream checkpoint with 16 code groups and a 16-quantizer codec: the smallest
    shape qwentts.cpp decodes to audio (its codec hard-codes 16 codebooks, so the suite's
    4-group fixture loads and generates codes but gets no audio). The codec is the released one
    by default (random weights, about 0.7 GB in fp32): with the tiny codec's channel counts
    qwentts.cpp aborts the process in decode (GGML_ASSERT(K_OC == K * oc) in ggml.c). Needs
    qwen_tts (the weights come from upstream's own modules)."""
    import copy
    import json

    from safetensors.torch import save_file

    from .fixtures import (GENERATION_CONFIG, build_upstream_codec, build_upstream_modules, random_state_dict,
                           tiny_config, tiny_speech_tokenizer_config, write_text_tokenizer)

    dst = Path(dst)
    (dst / "speech_tokenizer").mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(model_type, num_code_groups=16)
    save_file(random_state_dict(build_upstream_modules(cfg), seed), str(dst / "model.safetensors"), metadata={"format": "pt"})
    if released_codec:
        from .fixtures import randomize_
        from .released import released_speech_tokenizer_config
        codec = released_speech_tokenizer_config()
        state = {k: v.contiguous() for k, v in randomize_(build_upstream_codec(codec), seed + 1).state_dict().items()}
    else:
        codec = copy.deepcopy(tiny_speech_tokenizer_config())
        codec["encoder_valid_num_quantizers"] = 16
        codec["encoder_config"]["num_quantizers"] = 16
        codec["decoder_config"]["num_quantizers"] = 16
        state = random_state_dict(build_upstream_codec(codec), seed + 1)
    save_file(state, str(dst / "speech_tokenizer" / "model.safetensors"), metadata={"format": "pt"})
    for path, obj in ((dst / "config.json", cfg), (dst / "generation_config.json", GENERATION_CONFIG),
                      (dst / "preprocessor_config.json", {"processor_class": "Qwen3TTSProcessor"}),
                      (dst / "speech_tokenizer" / "config.json", codec),
                      (dst / "speech_tokenizer" / "preprocessor_config.json", dict(
                          feature_extractor_type="EncodecFeatureExtractor", feature_size=1, padding_side="right",
                          padding_value=0.0, return_attention_mask=True, sampling_rate=24000))):
        path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    write_text_tokenizer(dst)
    return dst
