"""The gate names a length difference (issue 31, finding 9): which side is which, the lengths in
samples and frames, the first differing frame, the known cause for qwen-tts 0.1.0 (frames whose
group-0 code is 0 dropped), and never "inf" in the report for a length mismatch. Synthetic
arrays: a standalone decode of 80 frames and upstream 0.1.0's cut of it."""

from __future__ import annotations

import numpy as np
import pytest

from q3tts.verify.gate.length import drops_zero_frames, first_differing_frame, length_note
from q3tts.verify.report.parity import metric_cell

PER = 1920


def _decode(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(frames * PER).astype(np.float32) * 0.1


def _codes(frames: int, zero_rows: list[int]) -> np.ndarray:
    codes = np.random.default_rng(1).integers(1, 2048, (frames, 16))
    codes[zero_rows, 0] = 0
    return codes


def test_the_0_1_0_cut_is_named_by_side_frames_and_cause():
    ours = _decode(80)
    codes = _codes(80, [3, 17, 22, 40, 41, 77])
    upstream = ours[: (80 - 6) * PER]  # 0.1.0 keeps (codes[:, 0] > 0).sum() frames
    note = length_note(ours, upstream, PER, 1e-4, codes=codes, release="0.1.0")
    assert note.startswith(
        "length differs: standalone 153600 samples (80 frames), upstream 142080 samples (74 frames): "
        "upstream is 6 frame(s) shorter; first differing frame 74 (the first 74 agree within 1.0e-04)"
    ), note
    assert "known cause in qwen-tts 0.1.0: the 6 frame(s) whose group-0 code is 0 were dropped" in note
    assert "inf" not in note


def test_without_a_known_release_the_zero_frames_are_still_counted():
    ours = _decode(10)
    note = length_note(ours, ours[: 8 * PER], PER, codes=_codes(10, [0, 5]), release="0.1.1")
    assert "the 2 frame(s) whose group-0 code is 0 are missing, as in qwen-tts 0.1.0 and earlier" in note
    assert "known cause" not in note


def test_a_count_that_does_not_match_names_no_cause():
    ours = _decode(10)
    note = length_note(ours, ours[: 8 * PER], PER, codes=_codes(10, [4]), release="0.1.0")
    assert note.endswith("(the first 8 agree within 0.0e+00)")


def test_the_0_0_5_trim_is_named():
    ours = _decode(5)
    upstream = ours[300:9345] + 0.5  # 9045 samples, shifted
    note = length_note(ours, upstream, PER, 1e-4, codes=_codes(5, []), release="0.0.5")
    assert (
        "standalone 9600 samples (5 frames), upstream 9045 samples (4.71 frames): upstream is 0.29 frame(s) shorter"
        in note
    )
    assert "first differing frame 0 (they differ before the cut)" in note
    assert note.endswith(
        "known cause in qwen-tts 0.0.5: its codec decoder trims kernel - stride samples at both ends "
        "of every upsampling block (only the right end since 0.1.0), so its waveform is shorter and shifted"
    )


def test_a_shorter_standalone_and_an_early_difference():
    up = _decode(12)
    ours = up[: 10 * PER].copy()
    ours[3 * PER + 5] += 1.0
    note = length_note(ours, up, PER, 1e-3)
    assert (
        "standalone 19200 samples (10 frames), upstream 23040 samples (12 frames): standalone is 2 frame(s) shorter"
        in note
    )
    assert "first differing frame 3 (they differ before the cut)" in note


def test_a_length_that_is_not_whole_frames():
    note = length_note(np.zeros(1000, np.float32), np.zeros(960, np.float32), PER)
    assert "standalone 1000 samples (0.52 frames), upstream 960 samples (0.50 frames)" in note


@pytest.mark.parametrize(
    "release, drops", [("0.0.2", True), ("0.1.0", True), ("0.1.1", False), ("0.2.0", False), (None, False)]
)
def test_which_releases_drop_zero_frames(release, drops):
    assert drops_zero_frames(release) is drops


def test_first_differing_frame_within_the_common_length():
    a = np.zeros(5 * PER)
    b = a.copy()
    b[2 * PER] = 1
    assert first_differing_frame(a, b, PER, 0.5) == 2 and first_differing_frame(a, a[: 3 * PER], PER, 0.0) == 3


def test_the_report_cell_of_a_length_mismatch_has_no_inf():
    metrics = {"max_abs": float("inf"), "snr_db": float("-inf"), "bound": 1e-4, "min_snr_db": 60.0, "rms": 0.1}
    cell = metric_cell(
        {"kind": "audio", "metrics": {**metrics, "samples_standalone": 153600, "samples_upstream": 142080}}
    )
    assert cell == "lengths differ: standalone 153600 vs upstream 142080 samples (no sample-wise comparison)"
    same = metric_cell(
        {
            "kind": "audio",
            "metrics": {**metrics, "max_abs": 0.0, "snr_db": 99.0, "samples_standalone": 5, "samples_upstream": 5},
        }
    )
    assert same.startswith("max abs 0.00e+00")


def test_the_audio_case_of_a_0_1_0_cell_carries_the_note(load_standalone, monkeypatch):
    """The suite's audio cases against an upstream that cuts like 0.1.0 (faked: the standalone's own
    decode cut at the frames whose group-0 code is not 0): the failing case's note is the line."""
    from types import SimpleNamespace

    import torch

    import q3tts.verify.cases.suite as suite

    m = load_standalone("base")
    codec_cfg = SimpleNamespace(codebook_size=4)  # small: random codes hold group-0 zeros
    wrapper = SimpleNamespace(
        model=SimpleNamespace(
            config=SimpleNamespace(talker_config=SimpleNamespace(num_code_groups=m.config.talker.num_code_groups)),
            speech_tokenizer=SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(decoder_config=codec_cfg))),
        )
    )

    def upstream_0_1_0(_wrapper, codes, _key):
        (full,), _ = m.decode_codes([codes])
        return full[: int((codes[:, 0] > 0).sum()) * PER], 0.0

    monkeypatch.setattr(suite, "upstream_audio", upstream_0_1_0)
    monkeypatch.setattr(suite, "upstream_release", lambda: "0.1.0")
    monkeypatch.setattr(suite, "AUDIO_FRAMES", (12,))
    (case,) = suite.audio_results(wrapper, m, torch.float32, 0, "fake-0.1.0")
    zeros = int((suite.audio_codes(wrapper, 12, 0)[:, 0] == 0).sum())
    assert zeros and not case.passed
    assert case.note.startswith(
        f"length differs: standalone {12 * PER} samples (12 frames), upstream {(12 - zeros) * PER}"
    )
    assert f"known cause in qwen-tts 0.1.0: the {zeros} frame(s) whose group-0 code is 0 were dropped" in case.note
    assert "inf" not in metric_cell({"kind": "audio", "metrics": case.metrics})


def test_a_streamed_length_mismatch_is_named_like_the_audio_cases_and_its_cell_has_no_inf(monkeypatch):
    """A stream against upstream 0.1.0's cut (the 0.1.0 gate cell's streaming rows read "max abs inf,
    SNR -inf dB" before): the note names the streamed and upstream lengths, the frames and the cause;
    the report cell says the lengths differ, with no inf."""
    import torch

    import q3tts.verify.cases.streaming as streaming

    monkeypatch.setattr(streaming, "upstream_release", lambda: "0.1.0")
    ours = _decode(8)
    codes = torch.from_numpy(_codes(8, [5]))
    m = streaming.audio_match(ours[: 7 * PER], [ours[: 4 * PER], ours[4 * PER :]], torch.float32, False, codes=codes)
    assert not m["passed"]
    assert m["note"].startswith("length differs: streamed 15360 samples (8 frames), upstream 13440 samples (7 frames)")
    assert "the 1 frame(s) whose group-0 code is 0 were dropped" in m["note"]
    metrics = {**m, "via": "replay", "chunk_frames": 4, "first_chunk_frames": 4, "codes_identical": True}
    cell = metric_cell({"kind": "streaming", "metrics": metrics})
    assert "inf" not in cell and "lengths differ: streamed 15360 vs upstream 13440 samples" in cell
