"""Streaming parity: the standalone model's streamed audio against upstream's offline audio.

Each case runs one upstream voice method (`Qwen3TTSModel.generate_*`, the offline reference) and
the standalone `stream_*` twin from the same torch seed. The codes must be identical (upstream's
are recorded from its `generate`, the stream's from its ``on_frame`` callback); each item's
concatenated chunks are compared sample by sample with upstream's audio under
``compare.STREAMING_TOLERANCES`` (the streamed decode rounds differently from upstream's
300-frame chunked decode). ICL cloning compares from the end of the reference: upstream's float
cut keeps one more leading sample for some lengths, the stream starts exactly at the reference's
end.

The stream runs once per case at that case's own chunk size; the other chunk sizes replay the
streamed codes frame by frame through a ``CodecStream`` (chunking lives there, the voice methods
only route frames), so every size is checked in every mode without generating again. One size is
longer than any clip (a clip shorter than one chunk). ``crossing_comparison`` streams codes across
upstream's 300-frame chunk against upstream's decode of the same codes. ``exact_crossing_comparison``
streams the same codes through the standalone's codec in float64 against its own offline chunked decode:
there rounding cannot hide a wrong context or a missing split, so the streaming logic is judged exactly
(equal up to the float32 cast), whatever the model dtype's noise (the bf16 bounds cannot see a latent
frame less of context at all, reports/streaming-faults.md).

Entry points: ``run_streaming_parity`` -> list of ``StreamingComparison``, ``streaming_results``
(the verify-parity cases), ``format_streaming_table`` (Markdown).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from q3tts.standalone.dtypes import SHORT_NAME
from q3tts.standalone.streaming import UPSTREAM_CHUNK_FRAMES, stream_decode
from q3tts.verify.cases.common import raised_in_standalone
from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.compare import STREAMING_TOLERANCES, first_divergence, snr_db
from q3tts.verify.gate.length import length_note, upstream_release

CHUNK_SIZES: tuple[tuple[int, int], ...] = ((8, 4), (3, 2), (1, 1))  # (chunk, first chunk) in frames
REF_FRAMES = 5
SAMPLES_PER_FRAME = 1920
# Codes streamed across upstream's 300-frame chunk: chunks end at 3 + 8k, so one spans 299..306
# and the stream must split it at 300 as upstream's decode does.
CROSSING_FRAMES = 330
CROSSING_CHUNK = (8, 3)


@dataclass
class StreamingComparison:
    case: str
    model_type: str
    dtype: str
    via: str  # "stream_<method>" (the API) | "replay" (the streamed codes through a CodecStream)
    chunk_frames: int
    first_chunk_frames: int
    item: int
    frames: int
    samples_upstream: int
    samples_streamed: int
    leading_samples_skipped: int  # ICL: upstream's extra leading sample(s) from its float cut
    chunks: int
    codes_identical: bool
    first_divergence: tuple[int, int, int] | None  # (item, frame, group) of the first differing code
    max_abs: float
    snr_db: float
    bound_max_abs: float
    bound_snr_db: float
    passed: bool
    seconds_upstream: float
    seconds_to_first_audio: float
    seconds_streamed: float
    note: str = ""
    error: str = ""  # the standalone stream raised

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Case:
    name: str
    method: str  # custom_voice | voice_design | voice_clone
    chunk: tuple[int, int]  # the chunk size of the stream_* run
    upstream_kwargs: Callable[[Any], dict]  # wrapper -> kwargs of the upstream method
    standalone_kwargs: Callable[[], dict]
    prefix: torch.Tensor | None = None  # ICL reference codes: decode context, never streamed


def _ref_code(wrapper) -> torch.Tensor:
    """Given ICL reference codes [REF_FRAMES, G] in the checkpoint's codebook (upstream's config)."""
    t = wrapper.model.config.talker_config
    size = (REF_FRAMES, t.num_code_groups)
    return torch.randint(0, t.code_predictor_config.vocab_size, size, generator=torch.Generator().manual_seed(0))


def _icl_upstream(ref_code: torch.Tensor):
    def kwargs(wrapper) -> dict:
        wav = (speech_like_waveform(3), 24000)
        items = wrapper.create_voice_clone_prompt(ref_audio=wav, ref_text="Reference words.")
        items[0].ref_code = ref_code  # the standalone runtime takes given reference codes
        return dict(text="Clone me.", language="english", voice_clone_prompt=items)

    return kwargs


def _speakers(wrapper) -> list[str]:
    """Two speakers of the checkpoint without a dialect (the fixture's alice and bob), from
    upstream's config, never the model under test's."""
    t = wrapper.model.config.talker_config
    spk_id, is_dialect = t.spk_id or {}, t.spk_is_dialect or {}
    plain = sorted(s for s in spk_id if is_dialect.get(s, False) is False)
    return [plain[0], plain[1 % len(plain)]]


def _same(kwargs: dict) -> tuple[Callable, Callable]:
    return (lambda w: dict(kwargs)), (lambda: dict(kwargs))


def _cases(model_type: str, wrapper) -> list[_Case]:
    """Every voice mode of the model type, each streamed at its own chunk size."""
    if model_type == "base":
        wav = (speech_like_waveform(3), 24000)
        xvec = dict(text="Clone me.", language="english", ref_audio=wav, x_vector_only_mode=True)
        icl = dict(text="Clone me.", language="english", ref_audio=wav, ref_text="Reference words.")
        ref = _ref_code(wrapper)
        return [
            _Case("clone_xvector", "voice_clone", (3, 2), *_same(xvec)),
            _Case("clone_icl", "voice_clone", (8, 4), _icl_upstream(ref), lambda: dict(icl, ref_code=ref), prefix=ref),
        ]
    if model_type == "voice_design":
        return [_Case("voice_design", "voice_design", (1, 1), *_same(dict(text="Hello.", instruct="Calm and deep.")))]
    a, b = _speakers(wrapper)
    batch = dict(text=["Hi there.", "A second, longer one!"], speaker=[a, b], language="auto")
    return [
        _Case("custom_voice", "custom_voice", (8, 4), *_same(dict(text="Hi there.", speaker=a, language="auto"))),
        _Case("custom_voice_batch", "custom_voice", (3, 2), *_same(batch)),
    ]


@contextlib.contextmanager
def _recording_generate(wrapper):
    """Record the codes upstream's ``model.generate`` returns inside a voice method (an instance
    attribute shadows the method for the duration; upstream's code is not touched)."""
    calls: list[list[torch.Tensor]] = []
    real = wrapper.model.generate

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append([c.detach().cpu().long() for c in out[0]])
        return out

    wrapper.model.generate = record
    try:
        yield calls
    finally:
        del wrapper.model.generate


def _upstream(wrapper, case: _Case, gen: dict, seed: int, cache: dict, key) -> tuple[list, list, float]:
    """(waveforms, codes per item, seconds) of upstream's offline method; cached by ``key``."""
    if key not in cache:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with _recording_generate(wrapper) as calls:
            wavs, _ = getattr(wrapper, f"generate_{case.method}")(**case.upstream_kwargs(wrapper), **gen)
        cache[key] = ([np.asarray(w, dtype=np.float32) for w in wavs], calls[-1], time.perf_counter() - t0)
    return cache[key]


@dataclass
class _Streamed:
    audio: dict[int, list[np.ndarray]]
    codes: list[torch.Tensor]
    first_audio: float
    seconds: float
    error: str = ""


def _stream_api(standalone, case: _Case, gen: dict, seed: int, items: int, groups: int) -> _Streamed:
    """Run ``stream_<method>`` from ``seed``; an exception is a recorded error, not a crash."""
    frames: dict[int, list[torch.Tensor]] = {i: [] for i in range(items)}
    audio: dict[int, list[np.ndarray]] = {i: [] for i in range(items)}
    batched = isinstance(case.standalone_kwargs()["text"], list)
    first_audio, error = float("nan"), ""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        stream = getattr(standalone, f"stream_{case.method}")(
            **case.standalone_kwargs(),
            **gen,
            chunk_frames=case.chunk[0],
            first_chunk_frames=case.chunk[1],
            on_frame=lambda i, codes: frames[i].append(codes.detach().cpu().long()),
        )
        for out in stream:
            i, chunk = out if batched else (0, out)
            if first_audio != first_audio:  # nan: the first chunk
                first_audio = time.perf_counter() - t0
            audio[i].append(chunk)
    except Exception as e:  # a broken standalone side is a failed case, not a crash
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    codes = [torch.stack(frames[i]) if frames[i] else torch.zeros(0, groups, dtype=torch.long) for i in range(items)]
    return _Streamed(audio, codes, first_audio, seconds, error)


def _guarded_replay(codec, codes: torch.Tensor, chunk: tuple[int, int], prefix):
    """_replay, with an exception from the standalone codec (e.g. a code outside its codebook,
    which a sampler bug can emit) turned into an error string: a failed case, not a crashed run."""
    try:
        return (*_replay(codec, codes, chunk, prefix), "")
    except Exception as e:
        if not raised_in_standalone(e):
            raise
        return [], float("nan"), 0.0, f"{type(e).__name__}: {e}"


def _replay(codec, codes: torch.Tensor, chunk: tuple[int, int], prefix) -> tuple[list[np.ndarray], float, float]:
    """(chunks, seconds to first audio, seconds) of the codes pushed one frame at a time."""
    t0, first, out = time.perf_counter(), float("nan"), []
    for audio in stream_decode(codec, codes, chunk[0], chunk[1], prefix=prefix):
        first = time.perf_counter() - t0 if not out else first
        out.append(audio)
    return out, first, time.perf_counter() - t0


def audio_match(ref: np.ndarray, parts: list[np.ndarray], dtype, icl: bool, codes=None) -> dict[str, Any]:
    """Compare streamed chunks with upstream's waveform under the streaming bound of ``dtype``.
    A length difference is named by gate/length.py's line (sides, frames, the first differing
    frame, the release's known cause; ``codes``: the [frames, G] codes both sides decoded)."""
    bound, min_snr = STREAMING_TOLERANCES[dtype]
    got = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    skipped, note = 0, ""
    if icl and len(ref) > len(got):
        skipped = len(ref) - len(got)
        note = f"upstream's float cut kept {skipped} more leading sample(s)"
        ref = ref[skipped:]
    same_len = ref.shape == got.shape
    if same_len and len(ref):
        max_abs, snr = float(np.abs(ref.astype(np.float64) - got).max()), snr_db(ref, got)
    else:
        max_abs, snr = (0.0, float("inf")) if same_len else (float("inf"), float("-inf"))
        if not same_len:
            note = length_note(got, ref, SAMPLES_PER_FRAME, bound, codes, upstream_release(), ours="streamed")
    passed = same_len and skipped <= 1 and max_abs <= bound and snr >= min_snr
    return dict(
        frames=len(got) // SAMPLES_PER_FRAME,
        samples_upstream=len(ref) + skipped,
        samples_streamed=len(got),
        leading_samples_skipped=skipped,
        chunks=len(parts),
        max_abs=max_abs,
        snr_db=snr,
        bound_max_abs=bound,
        bound_snr_db=min_snr,
        passed=passed,
        note=note,
    )


def _chunk_note(frames: int, chunk: tuple[int, int]) -> str:
    if frames < chunk[1]:
        return "clip shorter than one chunk"
    return "first chunk smaller" if chunk[1] < chunk[0] else ""


def run_streaming_parity(
    wrapper,
    standalone,
    model_type: str,
    dtype: torch.dtype,
    seed: int = 0,
    chunk_sizes=CHUNK_SIZES,
    max_new_tokens: int = 24,
    sampled: bool = True,
    cache: dict | None = None,
    cache_key: Any = None,
) -> list[StreamingComparison]:
    """Every voice mode of ``model_type``: the stream at the case's chunk size, then every other
    size of ``chunk_sizes`` plus one longer than any clip (replayed), per item."""
    gen = dict(do_sample=sampled, subtalker_dosample=sampled, max_new_tokens=max_new_tokens)
    sizes = list(dict.fromkeys([*chunk_sizes, (max_new_tokens + 1, max_new_tokens + 1)]))
    dtype_name = SHORT_NAME.get(dtype, str(dtype))
    groups = standalone.config.talker.num_code_groups
    cache = {} if cache is None else cache
    results = []
    for case in _cases(model_type, wrapper):
        key = (cache_key, dtype_name, "streaming", case.name, seed, max_new_tokens, sampled)
        ref_wavs, ref_codes, seconds_upstream = _upstream(wrapper, case, gen, seed, cache, key)
        st = _stream_api(standalone, case, gen, seed, len(ref_wavs), groups)
        div = first_divergence(ref_codes, st.codes)
        for chunk in [case.chunk] + [s for s in sizes if s != case.chunk]:
            api = chunk == case.chunk
            for i, ref in enumerate(ref_wavs):
                replay_error = ""
                if api:
                    parts, first, seconds = st.audio[i], st.first_audio, st.seconds
                else:
                    parts, first, seconds, replay_error = _guarded_replay(
                        standalone.codec, st.codes[i], chunk, case.prefix
                    )
                m = audio_match(ref, parts, dtype, icl=case.prefix is not None, codes=st.codes[i])
                error = st.error or replay_error
                notes = [n for n in (error, m.pop("note"), _chunk_note(m["frames"], chunk)) if n]
                m["passed"] = m["passed"] and div is None and not error
                results.append(
                    StreamingComparison(
                        case=case.name,
                        model_type=model_type,
                        dtype=dtype_name,
                        via=f"stream_{case.method}" if api else "replay",
                        chunk_frames=chunk[0],
                        first_chunk_frames=chunk[1],
                        item=i,
                        codes_identical=div is None,
                        first_divergence=div,
                        seconds_upstream=seconds_upstream,
                        seconds_to_first_audio=first,
                        seconds_streamed=seconds,
                        note="; ".join(notes),
                        error=error,
                        **m,
                    )
                )
    return results


def crossing_comparison(standalone, codes: torch.Tensor, ref: np.ndarray, dtype, chunk=CROSSING_CHUNK):
    """Codes [T, G] with T > 300 streamed one frame at a time against upstream's decode ``ref``."""
    parts, first, seconds = _replay(standalone.codec, codes, chunk, None)
    m = audio_match(np.asarray(ref, dtype=np.float32), parts, dtype, icl=False, codes=codes)
    spans = (UPSTREAM_CHUNK_FRAMES - chunk[1]) % chunk[0] != 0  # some chunk straddles frame 300
    note = "; ".join(n for n in (m.pop("note"), "a chunk spans frame 300" if spans else "") if n)
    return StreamingComparison(
        case=f"codec_{codes.shape[0]}_frames",
        model_type=standalone.config.tts_model_type,
        dtype=SHORT_NAME.get(dtype, str(dtype)),
        via="replay",
        chunk_frames=chunk[0],
        first_chunk_frames=chunk[1],
        item=0,
        codes_identical=True,  # the same codes go to both decoders
        first_divergence=None,
        seconds_upstream=0.0,
        seconds_to_first_audio=first,
        seconds_streamed=seconds,
        note=note,
        **m,
    )


def equal_up_to_float32_cast(got: np.ndarray, ref: np.ndarray) -> tuple[bool, str]:
    """Whether two float64-computed decodes, each returned in float32 as every decode is, are equal
    but for the cast: no sample more than one float32 step apart, and at most one in 1000 (or one)
    apart at all. Measured on an AMD EPYC, where torch picks other float64 kernels for other input
    lengths: 1 sample in 13440 and 1 in 633600 one step apart; bit-identical on the Intel Xeon. One
    latent frame less of context moves samples by more than 1e-3. Returns (equal, what differs)."""
    if got.shape != ref.shape:
        return False, f"length differs: offline {ref.shape[0]} vs streamed {got.shape[0]} samples"
    ref64 = ref.astype(np.float64)
    step = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref64)
    over = np.flatnonzero(diff > step)
    if over.size:
        i = int(over[np.argmax(diff[over])])
        return False, f"{over.size} sample(s) more than one float32 step apart (sample {i}: {got[i]!r} vs {ref[i]!r})"
    differing = int(np.count_nonzero(diff))
    if differing > max(1, diff.size // 1000):
        return False, f"{differing} of {diff.size} samples differ"
    return True, f"{differing} of {diff.size} samples one float32 step apart" if differing else ""


def exact_crossing_comparison(standalone, codes: torch.Tensor, chunk=CROSSING_CHUNK) -> StreamingComparison:
    """Codes [T, G] (T > 300) streamed through the standalone's codec cast to float64 against that
    codec's own offline decode in upstream's 300-frame chunks: equal up to the float32 cast."""
    codec64 = copy.deepcopy(standalone.codec).to(torch.float64)
    with torch.inference_mode():
        ref = codec64.chunked(codes.T[None])[0, 0].to(torch.float32).numpy()
    try:
        parts, first, seconds = _replay(codec64, codes, chunk, None)
        error = ""
    except Exception as e:
        if not raised_in_standalone(e):
            raise
        parts, first, seconds, error = [], float("nan"), 0.0, f"{type(e).__name__}: {e}"
    got = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    equal, note = equal_up_to_float32_cast(got, ref)
    same = got.shape == ref.shape and got.size > 0
    max_abs = float(np.abs(got.astype(np.float64) - ref).max()) if same else float("inf")
    return StreamingComparison(
        case=f"exact_float64.codec_{codes.shape[0]}_frames",
        model_type=standalone.config.tts_model_type,
        dtype="fp64",
        via="replay",
        chunk_frames=chunk[0],
        first_chunk_frames=chunk[1],
        item=0,
        frames=len(got) // SAMPLES_PER_FRAME,
        samples_upstream=len(ref),
        samples_streamed=len(got),
        leading_samples_skipped=0,
        chunks=len(parts),
        codes_identical=True,  # the same codes go to both decodes
        first_divergence=None,
        max_abs=max_abs,
        snr_db=snr_db(ref, got) if same else float("-inf"),
        bound_max_abs=0.0,
        bound_snr_db=float("inf"),
        passed=equal and not error,
        seconds_upstream=0.0,
        seconds_to_first_audio=first,
        seconds_streamed=seconds,
        note="; ".join(n for n in (error, note or "equal up to the float32 cast") if n),
        error=error,
    )


def format_streaming_table(results: list[StreamingComparison]) -> str:
    lines = [
        "| case | dtype | via | chunk/first | item | frames | chunks | codes | max abs | SNR dB | bound | "
        "first audio s | pass | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.dtype} | {r.via} | {r.chunk_frames}/{r.first_chunk_frames} | {r.item} | {r.frames} | "
            f"{r.chunks} | {'identical' if r.codes_identical else f'differ at {r.first_divergence}'} | "
            f"{r.max_abs:.2e} | {r.snr_db:.1f} | {r.bound_max_abs:.0e}, {r.bound_snr_db:.0f} dB | "
            f"{r.seconds_to_first_audio:.3f} | {'yes' if r.passed else 'NO'} | {r.note} |"
        )
    return "\n".join(lines)


def streaming_results(wrapper, standalone, model_type: str, dtype, seed: int, frames: int, cache_key) -> list:
    """The verify-parity streaming cases of one checkpoint and dtype, as suite ``CaseResult``s:
    every voice mode at every chunk size (upstream's side cached with the suite's), and codes
    streamed across the 300-frame chunk (upstream's decode shared with the audio case)."""
    from q3tts.verify.cases.common import UPSTREAM_CACHE, audio_codes, upstream_audio

    if wrapper.model.speech_tokenizer is None:
        return []
    comps = run_streaming_parity(
        wrapper,
        standalone,
        model_type,
        dtype,
        seed,
        max_new_tokens=frames + 1,
        cache=UPSTREAM_CACHE,
        cache_key=cache_key,
    )
    codes = audio_codes(wrapper, CROSSING_FRAMES, seed)
    ref, _ = upstream_audio(wrapper, codes, (cache_key, SHORT_NAME[dtype], "audio", CROSSING_FRAMES, seed))
    comps.append(crossing_comparison(standalone, codes, ref, dtype))
    if dtype == torch.float32:  # dtype-independent, so once per checkpoint (in the fp32 pass)
        comps.append(exact_crossing_comparison(standalone, codes))
    batched = {c.case for c in comps if c.item > 0}
    counted: set[str] = set()
    out = []
    for c in comps:
        out.append(_case_result(c, c.case in batched, c.case not in counted and c.via != "replay"))
        counted.add(c.case)
    return out


def _case_result(c: StreamingComparison, batched: bool, owns_upstream_time: bool):
    from q3tts.verify.cases.common import CaseResult

    metrics = {
        k: getattr(c, k)
        for k in (
            "via",
            "chunk_frames",
            "first_chunk_frames",
            "frames",
            "chunks",
            "codes_identical",
            "max_abs",
            "snr_db",
            "samples_upstream",
            "samples_streamed",
        )
    }
    metrics.update(
        bound=c.bound_max_abs,
        min_snr_db=c.bound_snr_db,
        first_divergence=None
        if c.first_divergence is None
        else dict(zip(("item", "frame", "group"), c.first_divergence)),
        leading_samples_skipped=c.leading_samples_skipped,
        seconds_to_first_audio=c.seconds_to_first_audio,
    )
    api = c.via != "replay"
    return CaseResult(
        case=f"streaming.{c.case}.{c.chunk_frames}_{c.first_chunk_frames}" + (f".item{c.item}" if batched else ""),
        component="streaming",
        kind="streaming",
        dtype=c.dtype,
        passed=c.passed,
        metrics=metrics,
        note=c.note,
        error=c.error,
        seconds_upstream=c.seconds_upstream if owns_upstream_time else 0.0,
        seconds_standalone=c.seconds_streamed if (not api or c.item == 0) else 0.0,
    )
