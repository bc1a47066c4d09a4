"""Streaming synthesis: audio chunks while the talker is still generating, equal to offline audio.

The offline reference is ``CodecDecoder.chunked`` (upstream's decode): 300-frame chunks, each
decoded from 25 frames of left context (the first from frame 0). A streamed chunk of frames
[s, e) is decoded so that every sample depends on exactly the codes its offline twin depends on:

* the latent part (RVQ sum, causal pre-conv, sliding-window transformer) runs over the codes from
  the start of the enclosing upstream chunk ``a_k`` to ``e``. Its receptive field, pre-conv
  (k - 1) + layers x (window - 1) = 2 + 8 x 71 = 570 frames at the released config, is longer
  than an upstream chunk (25 + 300), so only ``a_k`` bounds it; and RoPE positions must count
  from ``a_k`` as they do offline;
* the waveform part (2 x [transposed conv, ConvNeXt], causal conv, 4 decoder blocks, causal conv)
  is causal with a finite receptive field, ``tail_context_frames`` (10 frames at the released
  config), derived by walking the decoder's layers backwards from the chunk's first sample. It
  gets that many latent frames of left context, clamped at ``a_k``;
* a streamed chunk that crosses a 300-frame boundary is split there, each part decoded in its
  own upstream chunk's context.

With that context the streamed audio equals the offline audio as a function of the codes: in
float64 it is bit-identical, while one latent frame less context is not (tests/test_streaming.py). It is
not bit-identical in fp32/bf16: torch picks conv kernels by input size (the native kernel below
20480 input elements, oneDNN above, and oneDNN's transposed conv blocks differently for other
lengths), so a shorter window rounds differently. The measured bounds are in
``q3tts.verify.compare.STREAMING_TOLERANCES`` (with every other tolerance).
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .codec import CausalConv, CausalTransConv, CodecDecoder, ConvNeXt, DecoderBlock, ResidualUnit
from .generation import GenerateOptions, iter_frames
from .prompt import build_talker_prompt

# Upstream's chunked decode (Qwen3TTSTokenizerV2Decoder.chunked_decode defaults), which
# CodecDecoder.chunked replicates.
UPSTREAM_CHUNK_FRAMES = 300
UPSTREAM_CHUNK_CONTEXT = 25

DEFAULT_CHUNK_FRAMES = 8
DEFAULT_FIRST_CHUNK_FRAMES = 4


# --------------------------------------------------------------------------------------------
# Left context
# --------------------------------------------------------------------------------------------
def _tail_layers(codec: CodecDecoder) -> list[torch.nn.Module]:
    """The waveform part's layers that reach back in time, in forward order (pointwise layers,
    norms and activations do not; residual adds do not widen the field)."""
    out: list[torch.nn.Module] = []

    def walk(m):
        if isinstance(m, (CausalConv, CausalTransConv)):
            out.append(m)
        elif isinstance(m, ConvNeXt):
            out.append(m.dwconv)
        elif isinstance(m, ResidualUnit):
            out.extend([m.conv1, m.conv2])
        elif isinstance(m, DecoderBlock):
            for sub in m.block:
                walk(sub)
        elif isinstance(m, torch.nn.ModuleList):
            for sub in m:
                walk(sub)

    walk(codec.upsample)
    walk(codec.decoder)
    return out


def tail_context_frames(codec: CodecDecoder) -> int:
    """Latent frames of left context that the waveform part needs so that the samples of frame s
    onward equal those of an unbounded decode: the earliest latent frame that sample s * 1920
    depends on, walking the causal convs and transposed convs backwards."""
    s = 1 << 16  # far from the clip start; the decoder is periodic in frames, so any s gives the same
    n = s * codec.cfg.total_upsample  # earliest sample needed, in the current layer's output units
    for layer in reversed(_tail_layers(codec)):
        if isinstance(layer, CausalConv):
            if layer.stride != 1:
                raise ValueError("streaming assumes stride-1 causal convs in the codec decoder")
            n -= layer.kernel_eff - 1  # output t reads inputs t - (k_eff - 1) .. t
        else:
            k, r = layer.conv.kernel_size[0], layer.conv.stride[0]
            n = (n - k) // r + 1  # output t reads inputs i with i * r <= t < i * r + k
    return s - n


def latent_context_frames(codec: CodecDecoder) -> int:
    """Receptive field of the latent part (pre-conv, then each sliding-window layer)."""
    cfg = codec.cfg
    return codec.pre_conv.kernel_eff - 1 + cfg.num_hidden_layers * (cfg.sliding_window - 1)


def upstream_chunk_start(frame: int) -> tuple[int, int]:
    """(first frame of the upstream chunk holding ``frame``, first frame that chunk decodes from)."""
    start = frame // UPSTREAM_CHUNK_FRAMES * UPSTREAM_CHUNK_FRAMES
    context = UPSTREAM_CHUNK_CONTEXT if start - UPSTREAM_CHUNK_CONTEXT > 0 else start
    return start, start - context


# --------------------------------------------------------------------------------------------
# The two halves of CodecDecoder.forward (tests check they compose to it bit for bit)
# --------------------------------------------------------------------------------------------
def codec_latent(codec: CodecDecoder, codes: torch.Tensor) -> torch.Tensor:
    """codes [B, G, T] -> transformer output [B, latent_dim, T]."""
    n = codec.cfg.num_quantizers
    h = F.conv1d(codec._quantizer_sum(codes, 0, 1), codec.semantic_output_proj)
    h += F.conv1d(codec._quantizer_sum(codes, 1, n - 1), codec.acoustic_output_proj)
    h = codec.pre_conv(h).transpose(1, 2)
    return codec.transformer(h).permute(0, 2, 1)


def codec_waveform(codec: CodecDecoder, h: torch.Tensor) -> torch.Tensor:
    """transformer output [B, latent_dim, T] -> waveform [B, 1, T * total_upsample] in [-1, 1]."""
    for pair in codec.upsample:
        for m in pair:
            h = m(h)
    for m in codec.decoder:
        h = m(h)
    return h.clamp(min=-1, max=1)


# --------------------------------------------------------------------------------------------
# Streaming codec decode
# --------------------------------------------------------------------------------------------
class CodecStream:
    """Frames in, audio out: ``push`` codes [n, G] as they are generated and get the float32
    samples of every chunk completed so far (possibly none); ``flush`` at the end.

    Chunks hold ``first_chunk_frames`` frames, then ``chunk_frames``. ``prefix`` codes (ICL
    reference codes) are context only: their audio is never returned. ``tail_context`` overrides
    the derived context (tests use it to show that one frame less breaks equality)."""

    def __init__(
        self,
        codec: CodecDecoder,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        first_chunk_frames: int | None = DEFAULT_FIRST_CHUNK_FRAMES,
        prefix: torch.Tensor | None = None,
        tail_context: int | None = None,
    ):
        first = chunk_frames if first_chunk_frames is None else first_chunk_frames
        for name, v in (("chunk_frames", chunk_frames), ("first_chunk_frames", first)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.codec = codec
        self.chunk_frames, self.first_chunk_frames = chunk_frames, first
        self.tail_context = tail_context_frames(codec) if tail_context is None else tail_context
        self.upsample = codec.cfg.total_upsample
        device = codec.codebook_sums.device
        self._codes = torch.empty(codec.cfg.num_quantizers, 0, dtype=torch.long, device=device)  # [G, kept]
        self._base = 0  # absolute frame index of self._codes[:, 0]
        self.frames = 0  # frames received (prefix included)
        self.emitted = 0  # frames whose audio was returned (or that are prefix)
        self.chunks = 0
        if prefix is not None and len(prefix):
            self._append(prefix)
            self.emitted = self.frames

    def _append(self, frames: torch.Tensor) -> None:
        frames = torch.as_tensor(frames, dtype=torch.long).to(self._codes.device)
        if frames.dim() != 2 or frames.shape[1] != self._codes.shape[0]:
            raise ValueError(f"codes must be [frames, {self._codes.shape[0]}], got {tuple(frames.shape)}")
        self._codes = torch.cat([self._codes, frames.clamp(min=0).T], dim=1)
        self.frames += frames.shape[0]

    def push(self, frames: torch.Tensor) -> np.ndarray:
        self._append(frames)
        parts = []
        while True:
            size = self.first_chunk_frames if self.chunks == 0 else self.chunk_frames
            if self.frames - self.emitted < size:
                break
            parts.append(self._decode(self.emitted, self.emitted + size))
        return _concat(parts)

    def flush(self) -> np.ndarray:
        return self._decode(self.emitted, self.frames) if self.frames > self.emitted else _concat([])

    @torch.inference_mode()
    def _decode(self, start: int, end: int) -> np.ndarray:
        parts = []
        s = start
        while s < end:
            chunk_start, window_start = upstream_chunk_start(s)
            e = min(end, chunk_start + UPSTREAM_CHUNK_FRAMES)  # never cross an upstream chunk
            codes = self._codes[None, :, window_start - self._base : e - self._base]
            latent = codec_latent(self.codec, codes)
            tail_start = max(window_start, s - self.tail_context)
            wav = codec_waveform(self.codec, latent[..., tail_start - window_start :])
            parts.append(wav[0, 0, (s - tail_start) * self.upsample :].to(torch.float32).cpu().numpy())
            s = e
        self.emitted = end
        self.chunks += 1
        keep_from = upstream_chunk_start(end)[1]  # later chunks never reach before this window
        if keep_from > self._base:
            self._codes = self._codes[:, keep_from - self._base :]
            self._base = keep_from
        return _concat(parts)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def stream_decode(
    codec: CodecDecoder,
    codes: torch.Tensor,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    first_chunk_frames: int | None = DEFAULT_FIRST_CHUNK_FRAMES,
    push_frames: int = 1,
    prefix: torch.Tensor | None = None,
    tail_context: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream already-generated codes [T, G] through a CodecStream, ``push_frames`` at a time."""
    stream = CodecStream(codec, chunk_frames, first_chunk_frames, prefix=prefix, tail_context=tail_context)
    for i in range(0, codes.shape[0], push_frames):
        audio = stream.push(codes[i : i + push_frames])
        if audio.size:
            yield audio
    audio = stream.flush()
    if audio.size:
        yield audio


# --------------------------------------------------------------------------------------------
# Streaming voice methods
# --------------------------------------------------------------------------------------------
class _Recorded(Exception):
    pass


class StreamingVoiceMethods:
    """Mixed into Qwen3TTS: generator forms of the voice methods.

    ``stream_custom_voice`` / ``stream_voice_design`` / ``stream_voice_clone`` take the arguments
    of their ``generate_*`` twins plus ``chunk_frames`` and ``first_chunk_frames``, validate them
    at call time, and return a generator. For one text it yields float32 24 kHz chunks; for a
    list of texts it yields ``(item_index, chunk)``, each item streaming as its frames arrive (an
    item's audio ends at its EOS). Concatenated, an item's chunks equal the offline method's
    waveform within ``verify.compare.STREAMING_TOLERANCES`` (ICL cloning: offline keeps one more leading sample
    when upstream's float cut rounds down; the stream starts exactly at the reference's end).
    Closing the generator stops generation before the next frame and releases the caches.
    ``on_frame(item, codes)``, if given, is called with each item's codes [G] (EOS excluded)
    before they are decoded: the codes ``generate_*(..., return_codes=True)`` would return.

    The ``generate_*`` methods stay the one place where texts, languages, speakers and prompts are
    validated and turned into ``generate()`` arguments: a stream replays its twin with
    ``generate`` recorded instead of run (so the two cannot drift), then runs the frame loop.
    """

    def stream_custom_voice(
        self,
        text,
        speaker,
        *,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        first_chunk_frames: int | None = DEFAULT_FIRST_CHUNK_FRAMES,
        on_frame=None,
        **kwargs,
    ):
        call = self._record_generate(self.generate_custom_voice, text, speaker=speaker, **kwargs)
        return self._stream(call, isinstance(text, list), chunk_frames, first_chunk_frames, on_frame)

    def stream_voice_design(
        self,
        text,
        instruct,
        *,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        first_chunk_frames: int | None = DEFAULT_FIRST_CHUNK_FRAMES,
        on_frame=None,
        **kwargs,
    ):
        call = self._record_generate(self.generate_voice_design, text, instruct=instruct, **kwargs)
        return self._stream(call, isinstance(text, list), chunk_frames, first_chunk_frames, on_frame)

    def stream_voice_clone(
        self,
        text,
        *,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        first_chunk_frames: int | None = DEFAULT_FIRST_CHUNK_FRAMES,
        on_frame=None,
        **kwargs,
    ):
        call = self._record_generate(self.generate_voice_clone, text, **kwargs)
        return self._stream(call, isinstance(text, list), chunk_frames, first_chunk_frames, on_frame)

    # ---------------------------------------------------------------------------------------
    def _record_generate(self, method, *args, **kwargs) -> dict[str, Any]:
        """Run a voice method up to its generate() call and return that call's keyword arguments.
        Not thread-safe on one model instance (neither is upstream's model)."""
        recorded: dict[str, Any] = {}

        def record(**kw):
            recorded.update(kw)
            raise _Recorded

        if kwargs.pop("return_codes", False):
            raise ValueError("streaming methods yield audio; return_codes is not supported")
        self.__dict__["generate"] = record  # shadows Qwen3TTS.generate on this instance only
        try:
            method(*args, return_codes=True, **kwargs)
        except _Recorded:
            pass
        finally:
            self.__dict__.pop("generate", None)
        if not recorded:
            raise RuntimeError(f"{method.__name__} returned without calling generate()")
        return recorded

    def _stream(self, call: dict[str, Any], batched: bool, chunk_frames: int, first_chunk_frames: int | None, on_frame):
        if on_frame is not None and not callable(on_frame):
            raise ValueError(f"on_frame must be callable, got {type(on_frame).__name__}")
        named = set(inspect.signature(type(self).generate).parameters) - {"self", "options"}
        args = {k: v for k, v in call.items() if k in named}
        progress = bool(args.pop("progress", False))
        params = GenerateOptions.from_kwargs({k: v for k, v in call.items() if k not in named}).to_params()
        with torch.inference_mode():
            prompt = build_talker_prompt(
                self,
                args.get("input_ids"),
                args.get("instruct_ids"),
                args.get("ref_ids"),
                args.get("voice_clone_prompt"),
                args.get("languages"),
                args.get("speakers"),
                args.get("non_streaming_mode", False),
            )
        vcp = args.get("voice_clone_prompt") or {}
        n = prompt.inputs_embeds.shape[0]
        prefixes = list(vcp.get("ref_code") or [None] * n)
        # Validate chunk sizes now, not at the first frame.
        streams = [CodecStream(self.codec, chunk_frames, first_chunk_frames, prefix=p) for p in prefixes]
        return self._run_stream(prompt, params, progress, streams, batched, on_frame)

    def _run_stream(self, prompt, params, progress, streams, batched, on_frame=None):
        eos = self.config.talker.codec_eos_token_id  # rows end at the config's EOS, as generate_codes cuts
        done = [False] * len(streams)
        frames = iter_frames(self, prompt, params, progress=progress, engine=self.fast_engine())
        try:
            for frame, _ in frames:
                g0 = frame[:, 0].tolist()
                for i, stream in enumerate(streams):
                    if done[i]:
                        continue
                    if g0[i] == eos:
                        done[i] = True
                        audio = stream.flush()
                    else:
                        if on_frame is not None:
                            on_frame(i, frame[i])
                        audio = stream.push(frame[i : i + 1])
                    if audio.size:
                        yield (i, audio) if batched else audio
            for i, stream in enumerate(streams):
                if not done[i]:
                    audio = stream.flush()
                    if audio.size:
                        yield (i, audio) if batched else audio
        finally:
            frames.close()  # stop the loop now and drop its caches, also when the consumer closes us


# --------------------------------------------------------------------------------------------
# Progressive output
# --------------------------------------------------------------------------------------------
def pcm16(chunk: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> 16-bit little-endian PCM, converted as the libsndfile bundled with
    soundfile does (floor of x * 32768, clipped; measured bit for bit), so a streamed wav holds the
    samples that the offline ``sf.write`` would."""
    scaled = np.floor(np.asarray(chunk, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


class ProgressiveWav:
    """A 16-bit mono WAV written chunk by chunk that is a valid file at every moment: the header
    is written first (zero samples), and after each chunk's samples the RIFF and data sizes are
    rewritten and the file flushed. Readers see the audio so far; bytes appended after the last
    header update are ignored by readers until the next update."""

    def __init__(self, path, sample_rate: int):
        self.f = open(path, "wb")
        self.sample_rate = sample_rate
        self.data_bytes = 0
        self.f.write(self._header())
        self.f.flush()

    def _header(self) -> bytes:
        import struct

        rate = self.sample_rate
        return (
            b"RIFF"
            + struct.pack("<I", 36 + self.data_bytes)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data"
            + struct.pack("<I", self.data_bytes)
        )

    def write(self, chunk: np.ndarray) -> None:
        data = pcm16(chunk)
        self.f.seek(0, 2)
        self.f.write(data)
        self.data_bytes += len(data)
        self.f.seek(0)
        self.f.write(self._header())
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_stream(chunks, out: str, sample_rate: int, on_first=None) -> int:
    """Write streamed chunks to a progressive WAV at ``out``, or raw 16-bit PCM to stdout for
    ``out == "-"``. Calls ``on_first()`` when the first audio is written; returns the samples."""
    import sys

    total = 0
    sink = sys.stdout.buffer if out == "-" else None
    wav = None if sink is not None else ProgressiveWav(out, sample_rate)
    try:
        for chunk in chunks:
            if sink is not None:
                sink.write(pcm16(chunk))
                sink.flush()
            else:
                wav.write(chunk)
            if total == 0 and on_first is not None:
                on_first()
            total += len(chunk)
    finally:
        if wav is not None:
            wav.close()
        if hasattr(chunks, "close"):
            chunks.close()
    return total
