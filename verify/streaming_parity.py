"""Streaming parity: the standalone model's streamed audio against upstream's offline audio.

Each case runs one upstream voice method (`Qwen3TTSModel.generate_*`, the offline reference) and
the standalone `stream_*` twin from the same torch seed, concatenates each item's chunks and
compares them sample by sample with the bound of ``STREAMING_TOLERANCES`` (the streamed decode
rounds differently from upstream's 300-frame chunked decode; the codes are the same). ICL cloning
compares from the end of the reference: upstream's float cut keeps one more leading sample for
some lengths, the stream starts exactly at the reference's end.

Entry point: ``run_streaming_parity(wrapper, standalone, model_type, dtype)`` -> list of
``StreamingComparison``; ``format_streaming_table`` renders them as Markdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from q3tts.standalone.dtypes import SHORT_NAME
from q3tts.standalone.streaming import STREAMING_TOLERANCES

from .compare import snr_db
from .forward_parity import speech_like_waveform

CHUNK_SIZES: tuple[tuple[int, int], ...] = ((8, 4), (3, 2), (1, 1))  # (chunk, first chunk) in frames
REF_FRAMES = 5


@dataclass
class StreamingComparison:
    case: str
    model_type: str
    dtype: str
    chunk_frames: int
    first_chunk_frames: int
    item: int
    frames: int
    samples_upstream: int
    samples_streamed: int
    leading_samples_skipped: int  # ICL: upstream's extra leading sample(s) from its float cut
    chunks: int
    max_abs: float
    snr_db: float
    bound_max_abs: float
    bound_snr_db: float
    passed: bool
    seconds_upstream: float
    seconds_to_first_audio: float
    seconds_streamed: float
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Case:
    name: str
    model_type: str
    method: str  # custom_voice | voice_design | voice_clone
    upstream_kwargs: Callable[[Any], dict]  # wrapper -> kwargs of the upstream method
    standalone_kwargs: Callable[[], dict]
    ref_frames: int = 0  # ICL reference codes prepended to the decode


def _ref_code() -> torch.Tensor:
    return torch.randint(0, 16, (REF_FRAMES, 4), generator=torch.Generator().manual_seed(0))


def _icl_upstream(wrapper) -> dict:
    items = wrapper.create_voice_clone_prompt(ref_audio=(speech_like_waveform(3), 24000), ref_text="Reference words.")
    items[0].ref_code = _ref_code()  # the standalone runtime takes given reference codes
    return dict(text="Clone me.", language="english", voice_clone_prompt=items)


def _cases(model_type: str, num_code_groups: int) -> list[_Case]:
    wav = (speech_like_waveform(3), 24000)
    cases = {
        "custom_voice": [
            _Case(
                "custom_voice",
                "custom_voice",
                "custom_voice",
                lambda w: dict(text="Hi there.", speaker="alice", language="auto"),
                lambda: dict(text="Hi there.", speaker="alice", language="auto"),
            ),
            _Case(
                "custom_voice_batch",
                "custom_voice",
                "custom_voice",
                lambda w: dict(text=["Hi there.", "A second, longer one!"], speaker=["alice", "bob"], language="auto"),
                lambda: dict(text=["Hi there.", "A second, longer one!"], speaker=["alice", "bob"], language="auto"),
            ),
        ],
        "voice_design": [
            _Case(
                "voice_design",
                "voice_design",
                "voice_design",
                lambda w: dict(text="Hello.", instruct="Calm and deep."),
                lambda: dict(text="Hello.", instruct="Calm and deep."),
            ),
        ],
        "base": [
            _Case(
                "clone_xvector",
                "base",
                "voice_clone",
                lambda w: dict(text="Clone me.", language="english", ref_audio=wav, x_vector_only_mode=True),
                lambda: dict(text="Clone me.", language="english", ref_audio=wav, x_vector_only_mode=True),
            ),
        ],
    }[model_type]
    if model_type == "base" and num_code_groups == 4:  # the given reference codes fit the tiny codec
        cases.append(
            _Case(
                "clone_icl",
                "base",
                "voice_clone",
                _icl_upstream,
                lambda: dict(
                    text="Clone me.",
                    language="english",
                    ref_audio=wav,
                    ref_text="Reference words.",
                    ref_code=_ref_code(),
                ),
                ref_frames=REF_FRAMES,
            )
        )
    return cases


def run_streaming_parity(
    wrapper,
    standalone,
    model_type: str,
    dtype: torch.dtype,
    seed: int = 0,
    chunk_sizes=CHUNK_SIZES,
    max_new_tokens: int = 24,
    sampled: bool = True,
) -> list[StreamingComparison]:
    """Every case of ``model_type`` at every chunk size: upstream offline vs standalone streamed."""
    gen = dict(do_sample=sampled, subtalker_dosample=sampled, max_new_tokens=max_new_tokens)
    bound, min_snr = STREAMING_TOLERANCES[dtype]
    dtype_name = SHORT_NAME.get(dtype, str(dtype))
    results = []
    for case in _cases(model_type, standalone.config.talker.num_code_groups):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        ref_wavs, _ = getattr(wrapper, f"generate_{case.method}")(**case.upstream_kwargs(wrapper), **gen)
        seconds_upstream = time.perf_counter() - t0
        for chunk, first in chunk_sizes:
            torch.manual_seed(seed)
            batched = isinstance(case.standalone_kwargs()["text"], list)
            items: dict[int, list[np.ndarray]] = {i: [] for i in range(len(ref_wavs))}
            t0 = time.perf_counter()
            first_audio = None
            stream = getattr(standalone, f"stream_{case.method}")(
                **case.standalone_kwargs(), **gen, chunk_frames=chunk, first_chunk_frames=first
            )
            for out in stream:
                i, audio = out if batched else (0, out)
                if first_audio is None:
                    first_audio = time.perf_counter() - t0
                items[i].append(audio)
            seconds = time.perf_counter() - t0
            for i, ref in enumerate(ref_wavs):
                ref = np.asarray(ref, dtype=np.float32)
                got = np.concatenate(items[i]) if items[i] else np.zeros(0, np.float32)
                skipped, note = 0, ""
                if case.ref_frames and len(ref) > len(got):
                    skipped = len(ref) - len(got)
                    note = f"upstream's float cut kept {skipped} more leading sample(s)"
                    ref = ref[skipped:]
                same_len = ref.shape == got.shape
                max_abs = (
                    float(np.abs(ref.astype(np.float64) - got).max())
                    if same_len and len(ref)
                    else (0.0 if same_len else float("inf"))
                )
                snr = snr_db(ref, got) if same_len and len(ref) else (float("inf") if same_len else float("-inf"))
                passed = same_len and skipped <= 1 and max_abs <= bound and snr >= min_snr
                if not same_len:
                    note = f"length differs: upstream {len(ref)} vs streamed {len(got)} samples"
                results.append(
                    StreamingComparison(
                        case=case.name,
                        model_type=model_type,
                        dtype=dtype_name,
                        chunk_frames=chunk,
                        first_chunk_frames=first,
                        item=i,
                        frames=len(got) // 1920,
                        samples_upstream=len(ref) + skipped,
                        samples_streamed=len(got),
                        leading_samples_skipped=skipped,
                        chunks=len(items[i]),
                        max_abs=max_abs,
                        snr_db=snr,
                        bound_max_abs=bound,
                        bound_snr_db=min_snr,
                        passed=passed,
                        seconds_upstream=seconds_upstream,
                        seconds_to_first_audio=first_audio or float("nan"),
                        seconds_streamed=seconds,
                        note=note,
                    )
                )
    return results


def format_streaming_table(results: list[StreamingComparison]) -> str:
    lines = [
        "| case | dtype | chunk/first | item | frames | chunks | max abs | SNR dB | bound | first audio s | pass | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.dtype} | {r.chunk_frames}/{r.first_chunk_frames} | {r.item} | {r.frames} | {r.chunks} | "
            f"{r.max_abs:.2e} | {r.snr_db:.1f} | {r.bound_max_abs:.0e}, {r.bound_snr_db:.0f} dB | "
            f"{r.seconds_to_first_audio:.3f} | {'yes' if r.passed else 'NO'} | {r.note} |"
        )
    return "\n".join(lines)
