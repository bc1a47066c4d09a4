"""What a job does with the model: the same voice-method calls as `q3tts synthesize`, so a
request and the command give the same audio for the same inputs and seed."""

from __future__ import annotations

from typing import Any

import numpy as np

from q3tts.standalone.streaming import pcm16

from .schema import ModelInfo, SpeechRequest
from .voices import VoiceStore
from .worker import Job


def _call(model, prefix: str, req: SpeechRequest, voices: VoiceStore, gen: dict[str, Any]):
    """The checkpoint type's voice method (``prefix`` generate_ or stream_), as the CLI calls it."""
    kind = model.config.tts_model_type
    if kind == "custom_voice":
        return getattr(model, prefix + "custom_voice")(
            req.text, speaker=req.speaker, language=req.language, instruct=req.instructions, **gen
        )
    if kind == "voice_design":
        return getattr(model, prefix + "voice_design")(
            req.text, instruct=req.instructions, language=req.language, **gen
        )
    voice = voices.get(req.voice_id)
    if voice is None:  # deleted while the request waited
        raise ValueError(f"voice {req.voice_id!r} is no longer registered")
    return getattr(model, prefix + "voice_clone")(
        req.text, language=req.language, voice_clone_prompt=voice.prompt, **gen
    )


def _seed(req: SpeechRequest) -> None:
    if req.seed is not None:
        import torch

        torch.manual_seed(req.seed)


def whole(req: SpeechRequest, voices: VoiceStore):
    """A job returning the whole waveform (float32), made as `q3tts synthesize` makes it."""

    def run(model, job: Job) -> np.ndarray:
        job.check()
        _seed(req)
        wavs, _ = _call(model, "generate_", req, voices, dict(req.sampling, progress=False))
        job.frames = len(wavs[0]) // model.codec.cfg.total_upsample
        return wavs[0]

    return run


def stream(req: SpeechRequest, voices: VoiceStore):
    """A job emitting 16-bit PCM chunks as `q3tts synthesize --stream` makes them. The frame
    callback checks for cancellation before every frame is decoded, so a client that leaves
    stops the talker within one step."""

    def run(model, job: Job) -> None:
        def on_frame(_item, _codes):
            job.check()
            job.frames += 1

        job.check()
        _seed(req)
        gen = dict(
            req.sampling,
            progress=False,
            chunk_frames=req.chunk_frames,
            first_chunk_frames=req.first_chunk_frames,
            on_frame=on_frame,
        )
        chunks = _call(model, "stream_", req, voices, gen)
        try:
            for chunk in chunks:
                job.check()
                job.emit(pcm16(chunk))
        finally:
            chunks.close()  # stops the frame loop and frees its caches

    return run


def register(wav: np.ndarray, sample_rate: int, ref_text: str | None):
    """A job turning a reference recording into a clone prompt (ICL with a transcript, else x-vector only)."""

    def run(model, job: Job):
        job.check()
        return model.create_voice_clone_prompt((wav, sample_rate), ref_text=ref_text, x_vector_only_mode=not ref_text)

    return run


def model_info(model, formats: tuple[str, ...]) -> ModelInfo:
    kind = model.config.tts_model_type
    return ModelInfo(
        kind=kind,
        speakers=tuple(model.get_supported_speakers()) if kind == "custom_voice" else (),
        languages=tuple(model.get_supported_languages()),
        generate_defaults=dict(model.generate_defaults),
        formats=formats,
        sample_rate=model.codec.cfg.output_sample_rate,
    )


def warm_up(model) -> float:
    """One short synthesis (and a short stream) before the port opens: the first request should
    not pay for lazy loading (tokenizer, generation defaults) or first-call allocations. Returns
    the seconds it took. The RNG is reseeded by every request that asks for a seed."""
    import time

    import torch

    start = time.perf_counter()
    kind = model.config.tts_model_type
    gen = dict(max_new_tokens=3, progress=False)
    if kind == "custom_voice":
        model.generate_custom_voice("Warm up.", speaker=model.get_supported_speakers()[0], **gen)
    elif kind == "voice_design":
        model.generate_voice_design("Warm up.", instruct="A calm voice.", **gen)
    else:
        sr = model.config.speaker_encoder.sample_rate
        wav = (0.1 * torch.sin(torch.arange(sr // 2) / 7.0)).numpy().astype(np.float32)
        prompt = model.create_voice_clone_prompt((wav, sr), x_vector_only_mode=True)
        model.generate_voice_clone("Warm up.", voice_clone_prompt=prompt, **gen)
    return time.perf_counter() - start
