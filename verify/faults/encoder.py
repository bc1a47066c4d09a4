"""Encoder faults: deliberate bugs planted in the standalone speech-tokenizer encoder, to prove the
encoder parity cases catch them and name the stage where they live.

Each ``Fault`` (verify/faults/catalogue.py) is planted in the base fixture; ``layer`` lists the stage(s)
the localisation may name. ``run_encoder_fault`` runs the encoder cases under one fault.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator
from unittest import mock

import torch

import q3tts.standalone.audio as audio_mod
import q3tts.standalone.speech_encoder as enc_mod


@dataclass(frozen=True)
class EncoderFault:
    """A planted encoder bug: ``inject(model)`` is a context manager; ``layer`` is the stage the
    encoder parity must name. (The talker-side catalogue in faults.py patches named seams; these
    patch the encoder's own module attributes.)"""

    name: str
    description: str
    model_type: str
    component: str
    layer: str
    inject: Callable


@contextlib.contextmanager
def _patch_attr(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def downsample_zero_padding(m):
    """The downsample padded with zeros like the conv stack, instead of replicating the edge."""
    return _patch_attr(m.speech_encoder.downsample, "pad_mode", "constant")


def downsample_stride_one(m):
    conv = m.speech_encoder.downsample

    @contextlib.contextmanager
    def ctx():
        with (
            _patch_attr(conv, "stride", 1),
            _patch_attr(conv, "padding", conv.kernel_eff - 1),
            _patch_attr(conv.conv, "stride", (1,)),
        ):
            yield

    return ctx()


def quantizer_l1_distance(m):
    """Nearest codebook vector by L1 instead of Euclidean distance."""

    def nearest_code(x, book):
        return torch.cdist(x[None].float(), book[None].float(), p=1.0)[0].argmin(dim=-1)

    return mock.patch.object(enc_mod, "nearest_code", nearest_code)


def missing_attn_layer_scale(m):
    """Layer scale of the attention branch skipped in transformer layer 0."""

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp_scale * self.fc2(torch.nn.functional.gelu(self.fc1(self.mlp_norm(x))))

    return mock.patch.object(
        m.speech_encoder.transformer.layers[0], "forward", forward.__get__(m.speech_encoder.transformer.layers[0])
    )


def sliding_window_applied(m):
    """The config's 250-frame sliding window applied (upstream's SDPA path ignores it)."""

    def attention_mask(b, t, device):
        q = torch.arange(t, device=device)[:, None]
        k = torch.arange(t, device=device)[None, :]
        return ((k <= q) & (k > q - 250))[None, None].expand(b, 1, t, t)

    return mock.patch.object(enc_mod.EncoderTransformer, "attention_mask", staticmethod(attention_mask))


def resampler_very_high_quality(m):
    """soxr "VHQ" instead of librosa's default "soxr_hq" when resampling."""
    return mock.patch.object(audio_mod, "SOXR_QUALITY", "VHQ")


ENCODER_FAULTS: tuple[EncoderFault, ...] = (
    EncoderFault(
        "encoder_downsample_padding",
        "downsample padded with zeros instead of replicate",
        "base",
        "speech_encoder",
        "downsample",
        downsample_zero_padding,
    ),
    EncoderFault(
        "encoder_downsample_stride",
        "downsample stride 1 instead of 2",
        "base",
        "speech_encoder",
        "downsample",
        downsample_stride_one,
    ),
    EncoderFault(
        "encoder_l1_distance",
        "quantizer nearest neighbour by L1 instead of Euclidean distance",
        "base",
        "speech_encoder",
        "quantizer",
        quantizer_l1_distance,
    ),
    EncoderFault(
        "encoder_layer_scale",
        "attention layer scale skipped in encoder transformer layer 0",
        "base",
        "speech_encoder",
        "transformer.layers.0",
        missing_attn_layer_scale,
    ),
    EncoderFault(
        "encoder_sliding_window",
        "250-frame sliding window applied in the encoder transformer",
        "base",
        "speech_encoder",
        "transformer.layers.0",
        sliding_window_applied,
    ),
    EncoderFault(
        "encoder_resampler",
        "soxr VHQ instead of HQ resampling",
        "base",
        "speech_encoder",
        "front_end",
        resampler_very_high_quality,
    ),
)


@dataclass
class EncoderFaultResult:
    fault: str
    description: str
    detected: bool
    component_named: bool
    stage_named: bool
    failing_cases: list[str]
    reported_stages: list[str]
    crashed_cases: list[str] = field(default_factory=list)
    crash: str = ""

    @property
    def ok(self) -> bool:
        return self.detected and self.component_named and self.stage_named


def run_encoder_fault(
    fault: EncoderFault, wrapper, standalone, cases: tuple[str, ...] | None = None, clean: set[str] | None = None
) -> EncoderFaultResult:
    """Run the encoder parity cases with ``fault`` planted in ``standalone`` (fp32). ``clean``: the
    cases that passed without it; only their numeric failures catch the fault."""
    from q3tts.verify.cases.encoder import encoder_results
    from q3tts.verify.faults.catalogue import split_failures

    crash = ""
    try:
        with fault.inject(standalone):
            results = encoder_results(wrapper, standalone, torch.float32, cases)
    except Exception as e:  # crashed, not caught
        results, crash = [], f"{type(e).__name__}: {e}"
    failed, crashed = split_failures(results, clean)
    stages = sorted({r.first_bad_layer for r in failed if r.first_bad_layer})
    accepted = (fault.layer,) if isinstance(fault.layer, str) else tuple(fault.layer or ())
    return EncoderFaultResult(
        fault.name,
        fault.description,
        bool(failed),
        all(r.component == fault.component for r in failed) and bool(failed),
        bool(stages) and all(s in accepted for s in stages),
        [r.case for r in failed],
        stages,
        [r.case for r in crashed],
        crash,
    )
