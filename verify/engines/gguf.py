"""Parity of qwentts.cpp (GGML, through its Python binding ``qwentts_cpp_cpu``) with the
standalone model, which is itself bit-identical to upstream qwen-tts on the exact path.

Both sides get the same text, speaker, language and greedy settings. The binding's dump
directory gives its prompt ids and codes, so prompts are compared exactly, not assumed:

- prompt ids identical or not (first differing position);
- greedy code agreement: identical frames out of the shorter run, first divergence (frame, group);
- audio from identical codes: qwentts.cpp's own decode of its codes against the standalone codec
  decoding the same codes (max abs, SNR in dB, log-mel distance);
- teacher-forced group-0 argmax at frame 0 (the binding dumps the prefill logits only; the code
  predictor's and later frames' logits are not exposed);
- on F32 files, the prefill stages qwentts.cpp dumps (input embeddings, layer-0 and final hidden,
  logits), and for every file a static audit against the upstream checkpoint.

``classify`` splits the differences into bugs and what quantisation explains. The CLI driver is
verify/engines/parity.py (``verify-parity --engine qwentts.cpp``); ``GGUFEngineUnavailable`` carries
the install hint when the binding is absent.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Tolerances live in verify/compare.py's one table, with their measurements.
from q3tts.verify.compare import ENGINE_AUDIO_SNR_DB_MIN as AUDIO_SNR_DB_MIN
from q3tts.verify.compare import ENGINE_LOG_MEL_MAX as LOG_MEL_MAX
from q3tts.verify.compare import ENGINE_STAGE_ATOL as STAGE_ATOL

BINDING_MODULE = "qwentts_cpp_cpu"
INSTALL_HINT = (
    "the qwentts.cpp engine needs its Python binding: pip install 'qwen3-tts-standalone[peers]' "
    "(the wheel realtimetts-qwen-native-cpu, import qwentts_cpp_cpu; CPU with AVX2)"
)


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
    dump: bool = True,
    log: list | None = None,
) -> dict[str, Any]:
    """Greedy synthesis through the binding: prompt ids, codes [frames, G], audio, timings.
    ``dump=False`` runs without the debug dumps (for timing; no prompt ids or codes then)."""
    binding = load_binding()
    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    want_dump = dump
    with tempfile.TemporaryDirectory(prefix="qwentts-dump-") as dump:
        t0 = time.perf_counter()
        tts = binding.QwenTTS(talker, codec, cpu_threads=threads)
        load_s = time.perf_counter() - t0
        if log is not None:  # the engine's own [Perf] lines, for the benchmark's split
            tts.set_log_callback(lambda _level, message: log.append(message))
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
                    dump_dir=dump if want_dump else None,
                )
            except binding.QwenTTSError as e:
                # e.g. its codec hard-codes 16 codebooks: codes are still dumped, audio is not
                audio, sr, error = np.zeros(0, np.float32), 0, str(e) or "synthesize failed"
            synth_s = time.perf_counter() - t0
        finally:
            if log is not None:  # process-wide in the library: unset before the callback is freed
                tts.set_log_callback(None)
            tts.close()
        ids_path = Path(dump) / "prompt-ids.bin"
        ids = read_dump(ids_path).astype(np.int64).tolist() if ids_path.is_file() else []
        codes_path = Path(dump) / "codes-full.bin"
        codes = read_dump(codes_path).astype(np.int64) if codes_path.is_file() else np.zeros((0, 0), np.int64)
        dumps = {p.stem: read_dump(p) for p in Path(dump).glob("*.bin")}
    return {
        "dumps": dumps,
        "prefill_logits": dumps.get("talker-logits-prefill"),
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


def code_agreement(ref: np.ndarray, got: np.ndarray, max_new_tokens: int | None = None) -> dict[str, Any]:
    """Identical frames over the shorter run and the first differing (frame, group).

    Upstream returns at most max_new_tokens - 1 frames (its last group-0 id gets no residual
    codes); qwentts.cpp returns max_new_tokens. That length difference alone is not a divergence
    and is reported as ``length_note``. Any other length difference is an EOS decision that
    differs: frame = the shorter length, group 0."""
    n = min(len(ref), len(got))
    same = [bool(np.array_equal(ref[i], got[i])) for i in range(n)]
    first = next((i for i, s in enumerate(same) if not s), None)
    group = None if first is None else int(np.flatnonzero(ref[first] != got[first])[0])
    cap_quirk = max_new_tokens is not None and len(ref) == max_new_tokens - 1 and len(got) == max_new_tokens
    if first is None and len(ref) != len(got) and not cap_quirk:
        first, group = n, 0
    out = {
        "frames_ref": int(len(ref)),
        "frames_engine": int(len(got)),
        "identical_frames": int(sum(same)),
        "compared_frames": n,
        "first_divergence": None if first is None else {"frame": first, "group": group},
        "same_length": len(ref) == len(got),
    }
    if cap_quirk:
        out["length_note"] = "upstream stops at max_new_tokens - 1 frames, the engine at max_new_tokens"
    return out


def log_mel_distance(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean |log-mel(ref) - log-mel(got)| (natural log, 128 mels, the project's mel front end)."""
    from q3tts.standalone.mel import log_mel_spectrogram

    pair = torch.from_numpy(np.stack([ref, got]).astype(np.float32))
    mel = log_mel_spectrogram(pair)
    return float((mel[0] - mel[1]).abs().mean())


def audio_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    from q3tts.verify.compare import audio_diff

    n = min(len(ref), len(got))
    if n == 0:
        return {"samples": 0, "max_abs": None, "snr_db": None, "length_ref": len(ref), "length_engine": len(got)}
    max_abs, snr = audio_diff(ref[:n], got[:n])
    return {
        "samples": n,
        "max_abs": max_abs,
        "snr_db": snr,
        "log_mel_l1": log_mel_distance(ref[:n], got[:n]) if n >= 1024 else None,
        "length_ref": int(len(ref)),
        "length_engine": int(len(got)),
    }


def gguf_parity(
    model_dir: str | Path | None,
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
    """The report ``verify-parity --engine qwentts.cpp`` prints for one GGUF pair: ``model_dir`` is
    the upstream checkpoint (also audited against the GGUF files; None skips the audit),
    ``gguf_dir`` its ``convert-ckpt --to gguf`` output. ``problems`` lists what would be a bug;
    ``quantisation_notes`` what the quantisation explains."""
    load_binding()
    if model is None:
        from q3tts.standalone.model import Qwen3TTS

        model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32)
    import json

    quant = json.loads((Path(gguf_dir) / "manifest.json").read_text()).get("quant")
    request = dict(text=text, language=language, speaker=speaker, instruct=instruct)
    eng = run_qwentts(gguf_dir, **request, max_new_tokens=max_new_tokens, threads=threads)
    ref = run_standalone(model, **request, max_new_tokens=max_new_tokens)
    prefill = standalone_prefill(model, **request)
    diff = first_difference(ref["prompt_ids"], eng["prompt_ids"])
    report: dict[str, Any] = {
        "engine": "qwentts.cpp",
        "quant": quant,
        "model_type": model.config.tts_model_type,
        "request": {k: v for k, v in request.items() if v is not None},
        "prompt_ids": {
            "identical": diff is None,
            "first_difference": diff,
            "ref_len": len(ref["prompt_ids"]),
            "engine_len": len(eng["prompt_ids"]),
        },
        "codes": code_agreement(ref["codes"], eng["codes"], max_new_tokens),
        "teacher_forced": {
            "group0_frame0": prefill_argmax(
                prefill["talker-logits-prefill"], eng["prefill_logits"], model.config.talker.code_predictor.vocab_size
            ),
            "later_frames_and_code_predictor": "not exposed by the binding (it dumps logits of the prefill only)",
        },
        "stages": compare_stages(prefill, eng["dumps"]) if quant == "F32" else None,
        "audit": audit_gguf(model_dir, gguf_dir) if model_dir is not None else None,
        "timing": {"engine_s": eng["synth_s"], "standalone_s": ref["synth_s"]},
    }
    if eng["error"]:
        report["engine_error"] = eng["error"]
    if eng["codes"].size and eng["audio"].size:
        wavs, _ = model.decode_codes(torch.as_tensor(eng["codes"]))
        report["audio_from_engine_codes"] = audio_metrics(np.asarray(wavs[0], np.float32), eng["audio"])
    else:
        note = eng["error"] or "engine produced no frames (EOS first)"
        report["audio_from_engine_codes"] = {"samples": 0, "note": note}
    report["tolerances"] = {
        "audio_snr_db_min": AUDIO_SNR_DB_MIN.get(quant),
        "log_mel_l1_max": LOG_MEL_MAX.get(quant),
        "stage_atol": STAGE_ATOL if quant == "F32" else None,
        "prompt_ids": "identical",
    }
    report["problems"], report["quantisation_notes"] = classify(report)
    report["ok"] = not report["problems"]
    return report


def classify(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Split a report's differences into bugs (problems) and what quantisation explains."""
    quant, problems, notes = report["quant"], [], []
    p = report["prompt_ids"]
    if not p["identical"]:
        problems.append(
            f"prompt ids differ at position {p['first_difference']} ({p['ref_len']} vs {p['engine_len']} ids): "
            "tokenizer / special-token conversion"
        )
    if report.get("audit"):
        problems += report["audit"]["problems"]
    stages = report.get("stages")
    if stages and stages["first_bad"]:
        problems.append(f"stage {stages['first_bad']}: {stages['stages'][stages['first_bad']]}")
    tf = report["teacher_forced"]["group0_frame0"]
    if tf.get("available") and not tf.get("same_argmax"):
        near_tie = tf.get("ref_top2_margin") is not None and tf["ref_top2_margin"] <= 2 * tf.get("max_abs", 0)
        msg = f"frame-0 group-0 argmax differs (top-2 margin {tf.get('ref_top2_margin')}, logits max abs {tf.get('max_abs')})"
        (notes if (quant != "F32" or near_tie) else problems).append(msg)
    fd = report["codes"]["first_divergence"]
    if fd is not None:
        notes.append(
            f"greedy codes diverge at frame {fd['frame']}, group {fd['group']} "
            + ("(a near-tie at F32)" if quant == "F32" else f"(chained argmaxes under {quant} weights)")
        )
    a = report["audio_from_engine_codes"]
    floor, mel_max = AUDIO_SNR_DB_MIN.get(quant), LOG_MEL_MAX.get(quant)
    if a.get("snr_db") is not None and floor is not None and a["snr_db"] < floor:
        problems.append(f"audio from identical codes: SNR {a['snr_db']:.1f} dB < {floor} dB (codec conversion)")
    if a.get("log_mel_l1") is not None and mel_max is not None and a["log_mel_l1"] > mel_max:
        problems.append(f"audio from identical codes: log-mel L1 {a['log_mel_l1']:.3f} > {mel_max} (codec conversion)")
    return problems, notes


def write_engine_checkpoint(
    dst: str | Path, model_type: str = "custom_voice", *, seed: int = 0, codec_dir: str | Path | None = None
) -> Path:
    """The smallest upstream checkpoint the pinned qwentts.cpp runs end to end: the tiny talker
    with 16 code groups and the released codec (random weights, about 0.7 GB in fp32).

    Why not the suite's tiny fixture: its codec decode hard-codes 16 codebooks of the released
    quantizer and the released DAC channel counts (1536 -> 768 -> 384 -> 192 -> 96); the 4-group
    fixture generates codes but gets no audio, and the tiny codec aborts the process
    (GGML_ASSERT(K_OC == K * oc)). And generation_config's subtalker_top_k is 8, below the tiny
    code-predictor vocabulary of 16: the engine's sampler sorts candidates only when top_k < vocab
    and greedy takes the first candidate, so at top_k >= vocab every residual code comes out 0
    (harmless at the released vocabulary of 2048; greedy is unaffected by top_k otherwise).

    ``codec_dir``: a speech_tokenizer directory written by an earlier call, linked instead of
    rebuilt (one codec serves all model types). Needs qwen_tts."""
    import json

    from safetensors.torch import save_file

    from q3tts.verify.fixtures.released import released_speech_tokenizer_config
    from q3tts.verify.fixtures.writer import (
        GENERATION_CONFIG,
        build_upstream_codec,
        build_upstream_modules,
        random_state_dict,
        randomize_,
        tiny_config,
        write_text_tokenizer,
    )

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(model_type, num_code_groups=16)
    save_file(
        random_state_dict(build_upstream_modules(cfg), seed), str(dst / "model.safetensors"), metadata={"format": "pt"}
    )
    if codec_dir is not None:
        (dst / "speech_tokenizer").symlink_to(Path(codec_dir).resolve(), target_is_directory=True)
    else:
        (dst / "speech_tokenizer").mkdir()
        codec = released_speech_tokenizer_config()
        state = {k: v.contiguous() for k, v in randomize_(build_upstream_codec(codec), seed + 1).state_dict().items()}
        save_file(state, str(dst / "speech_tokenizer" / "model.safetensors"), metadata={"format": "pt"})
        extractor = dict(
            feature_extractor_type="EncodecFeatureExtractor",
            feature_size=1,
            padding_side="right",
            padding_value=0.0,
            return_attention_mask=True,
            sampling_rate=24000,
        )
        for name, obj in (("config.json", codec), ("preprocessor_config.json", extractor)):
            (dst / "speech_tokenizer" / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    for name, obj in (
        ("config.json", cfg),
        ("generation_config.json", {**GENERATION_CONFIG, "subtalker_top_k": 8}),
        ("preprocessor_config.json", {"processor_class": "Qwen3TTSProcessor"}),
    ):
        (dst / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    write_text_tokenizer(dst)
    return dst


# --------------------------------------------------------------------------------------------
# Localisation: which stage of qwentts.cpp first leaves the standalone model
# --------------------------------------------------------------------------------------------


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


def standalone_prefill(
    model, *, text: str, language: str = "english", speaker: str | None = None, instruct: str | None = None
) -> dict[str, Any]:
    """The standalone model's side of the stages qwentts.cpp dumps for the same request: prompt
    ids (text part), input embeddings, layer-0 and final prefill hidden states, prefill logits."""
    from q3tts.standalone.prompt import build_talker_prompt
    from q3tts.standalone.text import TextTokenizer

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
        "prompt-ids": ids,
        "talker-input-embed": prompt.inputs_embeds[0],
        "talker-hidden-prefill-final": hidden[0],
        "talker-logits-prefill": logits[0, -1],
    }
    if collect:
        ref["talker-hidden-prefill-l0"] = collect[0][0] if isinstance(collect[0], torch.Tensor) else None
    return ref


def prefill_argmax(ref_logits, eng_logits, codebook_size: int) -> dict[str, Any]:
    """Teacher-forced group-0 agreement at the one step the binding dumps logits for (the prefill,
    i.e. frame 0; both sides see the same prompt). Argmax over the code ids [0, codebook_size) and
    the max abs difference of the whole logit vector."""
    if eng_logits is None:
        return {"available": False, "note": "the binding wrote no talker-logits-prefill dump"}
    r = torch.as_tensor(ref_logits).float().flatten().numpy()
    e = np.asarray(eng_logits, np.float32).flatten()
    if r.shape != e.shape:
        return {"available": True, "same_argmax": False, "note": f"shape {r.shape} vs engine {e.shape}"}
    top = np.sort(r[:codebook_size])[::-1]
    return {
        "available": True,
        "same_argmax": int(np.argmax(r[:codebook_size])) == int(np.argmax(e[:codebook_size])),
        "max_abs": float(np.abs(r - e).max()),
        "ref_top2_margin": float(top[0] - top[1]) if len(top) > 1 else None,
    }


def compare_stages(ref: dict[str, Any], eng: dict[str, np.ndarray]) -> dict[str, Any]:
    """Prompt ids and the prefill stages qwentts.cpp dumps, against ``standalone_prefill``;
    ``first_bad`` names the first stage beyond STAGE_ATOL (or ``prompt-ids``)."""
    ids = ref["prompt-ids"]
    eng_ids = eng.get("prompt-ids", np.zeros(0)).astype(np.int64).tolist()
    out: dict[str, Any] = {"stages": {}, "first_bad": None}
    out["stages"]["prompt-ids"] = {
        "ok": eng_ids == ids,
        "ref_len": len(ids),
        "engine_len": len(eng_ids),
        "first_difference": first_difference(ids, eng_ids),
    }
    if eng_ids != ids:
        out["first_bad"] = "prompt-ids"
    for name in STAGE_ATOL:
        r, e = ref.get(name), eng.get(name)
        if r is None or e is None:
            out["stages"][name] = {"ok": None, "note": "not available"}
            continue
        r = r.float().cpu().numpy()
        if r.shape != e.shape:
            out["stages"][name] = {"ok": False, "note": f"shape {r.shape} vs engine {e.shape}"}
        else:
            d = float(np.abs(r - e).max())
            out["stages"][name] = {"ok": d <= STAGE_ATOL[name], "max_abs": d, "atol": STAGE_ATOL[name]}
        if out["stages"][name]["ok"] is False and out["first_bad"] is None:
            out["first_bad"] = name
    return out


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
    """compare_stages on a one-frame request (qwentts.cpp's prefill dumps)."""
    binding = load_binding()
    eng = _engine_prefill_dump(binding, gguf_dir, text, language, speaker, instruct, threads)
    ref = standalone_prefill(model, text=text, language=language, speaker=speaker, instruct=instruct)
    return compare_stages(ref, eng)


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


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def render_markdown(reports: list[dict[str, Any]]) -> str:
    """The table ``verify-parity --engine qwentts.cpp`` writes: one row per checkpoint and GGUF
    quantisation, then each row's bugs (problems) and what quantisation explains (notes)."""
    lines = [
        "| checkpoint | model type | quant | prompt ids | identical frames | first divergence | frame-0 group-0 "
        "argmax (teacher-forced) | audio SNR dB (floor) | max abs | log-mel L1 (max) | F32 stages | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        c, a, p = r["codes"], r.get("audio_from_engine_codes", {}), r["prompt_ids"]
        fd, tf, t = c["first_divergence"], r["teacher_forced"]["group0_frame0"], r["tolerances"]
        where = "none" if fd is None else f"frame {fd['frame']}, group {fd['group']}"
        st = r.get("stages")
        lines.append(
            f"| {r.get('checkpoint', '-')} | {r['model_type']} | {r['quant']} | "
            f"{'identical' if p['identical'] else 'DIFFER at ' + str(p['first_difference'])} ({p['engine_len']}) | "
            f"{c['identical_frames']} of {c['compared_frames']} | "
            f"{where} | "
            f"{('same' if tf.get('same_argmax') else 'DIFFERS') if tf.get('available') else 'not dumped'} | "
            f"{_fmt(a.get('snr_db'), '.1f')} ({t['audio_snr_db_min']}) | {_fmt(a.get('max_abs'))} | "
            f"{_fmt(a.get('log_mel_l1'))} ({t['log_mel_l1_max']}) | "
            f"{'-' if st is None else (st['first_bad'] or 'all within')} | "
            f"{'ok' if r['ok'] else 'FAIL'} |"
        )
    lines.append("")
    for r in reports:
        tag = f"{r.get('checkpoint', r['model_type'])} {r['quant']}"
        for msg in r["problems"]:
            lines.append(f"- **bug** ({tag}): {msg}")
        for msg in r["quantisation_notes"]:
            lines.append(f"- quantisation ({tag}): {msg}")
        if r.get("engine_error"):
            lines.append(f"- engine error ({tag}): {r['engine_error']}")
    capped = [r for r in reports if r["codes"].get("length_note")]
    if capped:
        lines.append(
            f"- length ({len(capped)} of {len(reports)} runs): {capped[0]['codes']['length_note']} "
            "(upstream's last group-0 id gets no residual codes); not counted as a divergence"
        )
    lines.append(
        "\nTeacher-forced agreement beyond frame 0 and the code predictor's argmaxes: not exposed by the "
        "binding (it dumps the prefill logits only)."
    )
    return "\n".join(lines) + "\n"
