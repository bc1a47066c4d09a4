"""After FastEngine.warm_up no generation compiles a graph: not at another prompt length, not when
the talker's window crosses several blocks, not when the caches grow, not when streaming.

Sharpness: every graph an engine builds is a saved graph compiled or loaded for a new kind of
input (standalone/precompiled.py), counted before and after; ``torch._dynamo.config.error_on_recompile``
also turns any dynamo recompile into an error. The control test removes the window's
``mark_dynamic`` (the one thing that lets one talker graph serve every window length) and shows
the same generation then does build new graphs.
"""

from __future__ import annotations

import pytest
import torch

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


def _graphs(engine) -> int:
    """Graphs the engine has built: saved graphs compiled or loaded, one per kind of input."""
    parts = (engine._talker_step, engine._cp_graph, engine._talker_prefill)
    return sum(g.compiles + g.loads for g in parts if isinstance(g, fast.PrecompiledGraph))


def _warmed_up_model(checkpoints):
    """A fresh engine, warmed up for batch 1, with dynamo's earlier graphs dropped: graphs other
    tests compiled for the same forward() must not stand in for this engine's."""
    torch._dynamo.reset()
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    model.compile_fast(warm_up=(1,), window_block=WINDOW_BLOCK)
    # the talker step and the code predictor's frame: both built by the warm-up
    assert _graphs(model._fast) == 2 and len(model._fast._warm) == 2
    return model


def test_nothing_compiles_after_warm_up(checkpoints, monkeypatch):
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    model = _warmed_up_model(checkpoints)
    engine = model._fast
    graphs, compile_s = _graphs(engine), engine.compile_seconds
    with torch._dynamo.config.patch(error_on_recompile=True):
        codes = _long_generation(model)
        chunks = _stream(model)
        # other sampling knobs than the stream's: they reach the frame graph as data, not as constants
        model.generate(
            input_ids=[torch.arange(1, 12)[None]], languages=["auto"], temperature=1.3, top_k=5,
            subtalker_temperature=0.5, subtalker_top_k=3, subtalker_top_p=0.7, max_new_tokens=4,
        )  # fmt: skip
    assert codes.shape[0] == 29 and chunks
    assert _graphs(engine) == graphs
    assert engine.compile_seconds == compile_s  # no graph key was first seen after the warm-up


def test_control_without_dynamic_window_it_recompiles(checkpoints, monkeypatch):
    """The same check sees a real recompile: with the window's length static, the talker graph is
    specialised to the warm-up's window and the long generation needs new ones."""
    monkeypatch.setattr(generation, "INITIAL_FRAMES", 3)
    monkeypatch.setattr(fast.torch._dynamo, "mark_dynamic", lambda *a, **k: None)
    model = _warmed_up_model(checkpoints)
    graphs = _graphs(model._fast)
    _long_generation(model)
    assert _graphs(model._fast) > graphs


def test_warm_up_checks_batch_sizes(checkpoints):
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    with pytest.raises(ValueError, match="batch_sizes"):
        model.compile_fast(warm_up=(0,))


def test_recompile_limit_fails_loudly_instead_of_running_eagerly(checkpoints):
    """Every engine adds its graphs to the same forward(); past dynamo's recompile limit a new
    graph would silently run eagerly. With a limit of one graph per function, a warm-up for two
    batch sizes must raise the clear error at the second batch size's talker step. (FastEngine raises
    the limit to 64 when it is built, so the patch comes after.) Plain torch.compile (precompile=False):
    saved graphs are not dynamo's cache entries and have no such limit."""
    torch._dynamo.reset()
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    engine = fast.FastEngine(model.talker, model.code_predictor, window_block=WINDOW_BLOCK, precompile=False)
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
    model.compile_fast(warm_up=(1,), window_block=WINDOW_BLOCK, compile_prefill=True)
    assert _graphs(model._fast) == 3 and ("talker_prefill", 1) in model._fast._warm
    graphs = _graphs(model._fast)
    with torch._dynamo.config.patch(error_on_recompile=True):
        codes = _long_generation(model)
    assert _graphs(model._fast) == graphs
    exact = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=torch.float32)
    assert torch.equal(codes, _long_generation(exact))  # fp32 greedy: the exact path's codes
    torch._dynamo.reset()
