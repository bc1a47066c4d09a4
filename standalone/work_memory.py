"""Memory estimates of the audio work, checked before the work starts.

Resampling, encoding (the speech-tokenizer encoder, the speaker encoder on reference audio) and
decoding codes allocate in proportion to their input: a one-hour reference encodes through full
causal attention over 90000 frames, a million frames of codes decode to 7.7 GB of float32 samples.
Each is estimated here from the input's size and the model config, and refused above a cap before
anything is allocated: one WorkTooLarge (a ValueError) saying the estimate, the cap and how to
raise it.

The cap: ``max_work_bytes=`` where an API takes it, else ``Q3TTS_MAX_WORK_BYTES`` (bytes, or with
a K/M/G/T suffix: "8G"), else DEFAULT_FRACTION of physical memory (or of the container's cgroup memory limit when lower).

The estimates count the live activations at each stage's widest (and the inputs' and outputs'
copies), plus constants for the allocator's and the libraries' working buffers; they were
calibrated against the real peak resident memory of the work on the tiny fixtures and the
released codec (``python -m q3tts.bench.work_memory --released``, reports/work-memory.json; one
thread; peak RSS above the RSS just before the call, VmHWM reset first). Estimate / measured in
the last run, and over every run where the peaks varied (ranges with the current constants):

- resample 44.1 -> 24 kHz, 60 / 240 / 600 s: 4.39 / 1.98 / 1.54 (the constant dominates short ones)
- encode_audio, 20 / 80 / 160 s: 1.21 / 1.05 / 1.24
- extract_speaker_embedding, 20 / 80 / 160 s: 3.15 / 1.75 / 1.52
- decode_codes, 2000 / 8000 / 20000 frames: 1.47 / 1.38 / 1.51; the peaks vary from run to run
  (2000 frames: 167 to 238 MiB over six runs), so over every run 1.15-1.64 / 1.38-1.53 / 1.32-1.51
- decode_codes with the released codec (its published config, random weights, 300 frames, where
  one 300-frame chunk's activations dominate): estimate 1.98 GiB, peak 1.54 GiB: 1.29 (1.27-1.35
  over four runs)

No estimate was below the measured peak; the estimates are within 1.05-1.65x of it once the
input is past the constants, so a refused request would have needed at least about the
estimate divided by those ratios.
"""

from __future__ import annotations

import math
import os
import re

MAX_WORK_BYTES_ENV = "Q3TTS_MAX_WORK_BYTES"
DEFAULT_FRACTION = 0.5  # of physical memory: the rest for the weights, the OS and other work
FALLBACK_CAP = 8 << 30  # when physical memory cannot be read
SLACK = 32 << 20  # the allocator's and the libraries' working buffers, whatever the input
CODEC_SLACK = 160 << 20  # the codec's per-chunk working buffers beyond its activations (measured)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class WorkTooLarge(ValueError):
    """The estimated memory of a piece of work is above the cap; nothing was allocated."""


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory(cgroup_limits=CGROUP_LIMITS) -> int | None:
    """The machine's memory, or the container's limit (cgroup v2 or v1) when that is lower."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    for path in cgroup_limits:
        try:
            text = open(path, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit() and (ram is None or int(text) < ram):
            ram = int(text)
    return ram


def parse_bytes(text: str, what: str = MAX_WORK_BYTES_ENV) -> int:
    """ "123", "512M", "8G", "1.5GiB" -> bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"{what}={text!r} is not a size in bytes (examples: 4000000000, 512M, 8G)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"{what}={text!r} must be a positive size")
    return value


def work_cap(max_work_bytes: int | str | None = None) -> int:
    """The cap in bytes: the argument, else the environment, else DEFAULT_FRACTION of RAM."""
    if max_work_bytes is not None:
        if isinstance(max_work_bytes, bool) or not isinstance(max_work_bytes, (int, str)):
            raise TypeError(f"max_work_bytes must be a number of bytes or a size string, got {max_work_bytes!r}")
        return parse_bytes(str(max_work_bytes), "max_work_bytes")
    raw = os.environ.get(MAX_WORK_BYTES_ENV)
    if raw:
        return parse_bytes(raw)
    ram = physical_memory()
    return int(ram * DEFAULT_FRACTION) if ram else FALLBACK_CAP


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_work(estimate: int, what: str, max_work_bytes: int | str | None = None) -> None:
    """Refuse ``what`` when ``estimate`` bytes is above the cap."""
    cap = work_cap(max_work_bytes)
    if estimate > cap:
        raise WorkTooLarge(
            f"{what}: needs about {human(estimate)} of memory (estimated before starting), above the "
            f"{human(cap)} cap; split the input, or raise the cap: {MAX_WORK_BYTES_ENV}="
            f"{math.ceil(estimate / (1 << 30))}G (or max_work_bytes= where the call takes it)"
        )


# --- estimates ------------------------------------------------------------------------------


def resample_bytes(n_in: int, sr: int, target_sr: int) -> int:
    """soxr's float32 output and the padded copy (4 bytes a sample each, and a quarter more for
    soxr's buffers); the input is already held."""
    n_out = math.ceil(n_in * target_sr / sr)
    return 10 * n_out + SLACK


def conv_stack_bytes(cfg, batch: int, samples: int) -> int:
    """The encoder's conv stack: the widest stage (channels x length), four of them live (a
    residual block's input, its two activations and its sum)."""
    width, length, widest = cfg.num_filters, samples, cfg.num_filters * samples
    for ratio in reversed(cfg.upsampling_ratios):
        length = -(-length // ratio)
        width *= 2
        widest = max(widest, width * length)
    return 4 * 4 * batch * widest


def encode_bytes(cfg, batch: int, samples: int) -> int:
    """The speech-tokenizer encoder on ``batch`` items padded to ``samples`` (its
    SpeechEncoderConfig): conv stack, full causal attention over the 25 Hz frames (the boolean
    mask, its float copy and two score tensors per head), the MLP, and the nearest-code search
    (distances to every codebook row)."""
    frames = -(-samples // math.prod(cfg.upsampling_ratios))
    attention = batch * frames * frames * (1 + 4 + 2 * 4 * cfg.num_attention_heads)
    mlp = 4 * 4 * batch * frames * (cfg.hidden_size + cfg.intermediate_size)
    codes = 3 * 4 * batch * frames * cfg.codebook_size
    return 2 * 4 * batch * samples + conv_stack_bytes(cfg, batch, samples) + attention + mlp + codes + SLACK


def speaker_bytes(cfg, samples: int, n_fft: int = 1024, hop: int = 256) -> int:
    """The speaker encoder on one waveform (its SpeakerEncoderConfig): the STFT (complex64), its
    magnitude and mel, then the ECAPA blocks, whose widest activations are the concatenations
    (the multi-layer aggregate and the attentive pooling's [x, mean, std] context)."""
    frames = samples // hop + 1
    stft = frames * (n_fft // 2 + 1) * (8 + 4 + 4)
    widest = max(sum(cfg.enc_channels[1:-1]), 3 * cfg.enc_channels[-1])
    return 4 * samples * 2 + stft + 4 * 4 * frames * widest + SLACK


def decode_bytes(cfg, batch: int, frames: int, chunk: int = 300, context: int = 25) -> int:
    """Decoding ``batch`` items of ``frames`` codes with the codec (its CodecConfig): the padded
    codes (int64, clamped and transposed copies), the samples (the chunks, their concatenation
    and the float32 copy returned), and one chunk's activations at the codec's widest stage,
    four of them live."""
    window = min(frames, chunk) + context
    length, width = window * math.prod(cfg.upsampling_ratios), cfg.decoder_dim
    widest = max(cfg.latent_dim, cfg.hidden_size, cfg.intermediate_size) * window
    for rate in cfg.upsample_rates:
        length *= rate
        width //= 2
        widest = max(widest, 2 * width * length)  # a block's transposed conv sees 2x its output width
    samples = batch * frames * cfg.decode_upsample_rate
    return 3 * 8 * batch * frames * cfg.num_quantizers + 3 * 4 * samples + 4 * 4 * batch * widest + SLACK + CODEC_SLACK
