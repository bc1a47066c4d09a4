"""The streaming self-test (verify/faults/streaming.py): its planted bugs patch and restore the
streaming module, it refuses to start from a run that is not clean, and a bug is caught only by a
case that passed clean."""

from __future__ import annotations

import pytest
import torch

import q3tts.standalone.streaming as streaming
from q3tts.verify.faults.streaming import FAULTS, case_kind, planted, run_pair


def test_each_planted_bug_is_undone():
    before = (streaming.tail_context_frames, streaming.UPSTREAM_CHUNK_FRAMES)
    for name in FAULTS:
        with planted(name):
            assert (streaming.tail_context_frames, streaming.UPSTREAM_CHUNK_FRAMES) != before, name
        assert (streaming.tail_context_frames, streaming.UPSTREAM_CHUNK_FRAMES) == before, name


def test_case_kinds():
    assert case_kind("streaming.exact_float64.codec_330_frames.8_3") == "exact"
    assert case_kind("streaming.codec_330_frames.8_3") == "crossing"
    assert case_kind("streaming.clone_icl.8_4.item1") == "chunked"


def test_a_run_that_is_not_clean_is_refused(load_models):
    from q3tts.verify.faults.catalogue import CleanRunError

    wrapper, model = load_models("voice_design", torch.float32)
    with planted("unsplit_300"), pytest.raises(CleanRunError, match="clean streaming cases fail"):
        run_pair(wrapper, model, "voice_design", torch.float32, "fp32", 24, 0)


def test_a_bug_is_caught_by_cases_that_passed_clean(load_models, monkeypatch):
    import q3tts.verify.faults.streaming as selftest

    monkeypatch.setattr(selftest, "FAULTS", {"unsplit_300": FAULTS["unsplit_300"]})
    wrapper, model = load_models("voice_design", torch.float32)
    run = run_pair(wrapper, model, "voice_design", torch.float32, "fp32", 24, 0)
    fault = run["faults"]["unsplit_300"]
    assert fault["caught"] and fault["expected"], fault
    assert fault["failing"] == [
        "streaming.codec_330_frames.8_3",
        "streaming.exact_float64.codec_330_frames.8_3",
    ], fault["failing"]
    assert fault["worst"]["exact"]["max_abs"] > 1e-2 > run["clean"]["exact"]["max_abs"]
