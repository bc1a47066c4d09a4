"""Audio encoders for ``response_format``, and which of OpenAI's formats this machine can encode.

wav, pcm (raw 16-bit little-endian mono) and flac always; mp3 and opus (in Ogg) when the
libsndfile under ``soundfile`` was built with LAME/mpg123 and libopus (1.1.0 and later usually
are); aac never (no maintained encoder among our dependencies). A format that cannot be encoded is
refused with a 400 naming ``response_format``, never silently swapped for another.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from q3tts.standalone.streaming import pcm16

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# soundfile (format, subtype) per encodable format; pcm is written by pcm16.
_SOUNDFILE = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}
STREAMABLE = ("wav", "pcm")  # formats whose bytes can be sent as the samples arrive


def available_formats() -> tuple[str, ...]:
    """The formats this process can encode, in OpenAI's order."""
    import soundfile as sf

    out = ["pcm"]
    for name, (container, subtype) in _SOUNDFILE.items():
        if container in sf.available_formats() and subtype in sf.available_subtypes(container):
            out.append(name)
    return tuple(f for f in OPENAI_FORMATS if f in out)


def encode(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole float32 waveform as ``fmt`` bytes. wav is what `q3tts synthesize` writes
    (soundfile's 16-bit PCM wav), byte for byte; pcm and flac hold the same 16-bit samples."""
    if fmt == "pcm":
        return pcm16(wav)
    import soundfile as sf

    container, subtype = _SOUNDFILE[fmt]
    if fmt != "wav":  # the wav's 16-bit samples (libsndfile's FLAC writer rounds floats another way)
        wav = np.frombuffer(pcm16(wav), dtype="<i2")
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format=container, subtype=subtype)
    return buf.getvalue()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length: the RIFF and data sizes are
    0xFFFFFFFF, which players and decoders (ffmpeg, browsers, soundfile) read as "until the end"."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )
