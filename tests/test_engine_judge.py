"""The rules verify-parity --engine qwentts.cpp judges a run by (verify/engines/judge.py), on the
standalone side alone: teacher forcing reproduces the loop, a divergence at F32 fails unless it is a
proven near-tie, the floors below F32, and "not checked" is never a pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3tts.verify.engines import judge
from q3tts.verify.engines.forcing import ForcedLogits, check_code_range, disagreements, forced_logits
from q3tts.verify.engines.report import run_verdict


def _forced(frames: int = 3, groups: int = 4, vocab: int = 8, cp_vocab: int = 5) -> tuple[ForcedLogits, np.ndarray]:
    """Logits whose argmax is code 1 everywhere, with a margin of 1.0 over code 2; codes all 1."""
    g0 = torch.zeros(frames, vocab)
    g0[:, 1], g0[:, 2] = 3.0, 2.0
    res = torch.zeros(frames, groups - 1, cp_vocab)
    res[..., 1], res[..., 2] = 3.0, 2.0
    return ForcedLogits(g0, res, eos=7), np.ones((frames, groups), np.int64)


def _codes_verdict(forced, codes, quant: str, distance: float | None):
    tf = judge.teacher_forced(forced, codes, quant, distance)
    problems, notes = [], []
    judge.judge_codes(tf, quant, problems, notes)
    return tf, problems, notes


def test_f32_divergence_fails_unless_the_margin_is_a_proven_near_tie():
    forced, codes = _forced()
    tf, problems, _ = _codes_verdict(forced, codes, "F32", 1e-6)
    assert tf["agreeing"] == tf["positions"] == 3 + 3 * 3 and not problems
    codes[1, 2] = 2  # the engine picked the runner-up, 1.0 below the top
    tf, problems, notes = _codes_verdict(forced, codes, "F32", 0.5)  # bound 2 x 0.5 = 1.0 >= margin 1.0
    assert not problems and "near-tie at frame 1, code-predictor group 2" in notes[0]
    _, problems, _ = _codes_verdict(forced, codes, "F32", 0.49)
    assert "first at frame 1, code-predictor group 2 (engine 2, standalone 1, logit margin 1" in problems[0]
    _, problems, _ = _codes_verdict(forced, codes, "F32", None)  # no measured distance: nothing is proven
    assert "no measured logit distance" in problems[0]


def test_a_code_the_loop_forbids_is_never_a_near_tie():
    forced, codes = _forced()
    forced.group0[0, 5] = -float("inf")  # suppressed, as the loop masks special ids
    codes[0, 0] = 5
    tf, problems, _ = _codes_verdict(forced, codes, "F32", 1e3)
    assert tf["disagreements"][0]["margin"] == float("inf") and "talker group 0" in problems[0]


def test_below_f32_the_floors_judge_overall_and_worst_group_agreement():
    forced, codes = _forced(frames=4, groups=16, cp_vocab=5)
    codes[0, 9] = 0  # one disagreement: 63/64 overall, group 9 at 3/4
    _, problems, notes = _codes_verdict(forced, codes, "Q8_0", None)
    assert not problems and "63 of 64" in notes[0]
    codes[:, 4] = 0  # a whole group wrong, as with a swapped head: 59/64 = 0.92 overall
    _, problems, _ = _codes_verdict(forced, codes, "Q8_0", None)
    assert len(problems) == 1 and "code-predictor group 4 (0.000 of 4 frames)" in problems[0]
    codes[:, 5] = 0  # two: 55/64 = 0.86 < 0.9
    _, problems, _ = _codes_verdict(forced, codes, "BF16", None)
    assert "< floor 0.9" in problems[0] and "code-predictor group 5 (0.000" in problems[1]


def test_engine_eos_decision_is_judged():
    forced, codes = _forced(frames=2)
    forced = ForcedLogits(torch.cat([forced.group0, forced.group0[:1]]), forced.residual, eos=7)
    n, diffs = disagreements(forced, codes)  # the engine stopped after 2 frames: it chose EOS (7) at frame 2
    assert n == 3 + 2 * 3 and [(d.frame, d.group, d.engine, d.standalone) for d in diffs] == [(2, 0, 7, 1)]


def test_code_outside_the_codebook_is_named(load_standalone):
    model = load_standalone("custom_voice")
    g = model.config.talker.num_code_groups
    codes = np.zeros((2, g), np.int64)
    assert check_code_range(model, codes) is None
    codes[1, g - 1] = model.config.talker.code_predictor.vocab_size
    assert f"frame 1, group {g - 1}" in check_code_range(model, codes)
    assert "expected [frames" in check_code_range(model, codes[:, :2])


@pytest.mark.parametrize("model_type", ["custom_voice", "voice_design"])
def test_teacher_forcing_reproduces_the_standalone_greedy_loop(load_standalone, model_type):
    """Fed its own greedy codes, the standalone picks every one of them again (forced_logits
    mirrors generation.iter_frames); one code changed is the one disagreement found."""
    from q3tts.verify.engines.gguf import run_standalone, standalone_prefill

    model = load_standalone(model_type)
    request = dict(text="Hello world, this is a test.", speaker="alice" if model_type == "custom_voice" else None)
    request["instruct"] = "calm" if model_type == "voice_design" else None
    codes = run_standalone(model, **request, max_new_tokens=8)["codes"]
    prompt = standalone_prefill(model, **request)["prompt"]
    # Upstream stops at max_new_tokens - 1 frames; as the cap, not an EOS decision, it is not judged.
    cap = len(codes) if len(codes) == 7 else 8
    forced = forced_logits(model, prompt, codes, max_new_tokens=cap)
    n, diffs = disagreements(forced, codes)
    assert len(codes) and n == forced.group0.shape[0] + codes.size - len(codes) and diffs == []
    changed, last = codes.copy(), codes.shape[1] - 1  # the frame's last group: nothing after it sees it
    changed[-1, last] = (changed[-1, last] + 1) % model.config.talker.code_predictor.vocab_size
    _, diffs = disagreements(forced_logits(model, prompt, changed, max_new_tokens=cap), changed)
    assert [(d.frame, d.group) for d in diffs] == [(len(codes) - 1, last)]


def _report(**over):
    stages = judge.compare_stages(
        {"prompt-ids": [1, 2], "spk-emb": torch.ones(4)},
        {"prompt-ids": np.array([1, 2], np.float32), "spk-emb": np.ones(4, np.float32)},
        judge.expected_stages("Q8_0", True, True),
    )
    forced, codes = _forced()
    report = {
        "quant": "Q8_0",
        "prompt_ids": {"identical": True},
        "audit": {"ok": True, "problems": []},
        "stages": stages,
        "teacher_forced": judge.teacher_forced(forced, codes, "Q8_0", None),
        "codes": {"first_divergence": None, "frames_engine": 3},
        "audio_from_engine_codes": {"length_engine": 5760, "length_ref": 5760, "snr_db": 20.0, "log_mel_l1": 0.09},
    }
    report.update(over)
    return report


def test_engine_error_missing_audio_and_missing_dumps_never_pass():
    problems, _, unchecked = judge.classify(_report())
    assert problems == [] and unchecked == []
    problems, _, _ = judge.classify(_report(engine_error="synthesize: forced"))
    assert problems == ["engine error: synthesize: forced"]
    problems, _, _ = judge.classify(_report(audio_from_engine_codes={"samples": 0, "length_engine": 0}))
    assert problems == ["the engine returned no audio for its 3 frames"]
    stages = judge.compare_stages({"prompt-ids": [1, 2]}, {}, judge.expected_stages("F32", True, True))
    assert "talker-hidden-prefill-l0" in stages["not_checked"] and "spk-emb" in stages["not_checked"]
    problems, _, unchecked = judge.classify(_report(stages=stages, audit=None))
    assert problems == [] and any("spk-emb: not dumped by the engine" in m for m in unchecked)
    assert any("static audit" in m for m in unchecked)
    _, _, unchecked = judge.classify(_report(quant="Q4_K"))  # a quantisation without measured bounds
    assert unchecked == ["codes and audio: no measured bounds for Q4_K (known: F32, F16, BF16, Q8_0)"]
    runs = [{"problems": [], "not_checked": unchecked}]
    assert run_verdict(runs) == "INCOMPLETE" and run_verdict([{"problems": [], "not_checked": []}]) == "PASS"
    assert run_verdict([]) == "INCOMPLETE" and run_verdict(runs + [{"problems": ["x"], "not_checked": []}]) == "FAIL"


def test_stage_beyond_its_bound_fails_and_names_the_stage():
    stages = judge.compare_stages(
        {"prompt-ids": [1], "spk-emb": torch.tensor([1.0, -2.0])},
        {"prompt-ids": np.array([1.0]), "spk-emb": np.array([1.0, -2.1], np.float32)},
        judge.expected_stages("BF16", True, False),
    )
    problems, _, _ = judge.classify(_report(stages=stages))
    assert stages["first_bad"] == "spk-emb" and problems == ["stage spk-emb: rel max abs 0.05 > 0.008"]
