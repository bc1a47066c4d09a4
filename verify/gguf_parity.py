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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BINDING_MODULE = "qwentts_cpp_cpu"
INSTALL_HINT = (
    "the qwentts.cpp engine needs its Python binding: pip install 'qwen3-tts-standalone[peers]' "
    "(the wheel realtimetts-qwen-native-cpu, import qwentts_cpp_cpu; CPU with AVX2)"
)

# Audio from identical codes: qwentts.cpp's decode of its codes against the standalone codec on
# the same codes. Measured with the released codec (random weights, 12 frames): F32 31.2 dB,
# F16 29.5, BF16 19.5, Q8_0 15.9 (GGML runs conv kernels in F16 whatever the file holds, so even
# F32 is not exact). Thresholds leave about 3 dB below the measurement; below them is a bug, not
# quantisation. Prompt ids must be identical at every quantisation.
AUDIO_SNR_DB_MIN = {"F32": 28.0, "F16": 26.0, "BF16": 16.0, "Q8_0": 12.0}


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
    shape = tuple(int(s) for s in np.frombuffer(raw[4 : 4 + 4 * nd], np.int32))
    return np.frombuffer(raw[4 + 4 * nd :], np.float32).reshape(shape)


def run_qwentts(
    gguf_dir: str | Path,
    *,
    text: str,
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    max_new_tokens: int = 16,
    threads: int = 2,
) -> dict[str, Any]:
    """Greedy synthesis through the binding: prompt ids, codes [frames, G], audio, timings."""
    binding = load_binding()
    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    with tempfile.TemporaryDirectory(prefix="qwentts-dump-") as dump:
        t0 = time.perf_counter()
        tts = binding.QwenTTS(talker, codec, cpu_threads=threads)
        load_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            error = None
            try:
                audio, sr = tts.synthesize(
                    text=text,
                    lang=language,
                    speaker=speaker,
                    instruct=instruct,
                    do_sample=False,
                    subtalker_do_sample=False,
                    repetition_penalty=1.0,
                    max_new_tokens=max_new_tokens,
                    dump_dir=dump,
                )
            except binding.QwenTTSError as e:
                # e.g. its codec hard-codes 16 codebooks: codes are still dumped, audio is not
                audio, sr, error = np.zeros(0, np.float32), 0, str(e) or "synthesize failed"
            synth_s = time.perf_counter() - t0
        finally:
            tts.close()
        ids = read_dump(Path(dump) / "prompt-ids.bin").astype(np.int64).tolist()
        codes_path = Path(dump) / "codes-full.bin"
        codes = read_dump(codes_path).astype(np.int64) if codes_path.is_file() else np.zeros((0, 0), np.int64)
    return {
        "prompt_ids": ids,
        "codes": codes,
        "audio": np.asarray(audio, np.float32),
        "sample_rate": sr,
        "load_s": load_s,
        "synth_s": synth_s,
        "error": error,
    }


def run_standalone(
    model,
    *,
    text: str,
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    max_new_tokens: int = 16,
    non_streaming_mode: bool = True,
) -> dict[str, Any]:
    """The same request on the standalone model (greedy): prompt ids (text part) and codes.
    ``non_streaming_mode=True`` is upstream's default in generate_custom_voice / voice_design /
    voice_clone and the prompt layout qwentts.cpp builds (all text in the prefill)."""
    from q3tts.standalone.text import TextTokenizer

    tok = TextTokenizer.from_dir(model.checkpoint_dir)
    ids = tok.encode(tok.assistant_text(text))
    instruct_ids = [torch.tensor([tok.encode(tok.instruct_text(instruct))])] if instruct else None
    t0 = time.perf_counter()
    codes, _ = model.generate(
        input_ids=[torch.tensor([ids])],
        instruct_ids=instruct_ids,
        languages=[language],
        speakers=[speaker],
        do_sample=False,
        subtalker_dosample=False,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        non_streaming_mode=non_streaming_mode,
    )
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
    return {
        "frames_ref": int(len(ref)),
        "frames_engine": int(len(got)),
        "identical_frames": int(sum(same)),
        "compared_frames": n,
        "first_divergence": None if first is None else {"frame": first, "group": group},
        "same_length": len(ref) == len(got),
    }


def audio_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    n = min(len(ref), len(got))
    if n == 0:
        return {"samples": 0, "max_abs": None, "snr_db": None, "length_ref": len(ref), "length_engine": len(got)}
    r, g = ref[:n].astype(np.float64), got[:n].astype(np.float64)
    err = float(np.sum((r - g) ** 2))
    snr = float("inf") if err == 0 else 10 * np.log10(max(float(np.sum(r**2)), 1e-30) / err)
    return {
        "samples": n,
        "max_abs": float(np.max(np.abs(r - g))),
        "snr_db": snr,
        "length_ref": int(len(ref)),
        "length_engine": int(len(got)),
    }


def gguf_parity(
    model_dir: str | Path,
    gguf_dir: str | Path,
    *,
    text: str = "Hello world.",
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    max_new_tokens: int = 16,
    threads: int = 2,
    model=None,
) -> dict[str, Any]:
    """The report ``verify-parity --engine qwentts.cpp`` prints: ``model_dir`` is the upstream (or
    standalone) checkpoint, ``gguf_dir`` its ``convert-ckpt --to gguf`` output."""
    load_binding()
    if model is None:
        from q3tts.standalone.model import Qwen3TTS

        model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32)
    import json

    manifest = json.loads((Path(gguf_dir) / "manifest.json").read_text())
    eng = run_qwentts(
        gguf_dir,
        text=text,
        language=language,
        speaker=speaker,
        instruct=instruct,
        max_new_tokens=max_new_tokens,
        threads=threads,
    )
    ref = run_standalone(
        model, text=text, language=language, speaker=speaker, instruct=instruct, max_new_tokens=max_new_tokens
    )
    # qwentts.cpp dumps the text ids it tokenised (the assistant-templated text)
    diff = first_difference(ref["prompt_ids"], eng["prompt_ids"])
    report: dict[str, Any] = {
        "engine": "qwentts.cpp",
        "quant": manifest.get("quant"),
        "model_type": model.config.tts_model_type,
        "prompt_ids": {
            "identical": diff is None,
            "first_difference": diff,
            "ref_len": len(ref["prompt_ids"]),
            "engine_len": len(eng["prompt_ids"]),
        },
        "codes": code_agreement(ref["codes"], eng["codes"]),
        "teacher_forced": "not exposed by the binding (no per-step logits)",
        "timing": {"engine_s": eng["synth_s"], "standalone_s": ref["synth_s"]},
    }
    if eng["error"]:
        report["engine_error"] = eng["error"]
    problems = []
    if diff is not None:
        problems.append(f"prompt ids differ at position {diff} (a tokenizer/special-token conversion bug)")
    if eng["codes"].size and eng["audio"].size:
        wavs, _ = model.decode_codes(torch.as_tensor(eng["codes"]))
        report["audio_from_engine_codes"] = audio_metrics(np.asarray(wavs[0], np.float32), eng["audio"])
    else:
        report["audio_from_engine_codes"] = {
            "samples": 0,
            "note": eng["error"] or "engine produced no frames (EOS first)",
        }
    snr = report["audio_from_engine_codes"].get("snr_db")
    floor = AUDIO_SNR_DB_MIN.get(report["quant"])
    if snr is not None and floor is not None and snr < floor:
        problems.append(
            f"audio from identical codes: SNR {snr:.1f} dB < {floor} dB for {report['quant']} (codec conversion bug)"
        )
    report["tolerances"] = {"audio_snr_db_min": floor, "prompt_ids": "identical"}
    report["problems"] = problems
    report["ok"] = not problems
    return report


def write_sixteen_group_checkpoint(
    dst: str | Path, model_type: str = "custom_voice", *, seed: int = 0, released_codec: bool = True
) -> Path:
    """A tiny upstream checkpoint with 16 code groups and a 16-quantizer codec: the smallest
    shape qwentts.cpp decodes to audio (its codec hard-codes 16 codebooks, so the suite's
    4-group fixture loads and generates codes but gets no audio). The codec is the released one
    by default (random weights, about 0.7 GB in fp32): with the tiny codec's channel counts
    qwentts.cpp aborts the process in decode (GGML_ASSERT(K_OC == K * oc) in ggml.c). Needs
    qwen_tts (the weights come from upstream's own modules)."""
    import copy
    import json

    from safetensors.torch import save_file

    from .fixtures import (
        GENERATION_CONFIG,
        build_upstream_codec,
        build_upstream_modules,
        random_state_dict,
        tiny_config,
        tiny_speech_tokenizer_config,
        write_text_tokenizer,
    )

    dst = Path(dst)
    (dst / "speech_tokenizer").mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(model_type, num_code_groups=16)
    save_file(
        random_state_dict(build_upstream_modules(cfg), seed), str(dst / "model.safetensors"), metadata={"format": "pt"}
    )
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
    for path, obj in (
        (dst / "config.json", cfg),
        (dst / "generation_config.json", GENERATION_CONFIG),
        (dst / "preprocessor_config.json", {"processor_class": "Qwen3TTSProcessor"}),
        (dst / "speech_tokenizer" / "config.json", codec),
        (
            dst / "speech_tokenizer" / "preprocessor_config.json",
            dict(
                feature_extractor_type="EncodecFeatureExtractor",
                feature_size=1,
                padding_side="right",
                padding_value=0.0,
                return_attention_mask=True,
                sampling_rate=24000,
            ),
        ),
    ):
        path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    write_text_tokenizer(dst)
    return dst


# --------------------------------------------------------------------------------------------
# Localisation: which stage of qwentts.cpp first leaves the standalone model
# --------------------------------------------------------------------------------------------

# Per-stage tolerances (max abs), measured at F32 on the tiny fixtures: input embeddings 3e-7,
# final prefill hidden 1.1e-6, prefill logits 3.8e-6. Quantised files differ more by design;
# stage_report is meant for F32 files (a bug shows as an O(1) difference).
STAGE_ATOL = {
    "talker-input-embed": 1e-4,
    "talker-hidden-prefill-l0": 1e-3,
    "talker-hidden-prefill-final": 1e-3,
    "talker-logits-prefill": 1e-2,
}


def _engine_prefill_dump(binding, gguf_dir, text, language, speaker, instruct, threads) -> dict:
    """qwentts.cpp's own dumps (prompt ids, embeddings, prefill states) of a one-frame request."""
    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    with tempfile.TemporaryDirectory(prefix="qwentts-dump-") as dump:
        tts = binding.QwenTTS(talker, codec, cpu_threads=threads)
        try:
            with contextlib.suppress(binding.QwenTTSError):
                tts.synthesize(
                    text=text,
                    lang=language,
                    speaker=speaker,
                    instruct=instruct,
                    do_sample=False,
                    subtalker_do_sample=False,
                    repetition_penalty=1.0,
                    max_new_tokens=1,
                    dump_dir=dump,
                )
        finally:
            tts.close()
        eng = {p.stem: read_dump(p) for p in Path(dump).glob("*.bin")}
    return eng


def stage_report(
    model,
    gguf_dir: str | Path,
    *,
    text: str = "Hello world.",
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """Prompt ids, input embeddings, layer-0 and final prefill hidden states and prefill logits of
    qwentts.cpp against the standalone model on the same request; ``first_bad`` names the first
    stage beyond STAGE_ATOL (or ``prompt-ids``)."""
    binding = load_binding()
    from q3tts.standalone.prompt import build_talker_prompt
    from q3tts.standalone.text import TextTokenizer

    eng = _engine_prefill_dump(binding, gguf_dir, text, language, speaker, instruct, threads)
    tok = TextTokenizer.from_dir(model.checkpoint_dir)
    ids = tok.encode(tok.assistant_text(text))
    instruct_ids = [torch.tensor([tok.encode(tok.instruct_text(instruct))])] if instruct else None
    with torch.inference_mode():
        prompt = build_talker_prompt(
            model, [torch.tensor([ids])], instruct_ids, None, None, [language], [speaker], non_streaming_mode=True
        )
        collect: list = []
        hidden, logits = model.talker(prompt.inputs_embeds, collect=collect)
    ref = {
        "talker-input-embed": prompt.inputs_embeds[0],
        "talker-hidden-prefill-final": hidden[0],
        "talker-logits-prefill": logits[0, -1],
    }
    if collect:
        ref["talker-hidden-prefill-l0"] = collect[0][0] if isinstance(collect[0], torch.Tensor) else None
    out: dict[str, Any] = {"stages": {}, "first_bad": None}
    eng_ids = eng.get("prompt-ids", np.zeros(0)).astype(np.int64).tolist()
    ids_ok = eng_ids == ids
    out["stages"]["prompt-ids"] = {
        "ok": ids_ok,
        "ref_len": len(ids),
        "engine_len": len(eng_ids),
        "first_difference": first_difference(ids, eng_ids),
    }
    if not ids_ok:
        out["first_bad"] = "prompt-ids"
    for name in (
        "talker-input-embed",
        "talker-hidden-prefill-l0",
        "talker-hidden-prefill-final",
        "talker-logits-prefill",
    ):
        r, e = ref.get(name), eng.get(name)
        if r is None or e is None:
            out["stages"][name] = {"ok": None, "note": "not available"}
            continue
        r = r.float().cpu().numpy()
        if r.shape != e.shape:
            out["stages"][name] = {"ok": False, "note": f"shape {r.shape} vs engine {e.shape}"}
        else:
            d = float(np.abs(r - e).max())
            out["stages"][name] = {"ok": d <= STAGE_ATOL[name], "max_abs": d}
        if out["stages"][name]["ok"] is False and out["first_bad"] is None:
            out["first_bad"] = name
    return out


def audit_gguf(upstream_dir: str | Path, gguf_dir: str | Path) -> dict[str, Any]:
    """Static checks of a GGUF pair against its upstream checkpoint, independent of the layout
    table's rules: the M-RoPE flag under the loader's key, every configured special id holding its
    special token, and every decoder codebook equal to embedding_sum / clamp(cluster_usage)."""
    import json

    import gguf
    from safetensors import safe_open

    from q3tts.standalone.gguf_conversion import gguf_paths

    upstream_dir = Path(upstream_dir)
    cfg = json.loads((upstream_dir / "config.json").read_text())
    tok_cfg = json.loads((upstream_dir / "tokenizer_config.json").read_text())
    talker, codec = gguf_paths(gguf_dir)
    problems: list[str] = []

    def field(reader, key):
        f = reader.fields.get(key)
        if f is None:
            return None
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            return [f.parts[i] for i in f.data]
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]

    tr = gguf.GGUFReader(str(talker))
    rs = cfg["talker_config"].get("rope_scaling") or {}
    if "mrope_section" in rs:
        got = field(tr, "qwen3-tts.talker.rope.mrope_interleaved")
        if got is None or bool(got) != bool(rs.get("interleaved", False)):
            problems.append(
                f"metadata qwen3-tts.talker.rope.mrope_interleaved={got} but config interleaved="
                f"{rs.get('interleaved', False)}"
            )
    tokens = [bytes(t).decode("utf-8", "replace") for t in field(tr, "tokenizer.ggml.tokens")]
    added = {int(k): v["content"] for k, v in (tok_cfg.get("added_tokens_decoder") or {}).items()}
    for key in ("im_start_token_id", "im_end_token_id", "tts_pad_token_id", "tts_bos_token_id", "tts_eos_token_id"):
        i = int(cfg[key])
        if i >= len(tokens) or tokens[i] != added.get(i):
            problems.append(
                f"tokenizer: {key}={i} holds {tokens[i] if i < len(tokens) else None!r}, expected {added.get(i)!r}"
            )
    cr = gguf.GGUFReader(str(codec))
    tensors = {t.name: t for t in cr.tensors}
    with safe_open(str(upstream_dir / "speech_tokenizer" / "model.safetensors"), "pt") as f:
        for side in ("first", "rest"):
            layer = 0
            while f"decoder.quantizer.rvq_{side}.vq.layers.{layer}._codebook.embedding_sum" in f.keys():
                base = f"decoder.quantizer.rvq_{side}.vq.layers.{layer}._codebook."
                s, u = f.get_tensor(base + "embedding_sum").float(), f.get_tensor(base + "cluster_usage").float()
                want = (s / u.clamp(min=1e-5)[:, None]).numpy()
                name = f"tok_dec.vq_{side}.{layer}.codebook"
                t = tensors.get(name)
                if t is None:
                    problems.append(f"tensor {name}: missing")
                else:
                    got = np.asarray(t.data, np.float32).reshape(want.shape)
                    d = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
                    if d > 1e-5:
                        problems.append(f"tensor {name}: differs from embedding_sum / cluster_usage (rel {d:.3g})")
                layer += 1
    return {"ok": not problems, "problems": problems}


def write_released_id_tokenizer(dst: str | Path) -> None:
    """Rewrite the text tokenizer of ``dst`` (a write_release_size_checkpoint directory, which
    carries the tiny tokenizer) so its special tokens sit at the released ids the released
    config names (151643.., 151671..). Without this the GGUF converter rightly refuses: qwentts.cpp
    would register the wrong strings as specials and spell ``<|im_start|>`` out as text."""
    import json

    dst = Path(dst)
    cfg = json.loads((dst / "config.json").read_text())
    vocab = json.loads((dst / "vocab.json").read_text())
    tok_cfg = json.loads((dst / "tokenizer_config.json").read_text())
    specials = {v["content"] for v in tok_cfg["added_tokens_decoder"].values()}
    vocab = {t: i for t, i in vocab.items() if t not in specials}
    first = 151643  # <|endoftext|>, the first added token of the released tokenizer
    for i in range(len(vocab), first):
        vocab[f"<filler_{i}>"] = i
    named = {
        first: "<|endoftext|>",
        cfg["im_start_token_id"]: "<|im_start|>",
        cfg["im_end_token_id"]: "<|im_end|>",
        cfg["tts_pad_token_id"]: "<tts_pad>",
        cfg["tts_bos_token_id"]: "<tts_text_bos>",
        cfg["tts_eos_token_id"]: "<tts_text_eod>",
    }
    last = max(named)
    added = {
        str(i): dict(
            content=named.get(i, f"<|extra_{i}|>"),
            lstrip=False,
            normalized=False,
            rstrip=False,
            single_word=False,
            special=True,
        )
        for i in range(first, last + 1)
    }
    tok_cfg["added_tokens_decoder"] = added
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False), encoding="utf-8")


def render_markdown(report: dict[str, Any]) -> str:
    """A human summary of one gguf_parity report (for verify-parity --engine qwentts.cpp)."""
    c, a, p = report["codes"], report.get("audio_from_engine_codes", {}), report["prompt_ids"]
    fd = c["first_divergence"]
    lines = [
        f"## qwentts.cpp, {report['model_type']}, {report['quant']}",
        f"- prompt ids: {'identical' if p['identical'] else 'DIFFER at ' + str(p['first_difference'])} "
        f"({p['ref_len']} vs {p['engine_len']} ids)",
        f"- greedy codes: {c['identical_frames']} of {c['compared_frames']} frames identical; first divergence: "
        + ("none" if fd is None else f"frame {fd['frame']}, group {fd['group']}"),
        f"- teacher-forced argmax: {report['teacher_forced']}",
        f"- audio from identical codes: SNR {a.get('snr_db', 0):.1f} dB, max abs {a.get('max_abs', 0):.3g} "
        f"(floor {report['tolerances']['audio_snr_db_min']} dB)"
        if a.get("samples")
        else f"- audio: {a.get('note')}",
        f"- verdict: {'ok' if report['ok'] else 'FAIL: ' + '; '.join(report['problems'])}",
    ]
    return "\n".join(lines) + "\n"


def engine_parity_main(model_dir, gguf_dir, **request) -> tuple[dict[str, Any], int]:
    """For verify-parity --engine qwentts.cpp: (report, exit code). Exit 2 with the install hint
    in the report when the binding is absent, 1 when a problem beyond quantisation was found."""
    try:
        report = gguf_parity(model_dir, gguf_dir, **request)
    except GGUFEngineUnavailable as e:
        return {"engine": "qwentts.cpp", "error": str(e)}, 2
    return report, 0 if report["ok"] else 1
