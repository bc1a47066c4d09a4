"""What a decoded-length difference between the standalone and upstream means, in one line.

A waveform of another length cannot be compared sample by sample, so its max abs and SNR say
nothing (they used to read "inf" and "-inf", like an overflow). The line instead names which side
is which, the lengths in samples and frames, how many frames one side lacks, the first frame that
differs, and the known cause when the upstream release is known to have it:

- qwen-tts 0.1.0 and earlier cut the decoded waveform at ``(codes[:, 0] > 0).sum()`` frames, so
  every frame whose group-0 code is 0 (a legitimate code) is taken for padding and dropped
  (0.1.1 counts ``> -1``; docs/gate-matrix-notes.md). On random codes the cut lands where the
  waveform ends early: upstream is shorter by exactly the number of such frames.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

import numpy as np

SAMPLES_PER_FRAME = 1920  # the 12 Hz speech tokenizer at 24 kHz (every release; CodecConfig.decode_upsample_rate)
# The releases whose decode drops the frames whose group-0 code is 0 (fixed in 0.1.1).
DROPS_ZERO_FRAMES_UNTIL = (0, 1, 0)
ZERO_FRAMES_CAUSE = (
    "qwen-tts 0.1.0 and earlier count a frame whose group-0 code is 0 as padding and cut it from the waveform "
    "(fixed in 0.1.1)"
)


# The releases whose codec decoder trims kernel - stride samples at both ends of every upsampling
# block (only the right end since 0.1.0): shorter and shifted audio (docs/gate-matrix-notes.md).
TRIMS_BOTH_ENDS_UNTIL = (0, 0, 5)
TRIM_CAUSE = (
    "its codec decoder trims kernel - stride samples at both ends of every upsampling block (only the right "
    "end since 0.1.0), so its waveform is shorter and shifted"
)


def upstream_release() -> str | None:
    """The installed qwen-tts release (the gate installs the one under test), None if absent."""
    try:
        return version("qwen-tts")
    except PackageNotFoundError:
        return None


def _release_at_most(release: str | None, last: tuple[int, ...]) -> bool:
    if not release:
        return False
    return tuple(int(x) for x in re.findall(r"\d+", release.split("+")[0])[:3]) <= last


def drops_zero_frames(release: str | None) -> bool:
    """Whether ``release`` of qwen-tts has the group-0-code-0 cut."""
    return _release_at_most(release, DROPS_ZERO_FRAMES_UNTIL)


def _frames(samples: int, per_frame: int) -> str:
    return str(samples // per_frame) if samples % per_frame == 0 else f"{samples / per_frame:.2f}"


def first_differing_frame(standalone: np.ndarray, upstream: np.ndarray, per_frame: int, bound: float) -> int:
    """The first frame whose samples differ by more than ``bound`` over the common length, else
    the first frame past the shorter side (where one waveform has samples and the other none)."""
    n = min(len(standalone), len(upstream))
    diff = np.abs(standalone[:n].astype(np.float64) - upstream[:n].astype(np.float64)) > bound
    bad = np.flatnonzero(diff)
    return int(bad[0] // per_frame) if bad.size else n // per_frame


def length_note(
    standalone: np.ndarray,
    upstream: np.ndarray,
    per_frame: int,
    bound: float = 0.0,
    codes=None,
    release: str | None = None,
    ours: str = "standalone",
) -> str:
    """One line on a length difference (see the module docstring). ``codes``: the [frames, G]
    codes both sides decoded, to count the frames whose group-0 code is 0; ``release``: the
    upstream release under test; ``ours``: what the line calls our side ("streamed" for a stream)."""
    n_st, n_up = len(standalone), len(upstream)
    missing = abs(n_st - n_up)
    shorter = "upstream" if n_up < n_st else ours
    first = first_differing_frame(standalone, upstream, per_frame, bound)
    agree = min(n_st, n_up) // per_frame
    prefix = f"the first {agree} agree within {bound:.1e}" if first == agree else "they differ before the cut"
    line = (
        f"length differs: {ours} {n_st} samples ({_frames(n_st, per_frame)} frames), upstream {n_up} samples "
        f"({_frames(n_up, per_frame)} frames): {shorter} is {_frames(missing, per_frame)} frame(s) shorter; "
        f"first differing frame {first} ({prefix})"
    )
    if _release_at_most(release, TRIMS_BOTH_ENDS_UNTIL) and shorter == "upstream":
        return f"{line}; known cause in qwen-tts {release}: {TRIM_CAUSE}"
    if codes is None or shorter != "upstream":
        return line
    zeros = int((np.asarray(codes)[:, 0] == 0).sum())
    if zeros * per_frame != missing:
        return line
    if drops_zero_frames(release):
        return f"{line}; known cause in qwen-tts {release}: the {zeros} frame(s) whose group-0 code is 0 were dropped ({ZERO_FRAMES_CAUSE})"
    return f"{line}; the {zeros} frame(s) whose group-0 code is 0 are missing, as in {ZERO_FRAMES_CAUSE}"
