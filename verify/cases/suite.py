"""The parity suite: every case verify-parity runs on one checkpoint at one dtype.

Cases and their components:
- forward (component = the module): text_projection, talker.{prefill,padded,mrope}.*,
  talker.small_rms.*, code_predictor.group{k}, speaker_encoder.{mel,embedding}; compared with
  per-dtype tolerances; a failing case names the first layer that exceeds tolerance and the first
  layer whose output differs at all.
- generation (component "generation"): every voice mode the checkpoint's type offers, greedy and
  seeded sampling (per seed), left-padded batches, and for one case per voice mode the sampler
  regimes (generation_parity.SAMPLER_MODES: talker and code predictor with different parameters,
  cutting top-k, top-p on an exact boundary, hot sampling with a strong penalty); codes must be
  identical, else the first diverging (item, frame, group) and the sampler that drew it are
  reported.
- audio (component "codec"): codes -> waveform for clips below and across the 300-frame chunk.
- Base checkpoints: encoder cases (verify/cases/encoder.py) and ICL cloning from a recording end
  to end, greedy and sampled (component "voice_clone_from_audio", verify/cases/icl_audio.py).
- streaming (component "streaming", verify-parity's default run): every voice mode streamed at
  several chunk sizes (a smaller first chunk, a clip shorter than one chunk) against upstream's
  offline audio from the same seed, codes identical; and codes streamed across the 300-frame
  chunk against upstream's decode (streaming_parity.py).

Upstream's generation and audio outputs do not depend on the standalone side, so they are cached
per (model, case, mode, seed, frames); the fault-injection self-test reuses them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from q3tts.verify.cases.common import UPSTREAM_CACHE, CaseResult, audio_codes, raised_in_standalone, upstream_audio
from q3tts.verify.cases.forward import run_forward_cases, talker_probe_inputs
from q3tts.verify.cases.generation import (
    CASES,
    MODE_KNOBS,
    SAMPLER_MODES,
    Case,
    CaseContext,
    diverging_sampler,
    mode_kwargs,
    split_sides,
)
from q3tts.verify.compare import (
    AUDIO_TOLERANCES,
    DTYPE_NAMES,
    audio_diff,
    capture_outputs,
    compare,
    first_differing_layer,
    first_divergence,
    first_divergent_layer,
)
from q3tts.verify.gate.length import length_note, upstream_release


def _component(case: str) -> str:
    return case.split(".")[0]


def forward_results(upstream, standalone, dtype, seed) -> list[CaseResult]:
    out = []
    t0 = time.perf_counter()
    try:
        comparisons = run_forward_cases(upstream, standalone, dtype, seed=seed)
        comparisons += talker_probe_cases(upstream, standalone, dtype, seed)
    except Exception as e:  # the model under test raised: a failed case, and the run goes on
        if not raised_in_standalone(e):
            raise
        error = f"{type(e).__name__}: {e}"
        return [
            CaseResult(
                case="forward",
                component="forward",
                kind="forward",
                dtype=DTYPE_NAMES[dtype],
                passed=False,
                note=f"the standalone forward raised {error}",
                error=error,
            )
        ]
    elapsed = time.perf_counter() - t0
    for c in comparisons:
        out.append(
            CaseResult(
                case=c.case,
                component=_component(c.case),
                kind="forward",
                dtype=c.dtype,
                passed=c.passed,
                metrics={"max_abs": c.max_abs, "max_rel": c.max_rel, "cosine": c.cosine, "bound": c.bound},
                first_bad_layer=c.first_bad_layer,
                first_diff_layer=c.first_diff_layer,
                note=c.note,
            )
        )
    if out:  # forward cases run both sides back to back; the wall time is shared
        out[0].seconds_upstream = out[0].seconds_standalone = elapsed / 2
    return out


def talker_probe_cases(upstream, standalone, dtype, seed):
    """The talker on the two probe inputs (cases/forward.py talker_probe_inputs): M-RoPE with three
    different position rows, and hidden states near the RMSNorm eps."""
    tc = standalone.config.talker.transformer
    return [
        _talker_probe(f"talker.{name}.hidden", upstream, standalone, dtype, x, pos)
        for name, x, pos in talker_probe_inputs(tc.hidden_size, tc.rms_norm_eps, dtype, seed)
    ]


@torch.inference_mode()
def _talker_probe(name, upstream, standalone, dtype, x, pos):
    """Upstream's and the standalone talker stack on the same hidden states and M-RoPE positions."""
    up_model = upstream.talker.model
    with capture_outputs(list(up_model.layers)) as up_cap:
        ref = up_model(inputs_embeds=x, position_ids=pos, use_cache=False).last_hidden_state
    with capture_outputs(list(standalone.talker.decoder.layers)) as st_cap:
        got, _ = standalone.talker.step(x, pos, None)
    c = compare(name, ref, got, dtype)
    if not c.passed:
        names = [f"talker.layers.{i}" for i in range(len(up_model.layers))]
        ups, sts = [t[0] for t in up_cap], [t[0] for t in st_cap]
        c.first_bad_layer = first_divergent_layer(names, ups, sts, dtype) or "talker.norm"
        c.first_diff_layer = first_differing_layer(names, ups, sts) or "talker.norm"
    return c


# Cases that also run the sampler regimes (one per voice mode and model type; single items, so
# the top-p boundary can be calibrated on the first draw).
SAMPLER_CASES = ("plain.streaming", "custom_voice.english", "voice_design.instruct", "clone.icl.streaming")
# Left-padded batches also run the uncalibrated regimes: three rows draw three times as often.
BATCH_SAMPLER_CASES = ("batch.custom_voice", "batch.voice_design", "batch.clone")
BATCH_SAMPLER_MODES = ("split_top_k", "hot_penalty")


def generation_plans(case: Case, seeds: list[int]) -> list[tuple[str, int]]:
    """(mode, seed) pairs a case runs: greedy, the default sampling per seed and, for the
    sampler cases, top-p and the sampler regimes (first seed; batches the uncalibrated ones)."""
    plans = [("greedy", seeds[0])] + [("sampled", s) for s in seeds]
    if case.name in SAMPLER_CASES:
        plans += [("sampled_top_p", seeds[0])] + [(m, seeds[0]) for m in SAMPLER_MODES]
    if case.name in BATCH_SAMPLER_CASES:
        plans += [(m, seeds[0]) for m in BATCH_SAMPLER_MODES]
    return plans


def generation_case_name(case: Case, mode: str, seed: int) -> str:
    return f"generation.{case.name}.{mode}" + (f".seed{seed}" if mode != "greedy" else "")


def plan_inputs(wrapper, standalone, case: Case, mode: str, seed: int, frames: int, dname: str, cache_key: str):
    """(cache key, upstream kwargs, standalone kwargs, sampling kwargs, RNG seed) of one plan,
    without running upstream's generate: a cached run's parameters when there is one, else the
    mode's (a calibrated mode asks upstream)."""
    ctx = CaseContext(wrapper, standalone, seed=seed)
    up_kwargs, st_kwargs = split_sides(case.build(ctx))
    key = (cache_key, dname, case.name, mode, seed, frames)
    if key in UPSTREAM_CACHE:
        sampling, rng_seed = UPSTREAM_CACHE[key][2:]
    else:
        sampling, rng_seed = mode_kwargs(mode, ctx, up_kwargs)
        sampling["max_new_tokens"] = frames + 1
    return key, up_kwargs, st_kwargs, dict(sampling), rng_seed


def upstream_generation(wrapper, standalone, case: Case, mode: str, seed: int, frames: int, dname: str, cache_key: str):
    """(upstream codes, seconds, standalone kwargs, sampling kwargs, RNG seed) of one plan;
    upstream's part (and a calibrated mode's parameters, which come from upstream) cached."""
    key, up_kwargs, st_kwargs, sampling, rng_seed = plan_inputs(
        wrapper, standalone, case, mode, seed, frames, dname, cache_key
    )
    if key not in UPSTREAM_CACHE:
        torch.manual_seed(rng_seed)
        t0 = time.perf_counter()
        codes, _ = wrapper.model.generate(**up_kwargs, **sampling)
        UPSTREAM_CACHE[key] = (codes, time.perf_counter() - t0, sampling, rng_seed)
    codes, seconds, sampling, rng_seed = UPSTREAM_CACHE[key]
    return codes, seconds, st_kwargs, dict(sampling), rng_seed


def run_standalone_generation(standalone, st_kwargs: dict, sampling: dict, seed: int):
    """(codes, error) of the standalone side from a fresh seed; an exception is an error string."""
    torch.manual_seed(seed)
    try:
        codes, _ = standalone.generate(**st_kwargs, **sampling)
        return codes, ""
    except Exception as e:  # a broken standalone side is a failed case, not a crash
        return [], f"{type(e).__name__}: {e}"


def generation_results(wrapper, standalone, model_type, dtype, seeds, frames, cache_key) -> list[CaseResult]:
    out = []
    dname = DTYPE_NAMES[dtype]
    for case in [c for c in CASES if model_type in c.model_types]:
        for mode, seed in generation_plans(case, seeds):
            up_codes, up_s, st_kwargs, sampling, rng_seed = upstream_generation(
                wrapper, standalone, case, mode, seed, frames, dname, cache_key
            )
            t0 = time.perf_counter()
            st_codes, error = run_standalone_generation(standalone, st_kwargs, sampling, rng_seed)
            st_s = time.perf_counter() - t0
            div = first_divergence(up_codes, st_codes) if not error else (0, 0, -1)
            note = error or case.description
            if div is not None and not error:
                # Name the sampler that drew the first differing id and the knobs this mode turns.
                note = f"first diverging draw: {diverging_sampler(div[2])}; mode {mode}: {MODE_KNOBS[mode]}"
            metrics = {
                "frames_upstream": [int(c.shape[0]) for c in up_codes],
                "frames_standalone": [int(c.shape[0]) for c in st_codes],
                "first_divergence": None if div is None else {"item": div[0], "frame": div[1], "group": div[2]},
            }
            if mode == "top_p_boundary":
                metrics.update(top_p=sampling["top_p"], rng_seed=rng_seed)
            out.append(
                CaseResult(
                    case=generation_case_name(case, mode, seed),
                    component="generation",
                    kind="generation",
                    dtype=dname,
                    passed=div is None and not error,
                    metrics=metrics,
                    note=note,
                    error=error,
                    seconds_upstream=up_s,
                    seconds_standalone=st_s,
                )
            )
    return out


AUDIO_FRAMES = (5, 80, 330)  # below the 72-frame window, past it, and across the 300-frame chunk


def audio_results(wrapper, standalone, dtype, seed, cache_key) -> list[CaseResult]:
    if wrapper.model.speech_tokenizer is None:
        return []
    out = []
    dname = DTYPE_NAMES[dtype]
    bound, min_snr = AUDIO_TOLERANCES[dtype]
    for frames in AUDIO_FRAMES:
        codes = audio_codes(wrapper, frames, seed)
        ref, up_s = upstream_audio(wrapper, codes, (cache_key, dname, "audio", frames, seed))
        t0 = time.perf_counter()
        try:
            (got,), _ = standalone.decode_codes([codes])
            raised = ""
        except Exception as e:
            got, raised = np.zeros(0, np.float32), f"{type(e).__name__}: {e}"
        st_s = time.perf_counter() - t0
        error = raised
        if error:
            max_abs, snr = float("inf"), float("-inf")
        elif got.shape != ref.shape:  # no sample-wise comparison (reports show the note, not these)
            max_abs, snr = float("inf"), float("-inf")
            per_frame = standalone.codec.cfg.decode_upsample_rate
            error = length_note(got, ref, per_frame, bound, codes=codes, release=upstream_release())
        else:
            max_abs, snr = audio_diff(ref, got)
        out.append(
            CaseResult(
                case=f"audio.{frames}_frames",
                component="codec",
                kind="audio",
                dtype=dname,
                passed=not error and max_abs <= bound and snr >= min_snr,
                metrics={
                    "max_abs": max_abs,
                    "snr_db": snr,
                    "bound": bound,
                    "min_snr_db": min_snr,
                    "rms": float(np.sqrt(np.mean(ref**2))),
                    "samples_standalone": int(got.shape[0]),
                    "samples_upstream": int(ref.shape[0]),
                },
                note=error,
                error=raised,
                seconds_upstream=up_s,
                seconds_standalone=st_s,
            )
        )
    return out


def run_suite(
    wrapper,
    standalone,
    model_type: str,
    dtype: torch.dtype,
    seeds: list[int],
    frames: int,
    cache_key: str,
    generation: bool = True,
    audio: bool = True,
    encoder: bool = True,
    streaming: bool = False,
    on_group=None,
) -> list[CaseResult]:
    """Every case group in turn; ``on_group(name, results, seconds)`` after each (console progress)."""
    groups = [("forward", lambda: forward_results(wrapper.model, standalone, dtype, seeds[0]))]
    if generation:
        groups.append(
            ("generation", lambda: generation_results(wrapper, standalone, model_type, dtype, seeds, frames, cache_key))
        )
    if audio:
        groups.append(("audio", lambda: audio_results(wrapper, standalone, dtype, seeds[0], cache_key)))
    if streaming:  # off unless asked: the fault self-test runs the suite once per fault
        from q3tts.verify.cases.streaming import streaming_results

        groups.append(
            (
                "streaming",
                lambda: streaming_results(wrapper, standalone, model_type, dtype, seeds[0], frames, cache_key),
            )
        )
    if encoder and model_type == "base" and wrapper.model.speech_tokenizer is not None:
        from q3tts.verify.cases.encoder import (
            encoder_results,  # audio -> codes: what voice cloning from a recording runs
        )

        groups.append(("encoder", lambda: encoder_results(wrapper, standalone, dtype)))
        if generation:  # cloning from a recording end to end: encoder, x-vector, generation, decoding
            from q3tts.verify.cases.icl_audio import icl_audio_results

            groups.append(
                ("icl_audio", lambda: icl_audio_results(wrapper, standalone, dtype, seeds, frames, cache_key))
            )
    results = []
    for name, run_group in groups:
        t0 = time.perf_counter()
        got = run_group()
        results += got
        if on_group is not None:
            on_group(name, got, time.perf_counter() - t0)
    return results


def config_summary(standalone) -> dict[str, Any]:
    c = standalone.config
    t = c.talker
    return {
        "tts_model_type": c.tts_model_type,
        "tts_model_size": c.tts_model_size,
        "talker": {
            "layers": t.transformer.num_hidden_layers,
            "hidden": t.transformer.hidden_size,
            "heads": t.transformer.num_attention_heads,
            "kv_heads": t.transformer.num_key_value_heads,
            "head_dim": t.transformer.head_dim,
            "vocab": t.vocab_size,
            "mrope_section": list(t.mrope_section),
        },
        "code_predictor": {
            "layers": t.code_predictor.transformer.num_hidden_layers,
            "hidden": t.code_predictor.transformer.hidden_size,
            "groups": t.num_code_groups,
        },
        "speakers": len(t.spk_id),
        "languages": len(t.codec_language_id),
        "speaker_encoder": c.speaker_encoder is not None,
    }
