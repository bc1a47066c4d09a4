"""After FastEngine.warm_up no generation compiles a graph: not at another prompt length, not when
the talker's window crosses several blocks, not when the caches grow, not when streaming.

Sharpness: ``torch._dynamo.config.error_on_recompile`` turns any recompile into an error, and the
number of graphs dynamo built is compared before and after. The control test removes the window's
``mark_dynamic`` (the one thing that lets one talker graph serve every window length) and shows
the same generation then does compile again.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from q3tts.standalone import Qwen3TTS, fast, generation

pytestmark = pytest.mark.slow_compile  # torch.compile of two tiny graphs per engine

WINDOW_BLOCK = 8


def _long_generation(model):
    """A prompt length other than the warm-up's, 29 frames: the window crosses four 8-position
    blocks and, with INITIAL_FRAMES patched to 3, the caches and buffers grow several times."""
    vocab = model.config.talker.vocab_size
    codes, _ = model.generate(
        input_ids=[torch.arange(1, 12)[None]],
        languages=["auto"],
        do_sample=False,
        subtalker_dosample=False,
        max_new_tokens=30,
        eos_token_id=vocab - 1,  # a suppressed id: never sampled, so exactly 29 frames
    )
    return codes[0]


def _stream(model):
    speaker = model.get_supported_speakers()[0]
    return list(model.stream_custom_voice("Hello there, streamed.", speaker=speaker, max_new_tokens=20))


def _warmed_up_model(checkpoints):
    """A fresh engine, warmed up for batch 1, with dynamo's earlier graphs dropped: graphs other
    tests compiled for the same forward() must not stand in for this engine's."""
    torch._dynamo.reset()
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    before = counters["stats"]["unique_graphs"]
    model.compile_fast(warm_up=(1,), window_block=WINDOW_BLOCK)
    # the talker step and the code predictor's frame: both compiled by the warm-up
    assert counters["stats"]["unique_graphs"] - before == 2 and len(model._fast._warm) == 2
    return model


def test_nothing_compiles_after_warm_up(checkpoints, monkeypatch):
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    model = _warmed_up_model(checkpoints)
    engine = model._fast
    graphs, compile_s = counters["stats"]["unique_graphs"], engine.compile_seconds
    with torch._dynamo.config.patch(error_on_recompile=True):
        codes = _long_generation(model)
        chunks = _stream(model)
        # other sampling knobs than the stream's: they reach the frame graph as data, not as constants
        model.generate(
            input_ids=[torch.arange(1, 12)[None]], languages=["auto"], temperature=1.3, top_k=5,
            subtalker_temperature=0.5, subtalker_top_k=3, subtalker_top_p=0.7, max_new_tokens=4,
        )  # fmt: skip
    assert codes.shape[0] == 29 and chunks
    assert counters["stats"]["unique_graphs"] == graphs
    assert engine.compile_seconds == compile_s  # no graph key was first seen after the warm-up


def test_control_without_dynamic_window_it_recompiles(checkpoints, monkeypatch):
    """The same check sees a real recompile: with the window's length static, the talker graph is
    specialised to the warm-up's window and the long generation needs new ones."""
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    monkeypatch.setattr(fast.torch._dynamo, "mark_dynamic", lambda *a, **k: None)
    model = _warmed_up_model(checkpoints)
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception, match="[Rr]ecompil"):
        _long_generation(model)


def test_warm_up_checks_batch_sizes(checkpoints):
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    with pytest.raises(ValueError, match="batch_sizes"):
        model.compile_fast(warm_up=(0,))


def test_recompile_limit_fails_loudly_instead_of_running_eagerly(checkpoints):
    """Every engine adds its graphs to the same forward(); past dynamo's recompile limit a new
    graph would silently run eagerly. With a limit of one graph per function, a warm-up for two
    batch sizes must raise the clear error at the second batch size's talker step. (FastEngine raises
    the limit to 64 when it is built, so the patch comes after.)"""
    torch._dynamo.reset()
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    engine = fast.FastEngine(model.talker, model.code_predictor, window_block=WINDOW_BLOCK)
    with torch._dynamo.config.patch(recompile_limit=1):
        with pytest.raises(RuntimeError, match=r"recompile limit \(1 graphs per function\)"):
            engine.warm_up((1, 2))
    assert engine._warm == {("talker", 1), ("cp_frame", 1)}  # batch 1 compiled: the limit was reached at 2
    torch._dynamo.reset()


def test_compiled_prefill_is_one_graph_for_every_prompt_length(checkpoints, monkeypatch):
    """compile_prefill=True: the warm-up compiles the prompt prefill as a third graph, and a
    generation at another prompt length (and growing caches) compiles nothing more."""
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    torch._dynamo.reset()
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    before = counters["stats"]["unique_graphs"]
    model.compile_fast(warm_up=(1,), window_block=WINDOW_BLOCK, compile_prefill=True)
    assert counters["stats"]["unique_graphs"] - before == 3 and ("talker_prefill", 1) in model._fast._warm
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        codes = _long_generation(model)
    assert counters["stats"]["unique_graphs"] == graphs
    exact = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    assert torch.equal(codes, _long_generation(exact))  # fp32 greedy: the exact path's codes
    torch._dynamo.reset()
