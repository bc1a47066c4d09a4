"""The compiled fast path (standalone/fast.py) against upstream, on the tiny fixtures.

One dtype (fp32) and few model types keep the compile cost small. The engines compile with the
fast path's own inductor options (COMPILE_OPTIONS); verify-parity --fast measures every model type and
dtype the same way.
"""

from __future__ import annotations

import pytest
import torch

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.fast import COMPILE_OPTIONS, FastEngine
from q3tts.verify.cases.fast import (
    FAST_MIN_AGREEMENT,
    run_fast_forward_cases,
    run_fast_parity,
    teacher_forced_frame,
)

pytestmark = pytest.mark.slow_compile  # torch.compile: tens of seconds per engine

TEST_OPTIONS = dict(COMPILE_OPTIONS)
DTYPE = torch.float32


@pytest.fixture(scope="module")
def engine_pair(load_models):
    wrapper, standalone = load_models("custom_voice", DTYPE)
    return wrapper, standalone, FastEngine(standalone.talker, standalone.code_predictor, options=TEST_OPTIONS)


def test_fast_parity_within_measured_tolerances(engine_pair):
    wrapper, standalone, engine = engine_pair
    report = run_fast_parity(
        wrapper,
        standalone,
        DTYPE,
        "fp32",
        engine=engine,
        max_new_tokens=12,
        case_names=("custom_voice.english", "batch.custom_voice"),
        modes=("greedy", "sampled"),
    )
    bad = [c for c in report["forward"] if not c["passed"]]
    assert not bad, f"fast forward cases over tolerance: {bad}"
    assert report["teacher_forced"], "no teacher-forced case ran"
    for a in report["teacher_forced"]:
        assert a["fraction"] >= FAST_MIN_AGREEMENT[DTYPE], a
    # fp32: codes must be identical (FAST_GENERATION_IDENTICAL), greedy and sampled alike.
    assert report["generation_judged"] and len(report["generation"]) == 4
    assert report["passed"], report["failing"]


# The tests on engine_pair's graphs come before the weight faults, whose dynamo reset drops them.
def test_fast_path_leaves_exact_path_and_weights_alone(engine_pair, load_models):
    """Running the engine writes only its caches: the exact path's generation is unchanged."""
    wrapper, standalone, engine = engine_pair
    before = {k: v.clone() for k, v in standalone.state_dict().items()}
    run_fast_forward_cases(wrapper.model, standalone, engine, DTYPE)
    assert all(torch.equal(before[k], v) for k, v in standalone.state_dict().items())
    assert getattr(standalone, "_fast", None) is None


def test_teacher_forced_frame_matches_exact_predictor_closely(engine_pair):
    """The compiled frame against the standalone's own eager teacher-forced logits."""
    _, standalone, engine = engine_pair
    cfg = standalone.config.talker
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, cfg.code_predictor.vocab_size, (2, cfg.num_code_groups), generator=g)
    hidden = torch.randn(2, cfg.transformer.hidden_size, generator=g)
    with torch.inference_mode():
        ref = standalone.code_predictor.teacher_forced_logits(hidden, codes, standalone.talker.codec_embedding)
        got = teacher_forced_frame(standalone, engine, hidden, codes)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_a_fault_that_only_raises_is_crashed_in_fast_mode_not_caught(engine_pair):
    """The sampler replaced by one that raises: the stepwise and generation checks fail because the
    standalone raised, which the fast self-test must report as a crash, never as a catch."""
    import dataclasses

    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.fast_selftest import run_fast_fault

    def raises(_original, _model):
        def replacement(*args, **kwargs):
            raise RuntimeError("planted crash")

        return replacement

    base = next(f for f in CATALOGUE if f.name == "temperature_after_filters")  # custom_voice, the sampler seam
    fault = dataclasses.replace(base, name="sampler_raises", make=raises)
    wrapper, standalone, engine = engine_pair
    # One case and one sampled mode reach both checks that call the sampler (stepwise, generation).
    r = run_fast_fault(
        fault, wrapper, standalone, DTYPE, "fp32", frames=2, options=TEST_OPTIONS, engine=engine,
        case_names=("custom_voice.english",), modes=("sampled",),
    )  # fmt: skip
    assert r.outcome == "crashed" and not r.detected, r
    assert r.failing and set(r.failing) == set(r.crashed), r
    assert all(c.startswith(("stepwise.", "generation.")) for c in r.crashed), r.crashed


# the sampler fault first: it runs on engine_pair's graphs, which the weight faults' dynamo reset drops
@pytest.mark.parametrize("fault_name", ["top_k_plus_one", "swapped_qk", "cp_rope_theta"])
def test_fast_self_test_catches_fault_through_compiled_graphs(fault_name, engine_pair):
    """A weight fault in the talker (a graph input), a code-predictor RoPE fault (cos/sin
    cached by the engine) and a sampler fault (invisible to the forward cases) each fail the fast
    checks; the clean model passes them (test above)."""
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.fast_selftest import run_fast_fault

    fault = next(f for f in CATALOGUE if f.name == fault_name)
    wrapper, standalone, clean_engine = engine_pair
    assert fault.model_type == "custom_voice"  # the model engine_pair compiled
    # Weight and RoPE faults show in the forward cases, which always run: one greedy case is enough
    # for them, on an engine compiled under the fault. The sampler fault lives outside the graphs,
    # so the clean engine serves it (as in the self-test), with every case and regime.
    if fault.component == "generation":
        narrow = dict(engine=clean_engine)
    else:
        narrow = dict(case_names=("custom_voice.english",), modes=("greedy",))
    r = run_fast_fault(fault, wrapper, standalone, DTYPE, "fp32", frames=8, options=TEST_OPTIONS, **narrow)
    assert r.detected, r
    # every failing check carries its numbers (the tolerance table reads the weakest catch from them)
    assert set(r.failing_metrics) == set(r.failing), (r.failing_metrics, r.failing)
    forward = [m for c, m in r.failing_metrics.items() if c.startswith("fast.")]
    assert all(m["over_bound"] > 1 for m in forward), forward
    if fault.component == "talker":
        assert any(c.startswith("fast.talker_step") for c in r.failing), r.failing
    if fault.component == "code_predictor":
        assert any(c.startswith("fast.code_predictor") for c in r.failing), r.failing
    if fault.component == "generation":
        # a sampler fault shows in decisions (teacher-forced or generated codes), never in the forwards
        assert not any(c.startswith("fast.") for c in r.failing), r.failing


def test_fast_path_caches_grow_like_the_exact_path(checkpoints, monkeypatch):
    """Buffers that start tiny and grow many times (INITIAL_FRAMES 3, 8-position attention blocks)
    give the same fast-path codes as one large buffer, and fp32 codes equal the exact path's."""
    from q3tts.standalone import generation

    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=DTYPE)
    ids = [torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]])]
    vocab = model.config.talker.vocab_size  # EOS moved to a suppressed id: exactly 29 frames
    kwargs = dict(
        input_ids=ids,
        languages=["auto"],
        do_sample=False,
        subtalker_dosample=False,
        max_new_tokens=30,
        eos_token_id=vocab - 1,
    )
    exact, _ = model.generate(**kwargs)
    model.compile_fast(options=TEST_OPTIONS, window_block=8)
    big, _ = model.generate(**kwargs)
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    small, _ = model.generate(**kwargs)
    assert exact[0].shape[0] == 29  # enough frames to cross several blocks and growths
    assert torch.equal(big[0], small[0])
    assert torch.equal(exact[0], big[0])


def test_fault_in_weights_is_caught_in_fast_mode(checkpoints, load_models):
    """A corrupted code-predictor layer must fail the fast forward cases: the engine compiled on
    the faulty model may not hide it."""
    wrapper, _ = load_models("custom_voice", DTYPE)
    faulty = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=DTYPE)
    with torch.no_grad():
        faulty.code_predictor.decoder.layers[0].attn.wo.weight.mul_(1.05)
    engine = FastEngine(faulty.talker, faulty.code_predictor, options=TEST_OPTIONS)
    results = run_fast_forward_cases(wrapper.model, faulty, engine, DTYPE)
    failed = {c.case for c in results if not c.passed}
    assert any(name.startswith("fast.code_predictor") for name in failed), results
    assert not any(name.startswith("fast.talker_step") for name in failed), failed


def test_compile_fast_switches_generate_and_checks_dtype(checkpoints):
    assert isinstance(Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], fast=True)._fast, FastEngine)
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=DTYPE).compile_fast(options=TEST_OPTIONS)
    ids = [torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]])]
    codes, _ = model.generate(
        input_ids=ids, languages=["auto"], do_sample=False, subtalker_dosample=False, max_new_tokens=4
    )
    assert model._fast.compile_seconds > 0  # the compiled graphs ran
    assert codes[0].shape[1] == model.config.talker.num_code_groups
    assert "_fast" not in dict(model.named_modules()) and not any("_fast" in k for k in model.state_dict())
    model.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="compile_fast"):
        model.generate(input_ids=ids, languages=["auto"], max_new_tokens=2)


def test_compiled_prefill_parity_and_faults_through_it(load_models):
    """compile_prefill=True: the prompt prefill's forward cases (all real positions) pass the fast
    tolerances and the greedy/sampled codes equal upstream's. top_p_boundary's free-running codes are
    reported, not judged (compare.EXACT_FIRST_DRAW_MODES), yet the top-p fault that regime exists for
    still fails it, through the stepwise check; a talker weight fault compiled into the prefill graph
    fails the prefill cases themselves, not only the step after them."""
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.fast_selftest import run_fast_fault

    wrapper, standalone = load_models("custom_voice", DTYPE)
    engine = FastEngine(standalone.talker, standalone.code_predictor, options=TEST_OPTIONS, compile_prefill=True)
    assert engine.compiles_prefill
    report = run_fast_parity(
        wrapper, standalone, DTYPE, "fp32", engine=engine, max_new_tokens=8,
        case_names=("custom_voice.english", "batch.custom_voice"), modes=("greedy", "sampled", "top_p_boundary"),
    )  # fmt: skip
    prefill = [c for c in report["forward"] if c["case"].startswith("fast.talker_prefill")]
    assert len(prefill) == 4 and all(c["passed"] for c in prefill), prefill
    assert report["passed"], report["failing"]
    assert report["generation_unjudged_modes"] == ["top_p_boundary"]
    judged = [g for g in report["generation"] if g["mode"] != "top_p_boundary"]
    assert len(judged) == 4 and all(g["identical"] for g in judged), judged
    boundary = [s for s in report["stepwise"] if s["mode"] == "top_p_boundary"]
    assert len(boundary) == 2 and all(s["passed"] and s["decisions_identical"] for s in boundary), boundary

    top_p = next(f for f in CATALOGUE if f.name == "top_p_strict")
    r = run_fast_fault(
        top_p, wrapper, standalone, DTYPE, "fp32", frames=8, options=TEST_OPTIONS, engine=engine,
        case_names=("custom_voice.english", "batch.custom_voice"), modes=("greedy", "top_p_boundary"),
    )  # fmt: skip
    assert r.detected, r
    assert any(c.startswith("stepwise.") and c.endswith(".top_p_boundary") for c in r.failing), r.failing
    assert not any(c.startswith("generation.") and c.endswith(".top_p_boundary") for c in r.failing), r.failing

    torch._dynamo.reset()
    fault = next(f for f in CATALOGUE if f.name == "swapped_qk")
    r = run_fast_fault(
        fault,
        wrapper,
        standalone,
        DTYPE,
        "fp32",
        frames=8,
        options=TEST_OPTIONS,
        engine_options={"compile_prefill": True},
        case_names=("custom_voice.english",),  # the prefill's forward cases run whatever the cases
        modes=("greedy",),
    )
    assert any(c.startswith("fast.talker_prefill") for c in r.failing), r.failing
