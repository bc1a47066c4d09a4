"""What every case suite shares: the result of one case, and upstream's outputs cached across
suites (they do not depend on the standalone side, so the streaming, ICL and fault runs reuse them)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class CaseResult:
    case: str
    component: str
    kind: str  # forward | generation | audio
    dtype: str
    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    first_bad_layer: str | None = None
    first_diff_layer: str | None = None
    note: str = ""
    # The standalone side raised instead of returning (type: message): the case failed by
    # crashing, which a self-test does not count as catching a fault.
    error: str = ""
    seconds_upstream: float = 0.0
    seconds_standalone: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Upstream's outputs by (model, case, mode, seed, frames) or another key naming the inputs.
UPSTREAM_CACHE: dict = {}


def audio_codes(wrapper, frames: int, seed: int) -> torch.Tensor:
    """The random codes [frames, G] of an audio case (the streaming crossing case reuses them),
    shaped by upstream's configs (never the model under test's)."""
    groups = wrapper.model.config.talker_config.num_code_groups
    vocab = wrapper.model.speech_tokenizer.model.config.decoder_config.codebook_size
    return torch.randint(0, vocab, (frames, groups), generator=torch.Generator().manual_seed(seed + frames))


def upstream_audio(wrapper, codes: torch.Tensor, key) -> tuple[np.ndarray, float]:
    """(waveform, seconds) of upstream's decode of ``codes``, cached by ``key``."""
    if key not in UPSTREAM_CACHE:
        t0 = time.perf_counter()
        (ref,), _ = wrapper.model.speech_tokenizer.decode([{"audio_codes": codes}])
        UPSTREAM_CACHE[key] = (ref, time.perf_counter() - t0)
    return UPSTREAM_CACHE[key]


def raised_in_standalone(exc: BaseException) -> bool:
    """Whether the exception came out of the model under test (a frame in q3tts.standalone), as
    opposed to upstream or the verifier: the former is a failed case, the latter still stops the
    run (the gate tells upstream breakage from our own crash by it)."""
    import q3tts.standalone

    root = str(Path(q3tts.standalone.__file__).resolve().parent)
    tb = exc.__traceback__
    while tb is not None:
        if str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(root):
            return True
        tb = tb.tb_next
    return False
