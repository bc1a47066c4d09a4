"""The fast path's on-disk compile cache: a second process start reuses the compiled graphs, and a
cache hit never serves another checkpoint's weights.

The fast path's graphs read the weights as inputs, and its saved graphs (standalone/precompiled.py)
and torch 2.9.1's FX and AOTAutograd caches key a graph on the inputs' shapes and dtypes only (not
their values). If that ever changed (values
baked into the cached code, as inductor's ``freezing`` can do with small constants), a second process loading a *different* checkpoint of the same shapes would silently run the
first one's weights. So: a process loads the suite's checkpoint and compiles into a cache directory
(kept between runs), and a second process loads a checkpoint with different weights from that
cache; the second must hit the cache for every graph (else the check proves nothing) and still
match its own exact path, not the first model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow_compile  # two processes, each compiling (or loading) two graphs


def _fast_and_exact_logits(model, engine) -> dict[str, torch.Tensor]:
    """Talker step and code-predictor frame logits, fast and exact, on fixed random inputs."""
    from q3tts.standalone.layers import mrope_positions
    from q3tts.verify.cases.fast import teacher_forced_frame

    cfg = model.config.talker
    g = torch.Generator().manual_seed(11)
    prompt_len = 13  # crosses the 8-position window block (window 16 of a 24-position cache)
    x = torch.randn(1, prompt_len + 1, cfg.transformer.hidden_size, generator=g)
    positions = mrope_positions(torch.ones(1, prompt_len + 1, dtype=torch.long)).float()
    out = {}
    with torch.inference_mode():
        exact_prefill = lambda x, pos, mask, cache: model.talker.step(x, pos, mask, cache, 0)  # noqa: E731
        for name, prefill, step in (
            ("exact", exact_prefill, model.talker.step),
            ("fast", engine.talker_prefill, engine.talker_step),
        ):
            cache_len = engine.talker_cache_len(prompt_len + 1)
            cache = model.talker.decoder.new_cache(cfg.transformer, 1, cache_len, x.dtype, x.device)
            _, logits = prefill(x[:, :prompt_len], positions[..., :prompt_len], None, cache)
            out[f"prefill_{name}"] = logits.clone()
            _, logits = step(x[:, prompt_len:], positions[..., prompt_len:], None, cache, prompt_len)
            out[f"talker_{name}"] = logits.clone()
        codes = torch.randint(0, cfg.code_predictor.vocab_size, (2, cfg.num_code_groups), generator=g)
        hidden = torch.randn(2, cfg.transformer.hidden_size, generator=g)
        out["frame_exact"] = model.code_predictor.teacher_forced_logits(hidden, codes, model.talker.codec_embedding)
        out["frame_fast"] = teacher_forced_frame(model, engine, hidden, codes)
    return out


def _worker(checkpoint: str, out: str) -> None:
    """One process start: load, compile (or hit the cache), compute, save logits and cache counters."""
    from torch._dynamo.utils import counters

    from q3tts.standalone import Qwen3TTS

    torch.set_num_threads(1)
    model = Qwen3TTS.from_pretrained(checkpoint, dtype=torch.float32).compile_fast(window_block=8)
    result = _fast_and_exact_logits(model, model._fast)
    stats = {k: int(v) for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
    # Graphs saved whole (standalone/precompiled.py): a load skips inductor's FX cache altogether.
    graphs = (model._fast._talker_step, model._fast._cp_graph)
    stats["precompiled_load"] = sum(g.loads for g in graphs)
    stats["precompiled_compile"] = sum(g.compiles for g in graphs)
    torch.save(dict(logits=result, stats=stats, compile_seconds=model._fast.compile_seconds), out)


def _run(checkpoint: Path, cache: Path, out: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    env.pop("Q3TTS_COMPILE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, __file__, str(checkpoint), str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory, tensor_specs):
    """custom_voice with other weights than the suite's (same config, so the same graphs)."""
    from q3tts.convert import convert_checkpoint
    from q3tts.verify.fixtures.writer import write_upstream_checkpoint

    root = tmp_path_factory.mktemp("other-weights")
    up = write_upstream_checkpoint(root / "upstream", "custom_voice", seed=1234, tensor_specs=tensor_specs)
    convert_checkpoint(up, root / "standalone")
    return root / "standalone"


def _hits_every_graph(stats: dict) -> bool:
    """Both graphs (talker step, code-predictor frame) loaded as saved, nothing compiled."""
    return stats.get("precompiled_load", 0) >= 2 and stats.get("precompiled_compile", 0) == 0


def test_second_process_hits_the_cache_and_uses_its_own_weights(
    checkpoints, second_checkpoint, tmp_path, warm_compile_cache
):
    """The cache kept between test runs (warm_compile_cache) is only ever written by a process that
    loads the suite's checkpoint (``first`` below). The process under test loads the other weights
    from a copy of it, so its own misses never land there: every hit it reports is a graph the
    other weights compiled. From a warm environment the copy holds every graph and that one process
    start is the test; on a cold (or stale) cache the first process compiles them into the cache,
    and the second start is made again."""
    from q3tts.standalone import Qwen3TTS
    from q3tts.standalone.fast import FastEngine
    from q3tts.verify.compare import FAST_TOLERANCES, compare

    first_checkpoint = checkpoints["custom_voice"][1]

    def second_start(name: str) -> dict:
        cache = tmp_path / name
        shutil.copytree(warm_compile_cache, cache)
        return _run(second_checkpoint, cache, tmp_path / f"{name}.pt")

    second, first = second_start("second"), None
    if not _hits_every_graph(second["stats"]):
        first = _run(first_checkpoint, warm_compile_cache, tmp_path / "first.pt")
        stats = first["stats"]
        assert stats.get("precompiled_load", 0) + stats.get("precompiled_compile", 0) >= 2, stats  # every graph
        second = second_start("second-again")
    print(
        json.dumps(
            {
                "first": first and [first["stats"], first["compile_seconds"]],
                "second": [second["stats"], second["compile_seconds"]],
            }
        )
    )
    # Every graph of the second start was loaded as saved: the weights check below is about loads.
    assert _hits_every_graph(second["stats"]), second["stats"]
    # The first model's exact logits (the exact path compiles nothing: computed here).
    model = Qwen3TTS.from_pretrained(first_checkpoint, dtype=torch.float32)
    first_exact = _fast_and_exact_logits(model, FastEngine(model.talker, model.code_predictor, 8, compile=False))
    tol = FAST_TOLERANCES[torch.float32]
    for part in ("prefill", "talker", "frame"):
        a, b = first_exact, second["logits"]
        if first is not None:
            assert compare(
                f"{part} first", first["logits"][f"{part}_exact"], first["logits"][f"{part}_fast"], torch.float32, tol
            ).passed
        own = compare(f"{part} second", b[f"{part}_exact"], b[f"{part}_fast"], torch.float32, tol)
        assert own.passed, own
        # The two checkpoints really differ here, so matching the first model would have failed above.
        other = compare(f"{part} vs first", a[f"{part}_exact"], b[f"{part}_fast"], torch.float32, tol)
        assert not other.passed and other.max_rel > 1000 * own.max_rel, (other, own)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])


def test_two_models_in_one_process_keep_their_own_weights(checkpoints, second_checkpoint):
    """Dynamo may reuse a compiled graph for another engine whose inputs pass its guards; with
    frozen weights that would run the first model's weights. Each engine must see its own."""
    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.compare import FAST_TOLERANCES, compare

    tol = FAST_TOLERANCES[torch.float32]
    results = []
    for path in (checkpoints["custom_voice"][1], second_checkpoint):
        model = Qwen3TTS.from_pretrained(path, dtype=torch.float32).compile_fast(window_block=8)
        results.append(_fast_and_exact_logits(model, model._fast))
    a, b = results
    for part in ("prefill", "talker", "frame"):
        own = compare(part, b[f"{part}_exact"], b[f"{part}_fast"], torch.float32, tol)
        assert own.passed, own
        assert not compare(part, a[f"{part}_exact"], b[f"{part}_fast"], torch.float32, tol).passed


@pytest.mark.parametrize("source", ["argument", "env"])
def test_relative_cache_dir_is_made_absolute(source, tmp_path, monkeypatch):
    """Inductor builds its C++ in another working directory: a relative cache directory (as a user
    may pass on the command line) made every compile fail with "cc1plus: ... No such file"."""
    from q3tts.standalone.fast import CACHE_ENV, compile_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    if source == "env":
        monkeypatch.setenv(CACHE_ENV, "graphs")
    path = compile_cache_dir("graphs" if source == "argument" else None)
    assert path.is_absolute() and path == tmp_path / "graphs"
