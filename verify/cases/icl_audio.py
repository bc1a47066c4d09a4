"""ICL cloning from a recording, end to end: upstream's ``Qwen3TTSModel.generate_voice_clone`` and
the standalone ``generate_voice_clone`` both start from the same reference audio (a wav file on
disk, or an ``(array, sr)`` pair) and its transcript, with no reference codes given.

Each side makes everything else itself: it reads and resamples the audio, encodes the reference
codes with its own speech-tokenizer encoder, takes the x-vector with its own speaker encoder,
generates and decodes. Three things are compared, in the order they happen:

1. the reference codes each side handed to its generate call (identical, else the case names
   ``speech_encoder``: the recording was tokenised differently);
2. the x-vector each side handed to it (the forward tolerance of the dtype, else
   ``speaker_encoder``);
3. the generated codes (identical, else ``generation`` with the first differing item/frame/group);
4. the returned waveform (the dtype's audio tolerance, else ``codec``).

Component ``voice_clone_from_audio``, kind ``icl_audio``. Upstream's side does not depend on the
standalone one, so it is cached per (checkpoint, dtype, case, mode, seed, frames) like the
generation cases; the fault tests reuse it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import numpy as np
import torch

from q3tts.verify.cases.common import UPSTREAM_CACHE, CaseResult
from q3tts.verify.cases.encoder import speech_clip
from q3tts.verify.cases.generation import GREEDY, SAMPLING
from q3tts.verify.compare import AUDIO_TOLERANCES, DTYPE_NAMES, audio_diff, compare, first_divergence, format_number
from q3tts.verify.gate.length import SAMPLES_PER_FRAME, length_note, upstream_release

COMPONENT = "voice_clone_from_audio"
TEXT = "Nice to meet you, how are you today?"
REF_TEXT = "Hello there, this is my voice."
LANGUAGE = "english"


def _reference(seed: int, seconds: float, sr: int) -> np.ndarray:
    """A speech-like recording peaking at 0.9 (the speaker encoder expects [-1, 1])."""
    wav = speech_clip(seed, seconds, sr)
    return (0.9 * wav / np.abs(wav).max()).astype(np.float32)


def _wav_file(directory: Path, name: str, sr: int, seconds: float, stereo: bool, seed: int) -> str:
    import soundfile as sf

    wav = _reference(seed, seconds, sr)
    data = np.stack([wav, 0.6 * wav[::-1]], axis=-1) if stereo else wav
    path = directory / name
    if not path.exists():
        sf.write(str(path), data, sr, subtype="PCM_16")
    return str(path)


@dataclass(frozen=True)
class IclAudioCase:
    name: str
    reference: Callable[[Path], Any]  # workdir -> the ref_audio argument both sides receive
    non_streaming: bool
    description: str


CASES: tuple[IclAudioCase, ...] = (
    IclAudioCase(
        "wav_24k.streaming",
        lambda d: _wav_file(d, "ref-24k.wav", 24000, 1.4, False, 21),
        False,
        "24 kHz mono 16-bit wav file, streaming text",
    ),
    IclAudioCase(
        "wav_44k_stereo.non_streaming",
        lambda d: _wav_file(d, "ref-44k-stereo.wav", 44100, 1.1, True, 22),
        True,
        "44.1 kHz stereo 16-bit wav file (downmix, resampling), non-streaming text",
    ),
    IclAudioCase(
        "array_16k.streaming",
        lambda d: (_reference(23, 1.6, 16000), 16000),
        False,
        "(array, 16 kHz) pair, streaming text",
    ),
    IclAudioCase(
        "wav_24k_11s.streaming",
        lambda d: _wav_file(d, "ref-24k-11s.wav", 24000, 11.0, False, 24),
        False,
        "11 s reference: past the encoder transformer's 250-frame window (which upstream does not apply)",
    ),
)


def plans(seeds: list[int]) -> list[tuple[str, int]]:
    """Greedy once, the checkpoint-default sampling per seed."""
    return [("greedy", seeds[0])] + [("sampled", s) for s in seeds]


@contextlib.contextmanager
def recording_generate(owner) -> Iterator[dict]:
    """Wraps ``owner.generate`` (upstream's model or the standalone model) for one call: records
    the reference codes it was handed and the codes it returned."""
    seen: dict = {}
    inner = owner.generate

    def generate(*args, **kwargs):
        prompt = kwargs.get("voice_clone_prompt") or {}
        seen["ref_codes"] = [None if c is None else c.detach().cpu() for c in prompt.get("ref_code") or []]
        seen["xvectors"] = [e.detach().cpu() for e in prompt.get("ref_spk_embedding") or []]
        codes, hidden = inner(*args, **kwargs)
        seen["codes"] = [c.detach().cpu() for c in codes]
        return codes, hidden

    with mock.patch.object(owner, "generate", generate):
        yield seen


def clone(side, generate_owner, case: IclAudioCase, workdir: Path, mode: str, seed: int, frames: int) -> dict:
    """One side's ``generate_voice_clone`` from the case's reference audio: ref codes, codes, audio."""
    sampling = dict(GREEDY if mode == "greedy" else SAMPLING, max_new_tokens=frames)
    with recording_generate(generate_owner) as seen:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        (wav,), sr = side.generate_voice_clone(
            TEXT,
            language=LANGUAGE,
            ref_audio=case.reference(workdir),
            ref_text=REF_TEXT,
            non_streaming_mode=case.non_streaming,
            **sampling,
        )
        seconds = time.perf_counter() - t0
    return dict(seen, wav=np.asarray(wav, dtype=np.float32), sr=int(sr), seconds=seconds)


def _code_counts(ref: list, got: list) -> tuple[bool, int, int]:
    """(identical, differing codes, total codes) of two lists of [T, G] code tensors."""
    total = sum(int(r.numel()) for r in ref if r is not None)
    same = len(ref) == len(got) and all(
        (r is None and g is None) or (r is not None and g is not None and torch.equal(r, g)) for r, g in zip(ref, got)
    )
    bad = sum(
        int((r != g).sum()) if r.shape == g.shape else int(r.numel())
        for r, g in zip(ref, got)
        if r is not None and g is not None
    )
    return same, bad, total


def _verdict(up: dict, st: dict, dtype: torch.dtype) -> tuple[str | None, dict, str]:
    """(first stage that differs or None, metrics, note) of one comparison."""
    ref_same, ref_bad, ref_total = _code_counts(up["ref_codes"], st["ref_codes"])
    xvec = compare("xvector", torch.stack(up["xvectors"]), torch.stack(st["xvectors"]), dtype)
    div = first_divergence(up["codes"], st["codes"])
    bound, min_snr = AUDIO_TOLERANCES[dtype]
    if st["wav"].shape == up["wav"].shape and st["sr"] == up["sr"]:
        max_abs, snr = audio_diff(up["wav"], st["wav"])
        audio_ok = max_abs <= bound and snr >= min_snr
    else:
        max_abs, snr, audio_ok = float("inf"), float("-inf"), False
    metrics = {
        "ref_codes_identical": ref_same,
        "ref_codes_differing": ref_bad,
        "ref_codes": ref_total,
        "ref_frames": [int(c.shape[0]) for c in up["ref_codes"] if c is not None],
        "xvector_max_abs": xvec.max_abs,
        "xvector_bound": xvec.bound,
        "frames_upstream": [int(c.shape[0]) for c in up["codes"]],
        "frames_standalone": [int(c.shape[0]) for c in st["codes"]],
        "first_divergence": None if div is None else {"item": div[0], "frame": div[1], "group": div[2]},
        "max_abs": max_abs,
        "snr_db": snr,
        "bound": bound,
        "min_snr_db": min_snr,
        "samples": [int(up["wav"].shape[0]), int(st["wav"].shape[0])],
    }
    if not ref_same:
        return "speech_encoder", metrics, f"reference codes differ: {ref_bad} of {ref_total}"
    if not xvec.passed:
        return "speaker_encoder", metrics, f"x-vectors differ: max abs {xvec.max_abs:.2e} (bound {xvec.bound:.2e})"
    if div is not None:
        item, frame, group = div
        return "generation", metrics, f"codes differ at item {item}, frame {frame}, group {group}"
    if st["wav"].shape != up["wav"].shape:  # no sample-wise comparison: which side is shorter, by how much
        return "codec", metrics, length_note(st["wav"], up["wav"], SAMPLES_PER_FRAME, bound, release=upstream_release())
    if not audio_ok:
        return "codec", metrics, f"audio differs: max abs {max_abs:.2e}, SNR {snr:.1f} dB, samples {metrics['samples']}"
    return None, metrics, ""


def icl_audio_case(
    wrapper, standalone, case: IclAudioCase, mode: str, seed: int, frames: int, dtype, cache_key: str, workdir: Path
) -> CaseResult:
    dname = DTYPE_NAMES[dtype]
    key = (cache_key, dname, "icl_audio", case.name, mode, seed, frames)
    if key not in UPSTREAM_CACHE:
        UPSTREAM_CACHE[key] = clone(wrapper, wrapper.model, case, workdir, mode, seed, frames)
    up = UPSTREAM_CACHE[key]
    error = ""
    try:
        st = clone(standalone, standalone, case, workdir, mode, seed, frames)
        stage, metrics, note = _verdict(up, st, dtype)
    except Exception as e:  # a broken standalone side is a failed case, not a crash
        st = {"seconds": 0.0}
        error = f"{type(e).__name__}: {e}"
        stage, metrics, note = "voice_clone_from_audio", {}, error
    return CaseResult(
        case=f"icl_audio.{case.name}.{mode}" + (f".seed{seed}" if mode != "greedy" else ""),
        component=COMPONENT,
        kind="icl_audio",
        dtype=dname,
        passed=stage is None,
        metrics=metrics,
        first_bad_layer=stage,
        note=note or case.description,
        error=error,
        seconds_upstream=up["seconds"],
        seconds_standalone=st["seconds"],
    )


def icl_audio_results(
    wrapper,
    standalone,
    dtype: torch.dtype,
    seeds: list[int],
    frames: int,
    cache_key: str,
    cases: tuple[str, ...] | None = None,
) -> list[CaseResult]:
    """Every ICL-from-audio case (or the named ones) under every plan, on a Base checkpoint pair."""
    chosen = [c for c in CASES if cases is None or c.name in cases]
    with tempfile.TemporaryDirectory(prefix="q3tts-icl-audio-") as tmp:
        return [
            icl_audio_case(wrapper, standalone, case, mode, seed, frames, dtype, cache_key, Path(tmp))
            for case in chosen
            for mode, seed in plans(seeds)
        ]


def icl_audio_cell(c: dict[str, Any]) -> str:
    """One report cell for an ICL-from-audio case (verify-parity's report and this module's own)."""
    m = c["metrics"]
    if not c["passed"]:  # the note names what differs first (or the standalone's exception)
        return c["note"]
    return (
        f"reference codes identical ({m['ref_codes']}), x-vector max abs {format_number(m['xvector_max_abs'])}, codes "
        f"identical ({','.join(map(str, m['frames_upstream']))} frames), audio max abs {format_number(m['max_abs'])} "
        f"(bound {format_number(m['bound'])})"
    )


def render(rows: list[dict], title: str) -> str:
    lines = [
        f"# ICL cloning from a recording: {title}",
        "",
        "Upstream's `Qwen3TTSModel.generate_voice_clone` and the standalone `generate_voice_clone` from the same "
        "reference audio and transcript, no reference codes given (verify/cases/icl_audio.py). Compared in order: "
        "the reference codes each side encoded, the x-vector, the generated codes, the returned waveform. "
        "Checkpoint: verify.fixtures.write_release_size_checkpoint (released talker and speech-tokenizer configs, "
        "fixture-initialiser weights), loaded by each package in the dtype; 1 thread. Reproduce: "
        "`python -m q3tts.verify.cases.icl_audio --size 0.6B --out reports`.",
        "",
        "| case | dtype | verdict | numbers | upstream s | standalone s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['dtype']} | {'PASS' if r['passed'] else 'FAIL'} | {icl_audio_cell(r)} | "
            f"{r['seconds_upstream']:.1f} | {r['seconds_standalone']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    """The cases on a released-size Base checkpoint with random weights (several GB on disk)."""
    import argparse
    import json
    import shutil

    from q3tts.convert import convert_checkpoint
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.fixtures.writer import write_release_size_checkpoint

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--size", default="0.6B")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="q3tts-icl-released-"))
    rows = []
    try:
        up = write_release_size_checkpoint(work / "upstream", args.size, "base")
        convert_checkpoint(up, work / "standalone")
        for dtype in (torch.float32, torch.bfloat16):
            wrapper = load_upstream_wrapper(up, dtype)
            standalone = Qwen3TTS.from_pretrained(work / "standalone", dtype=dtype)
            seeds = [int(s) for s in args.seeds.split(",")]
            rows += [r.as_dict() for r in icl_audio_results(wrapper, standalone, dtype, seeds, args.frames, "released")]
            del wrapper, standalone
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    stem = f"icl-audio-{args.size}-base"
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(
        render(rows, f"released {args.size} Base size, random weights, {args.frames} frames")
    )


if __name__ == "__main__":
    main()
