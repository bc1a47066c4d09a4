"""Parity of qwentts.cpp (GGML, through its Python binding ``qwentts_cpp_cpu``) with the
standalone model, which is itself bit-identical to upstream qwen-tts on the exact path.

Both sides get the same text, speaker, language, reference audio (Base) and greedy settings. The
binding's dump directory gives the engine's prompt ids, stage tensors and codes, so nothing about
the engine is assumed:

- prompt ids identical or not (first differing position);
- the engine's codes teacher-forced into the standalone model (verify/engines/forcing.py): its
  pick at every (frame, group) on the engine's own history, so the code predictor and every frame
  after the first are judged although the binding dumps logits of the prefill only;
- the stages qwentts.cpp dumps: on F32 files the prefill (input embeddings, layer-0 and final
  hidden, logits) and the talker state after its frame 0; at every quantisation the x-vector its
  speaker encoder extracts from the Base case's reference audio;
- audio: qwentts.cpp's own decode of its codes against the standalone codec decoding the same
  codes (max abs, SNR in dB, log-mel distance);
- free-running greedy code agreement (identical frames, first divergence), reported;
- a static audit of the files against the upstream checkpoint.

verify/engines/judge.py holds the rules (what fails, what is a near-tie, what is not checked).
The CLI driver is verify/engines/parity.py (``verify-parity --engine qwentts.cpp``);
``GGUFEngineUnavailable`` carries the install hint when the binding is absent.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BINDING_MODULE = "qwentts_cpp_cpu"
REF_AUDIO_RATE = 24000  # qwentts.cpp takes reference audio at 24 kHz only (ref_audio_24k)
INSTALL_HINT = (
    "the qwentts.cpp engine needs its Python binding: pip install 'qwen3-tts-standalone[peers]' "
    "(the wheel realtimetts-qwen-native-cpu, import qwentts_cpp_cpu; CPU with AVX2)"
)


class GGUFEngineUnavailable(RuntimeError):
    """The qwentts.cpp binding is not installed; the message says how to install it."""


def reference_audio(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """The Base case's fixed 24 kHz reference: a voiced-like tone (a gliding 120-160 Hz fundamental
    and eight harmonics, slowly amplitude-modulated) plus a little noise. Both sides embed it with
    their own speaker encoder; generated, so the check needs no audio file."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * REF_AUDIO_RATE)) / REF_AUDIO_RATE
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / REF_AUDIO_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    wav = 0.25 * voiced + 0.02 * rng.standard_normal(t.size)
    return (0.9 * wav / np.abs(wav).max()).astype(np.float32)


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
    ref_audio: np.ndarray | None = None,
    max_new_tokens: int = 16,
    threads: int | None = None,
    dump: bool = True,
    log: list | None = None,
) -> dict[str, Any]:
    """Greedy synthesis through the binding: prompt ids, codes [frames, G], audio, timings.
    ``ref_audio`` (24 kHz mono) makes it an x-vector voice clone (Base): the engine runs its own
    speaker encoder on it. ``dump=False`` runs without the debug dumps (for timing; no prompt ids
    or codes then). An error of the engine (loading or synthesis) is returned as ``error``, with
    whatever it dumped before it, so the caller can fail the run and say why."""
    binding = load_binding()
    want_dump = dump
    with tempfile.TemporaryDirectory(prefix="qwentts-dump-") as dump:
        out = _synthesize(
            binding,
            gguf_dir,
            dict(text=text, lang=language, speaker=speaker, instruct=instruct, ref_audio_24k=ref_audio),
            max_new_tokens,
            threads,
            dump if want_dump else None,
            log,
        )
        ids_path = Path(dump) / "prompt-ids.bin"
        ids = read_dump(ids_path).astype(np.int64).tolist() if ids_path.is_file() else []
        codes_path = Path(dump) / "codes-full.bin"
        codes = read_dump(codes_path).astype(np.int64) if codes_path.is_file() else np.zeros((0, 0), np.int64)
        dumps = {p.stem: read_dump(p) for p in Path(dump).glob("*.bin")}
    return {
        **out,
        "dumps": dumps,
        "prefill_logits": dumps.get("talker-logits-prefill"),
        "prompt_ids": ids,
        "codes": codes,
    }


def _synthesize(binding, gguf_dir, request: dict, max_new_tokens: int, threads: int | None, dump_dir, log) -> dict:
    """One engine load and greedy synthesize; a QwenTTSError at either step becomes ``error``.
    ``threads`` None: torch's own thread count (OMP_NUM_THREADS, torch.set_num_threads), so the
    engine never runs more threads than the process beside it was given (on 2 cores beside a busy
    test worker, 2 engine threads spin against it)."""
    threads = threads or torch.get_num_threads()
    from q3tts.standalone.gguf_conversion import gguf_paths

    talker, codec = gguf_paths(gguf_dir)
    audio, sr, error, load_s, synth_s = np.zeros(0, np.float32), 0, None, 0.0, 0.0
    t0 = time.perf_counter()
    try:
        tts = binding.QwenTTS(talker, codec, cpu_threads=threads)
    except binding.QwenTTSError as e:
        return {"audio": audio, "sample_rate": sr, "load_s": 0.0, "synth_s": 0.0, "error": f"load: {e}"}
    load_s = time.perf_counter() - t0
    if log is not None:  # the engine's own [Perf] lines, for the benchmark's split
        tts.set_log_callback(lambda _level, message: log.append(message))
    try:
        t0 = time.perf_counter()
        try:
            audio, sr = tts.synthesize(
                **request,
                do_sample=False,
                subtalker_do_sample=False,
                repetition_penalty=1.0,
                max_new_tokens=max_new_tokens,
                dump_dir=dump_dir,
            )
        except binding.QwenTTSError as e:
            # e.g. its codec hard-codes 16 codebooks: codes are still dumped, audio is not
            error = f"synthesize: {e}" if str(e) else "synthesize failed"
        synth_s = time.perf_counter() - t0
    finally:
        if log is not None:  # process-wide in the library: unset before the callback is freed
            tts.set_log_callback(None)
        tts.close()
    return {
        "audio": np.asarray(audio, np.float32),
        "sample_rate": sr,
        "load_s": load_s,
        "synth_s": synth_s,
        "error": error,
    }


def standalone_inputs(
    model, *, text: str, instruct: str | None = None, ref_audio: np.ndarray | None = None
) -> dict[str, Any]:
    """The standalone side of a request: text ids (what qwentts.cpp dumps as prompt-ids),
    instruction ids, and for ``ref_audio`` the x-vector prompt upstream's voice_clone builds with
    x_vector_only_mode (the speaker encoder's embedding of the 24 kHz reference)."""
    from q3tts.standalone.text import TextTokenizer

    tok = TextTokenizer.from_dir(model.checkpoint_dir)
    ids = tok.encode(tok.assistant_text(text))
    out: dict[str, Any] = {
        "ids": ids,
        "instruct_ids": [torch.tensor([tok.encode(tok.instruct_text(instruct))])] if instruct else None,
        "voice_clone_prompt": None,
        "spk_embedding": None,
    }
    if ref_audio is not None:
        spk = model.extract_speaker_embedding(np.asarray(ref_audio, np.float32), REF_AUDIO_RATE)
        out["spk_embedding"] = spk
        out["voice_clone_prompt"] = {
            "ref_spk_embedding": [spk],
            "x_vector_only_mode": [True],
            "icl_mode": [False],
            "ref_code": [None],
        }
    return out


def run_standalone(
    model,
    *,
    text: str,
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    ref_audio: np.ndarray | None = None,
    max_new_tokens: int = 16,
    non_streaming_mode: bool = True,
) -> dict[str, Any]:
    """The same request on the standalone model (greedy): prompt ids (text part) and codes.
    ``non_streaming_mode=True`` is upstream's default in generate_custom_voice / voice_design /
    voice_clone and the prompt layout qwentts.cpp builds (all text in the prefill)."""
    inputs = standalone_inputs(model, text=text, instruct=instruct, ref_audio=ref_audio)
    t0 = time.perf_counter()
    codes, _ = model.generate(
        input_ids=[torch.tensor([inputs["ids"]])],
        instruct_ids=inputs["instruct_ids"],
        voice_clone_prompt=inputs["voice_clone_prompt"],
        languages=[language],
        speakers=[speaker],
        do_sample=False,
        subtalker_dosample=False,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        non_streaming_mode=non_streaming_mode,
    )
    return {
        "prompt_ids": inputs["ids"],
        "codes": codes[0].cpu().numpy().astype(np.int64),
        "synth_s": time.perf_counter() - t0,
    }


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
    ref_audio: np.ndarray | None = None,
    max_new_tokens: int = 16,
    threads: int | None = None,
    model=None,
) -> dict[str, Any]:
    """The report ``verify-parity --engine qwentts.cpp`` prints for one GGUF pair: ``model_dir`` is
    the upstream checkpoint (also audited against the GGUF files; None leaves the audit not
    checked), ``gguf_dir`` its ``convert-ckpt --to gguf`` output, ``ref_audio`` the Base case's
    24 kHz reference (both sides run their speaker encoder on it). ``problems`` lists the failures,
    ``not_checked`` what could not be judged (either keeps ``ok`` false; verify/engines/judge.py
    has the rules), ``notes`` near-ties and what quantisation explains."""
    from q3tts.verify.engines import judge
    from q3tts.verify.engines.forcing import force_codes

    load_binding()
    if model is None:
        from q3tts.standalone.model import Qwen3TTS

        model = Qwen3TTS.from_pretrained(model_dir, dtype=torch.float32)
    import json

    quant = json.loads((Path(gguf_dir) / "manifest.json").read_text()).get("quant")
    request = dict(text=text, language=language, speaker=speaker, instruct=instruct, ref_audio=ref_audio)
    eng = run_qwentts(gguf_dir, **request, max_new_tokens=max_new_tokens, threads=threads)
    ref = run_standalone(model, **request, max_new_tokens=max_new_tokens)
    prefill = standalone_prefill(model, **request)
    forced, forced_error = force_codes(model, prefill["prompt"], eng["codes"], max_new_tokens)
    prefill["talker-hidden-step1"] = None if forced is None else forced.hidden_step1
    expected = judge.expected_stages(quant, ref_audio is not None, bool(len(eng["codes"])))
    stages = judge.compare_stages(prefill, eng["dumps"], expected)
    report: dict[str, Any] = {
        "engine": "qwentts.cpp",
        "quant": quant,
        "model_type": model.config.tts_model_type,
        "request": {k: v for k, v in request.items() if v is not None and k != "ref_audio"},
        "prompt_ids": _prompt_ids(stages),
        "codes": code_agreement(ref["codes"], eng["codes"], max_new_tokens),
        "teacher_forced": {"error": forced_error, "positions": 0}
        if forced is None
        else judge.teacher_forced(forced, eng["codes"], quant, judge.logit_distance(stages)),
        "stages": stages,
        "audit": audit_gguf(model_dir, gguf_dir) if model_dir is not None else None,
        "audio_from_engine_codes": _audio_section(model, eng),
        "timing": {"engine_s": eng["synth_s"], "standalone_s": ref["synth_s"]},
        "tolerances": judge.tolerances(quant),
    }
    if ref_audio is not None:
        report["request"]["ref_audio"] = f"{len(ref_audio)} samples at {REF_AUDIO_RATE} Hz (x-vector only)"
    if eng["error"]:
        report["engine_error"] = eng["error"]
    report["problems"], report["notes"], report["not_checked"] = judge.classify(report)
    report["ok"] = not report["problems"] and not report["not_checked"]
    report["verdict"] = "FAIL" if report["problems"] else ("INCOMPLETE" if report["not_checked"] else "ok")
    return report


def _prompt_ids(stages: dict[str, Any]) -> dict[str, Any]:
    entry = stages["stages"]["prompt-ids"]
    return {
        "identical": entry["ok"],  # None: the engine dumped no prompt ids (not checked)
        "first_difference": entry.get("first_difference"),
        "ref_len": entry.get("ref_len"),
        "engine_len": entry.get("engine_len"),
    }


def _audio_section(model, eng: dict[str, Any]) -> dict[str, Any]:
    """The engine's audio against the standalone codec decoding the engine's own codes."""
    if not eng["codes"].size:
        return {"samples": 0, "length_engine": int(len(eng["audio"])), "note": "the engine produced no frames"}
    if not eng["audio"].size:
        return {"samples": 0, "length_engine": 0, "note": eng["error"] or "the engine returned no audio"}
    wavs, _ = model.decode_codes(torch.as_tensor(eng["codes"]))
    return audio_metrics(np.asarray(wavs[0], np.float32), eng["audio"])


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


def standalone_prefill(
    model,
    *,
    text: str,
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    ref_audio: np.ndarray | None = None,
) -> dict[str, Any]:
    """The standalone model's side of the stages qwentts.cpp dumps for the same request: prompt
    ids (text part), the x-vector of ``ref_audio`` (spk-emb), input embeddings, layer-0 and final
    prefill hidden states, prefill logits; and ``prompt``, the TalkerPrompt they come from."""
    from q3tts.standalone.prompt import build_talker_prompt

    inputs = standalone_inputs(model, text=text, instruct=instruct, ref_audio=ref_audio)
    with torch.inference_mode():
        prompt = build_talker_prompt(
            model,
            [torch.tensor([inputs["ids"]])],
            inputs["instruct_ids"],
            None,
            inputs["voice_clone_prompt"],
            [language],
            [speaker],
            non_streaming_mode=True,
        )
        collect: list = []
        hidden, logits = model.talker(prompt.inputs_embeds, collect=collect)
    ref = {
        "prompt": prompt,
        "prompt-ids": inputs["ids"],
        "talker-input-embed": prompt.inputs_embeds[0],
        "talker-hidden-prefill-final": hidden[0],
        "talker-logits-prefill": logits[0, -1],
    }
    if inputs["spk_embedding"] is not None:
        ref["spk-emb"] = inputs["spk_embedding"]
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


def stage_report(
    model,
    gguf_dir: str | Path,
    *,
    text: str = "Hello world.",
    language: str = "english",
    speaker: str | None = None,
    instruct: str | None = None,
    ref_audio: np.ndarray | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """judge.compare_stages on a one-frame request: qwentts.cpp's prefill dumps (and x-vector)
    against the standalone model's, at F32 tolerances. The engine's synthesis error is ignored
    here (the 4-group suite fixtures get codes and dumps but no audio from it); a stage it did not
    dump is listed in ``not_checked``."""
    from q3tts.verify.engines import judge

    request = dict(text=text, language=language, speaker=speaker, instruct=instruct, ref_audio=ref_audio)
    eng = run_qwentts(gguf_dir, **request, max_new_tokens=1, threads=threads)
    ref = standalone_prefill(model, **request)
    return judge.compare_stages(ref, eng["dumps"], judge.expected_stages("F32", ref_audio is not None, False))


def _read_gguf(gguf, path: Path, problems: list[str]):
    """A GGUFReader of ``path``, or None with the reason appended to ``problems`` (a truncated or
    corrupt file is a finding of the audit, not a crash of the verifier)."""
    try:
        return gguf.GGUFReader(str(path))
    except (OSError, ValueError) as e:
        problems.append(f"file {path.name}: unreadable as GGUF ({type(e).__name__}: {e})")
        return None


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

    tr, cr = _read_gguf(gguf, talker, problems), _read_gguf(gguf, codec, problems)
    if tr is None or cr is None:
        return {"ok": False, "problems": problems}
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
