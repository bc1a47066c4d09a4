"""Saved whole graphs (standalone/precompiled.py): a later process start loads them instead of
tracing, and the key keeps a saved graph from ever standing in for other code or another module.

The engine-level checks live with the fast path: tests/test_fast_cache.py (a second process loads
every graph and runs its own checkpoint's weights), tests/test_fast_warmup.py (nothing is built
after the warm-up) and tests/test_fast_path.py (fp32 codes identical to upstream through them).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from q3tts.standalone import layers, precompiled
from q3tts.standalone.precompiled import PrecompiledGraph, input_spec, module_digest, runtime_digest

pytestmark = pytest.mark.slow_compile  # each test compiles a two-op graph (seconds)


class Scaled(nn.Module):
    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.proj = nn.Linear(8, 4)

    def forward(self, x, n):
        return self.proj(x[:, : n.shape[-1]]) * (1 + self.eps)


def _same(compiled, eager) -> bool:
    """Compiled against eager: inductor fuses the scale into the linear (last-bit differences)."""
    return torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def _inputs(length=6):
    x = torch.randn(2, 16, 8)
    n = torch.zeros(length)
    torch._dynamo.mark_dynamic(n, 0)
    return x, n


def test_saved_graph_loads_in_a_new_wrapper_and_serves_every_marked_length(tmp_path):
    module = Scaled().eval()
    first = PrecompiledGraph(module, {}, tmp_path)
    with torch.inference_mode():
        x, n = _inputs(6)
        assert _same(first(x, n), module(x, n))
        again = PrecompiledGraph(module, {}, tmp_path)  # as a new process would: nothing in memory
        for length in (6, 9, 13):  # one graph for every length of the dynamic dimension
            x, n = _inputs(length)
            assert _same(again(x, n), module(x, n))
    assert (first.compiles, first.loads) == (1, 0) and (again.compiles, again.loads) == (0, 1)
    assert len(list((tmp_path / "precompiled").glob("*.aot"))) == 1


def test_a_loaded_graph_reads_the_module_it_is_called_with(tmp_path):
    """Weights are inputs, not constants: other values of the same shapes are not a new graph."""
    a, b = Scaled().eval(), Scaled().eval()
    with torch.no_grad():
        b.proj.weight.mul_(-3.0)
    x, n = _inputs()
    with torch.inference_mode():
        PrecompiledGraph(a, {}, tmp_path)(x, n)
        graph = PrecompiledGraph(b, {}, tmp_path)
        out = graph(x, n)
    assert graph.loads == 1 and _same(out, b(x, n)) and not torch.allclose(out, a(x, n))


def test_key_follows_the_code_the_module_and_the_inputs():
    module = Scaled()
    x, n = _inputs()
    graph = PrecompiledGraph(module, {}, "unused")
    key = graph.key((x, n))
    before = runtime_digest()
    original = layers.rope_cos_sin
    layers.rope_cos_sin = lambda *a: None  # a planted fault rebinds a runtime function
    try:
        assert runtime_digest() != before and graph.key((x, n)) != key
    finally:
        layers.rope_cos_sin = original
    assert runtime_digest() == before and graph.key((x, n)) == key
    digest = module_digest(module)
    module.eps = 1e-5  # a plain attribute the trace bakes in
    assert module_digest(module) != digest and graph.key((x, n)) != key
    module.eps = 1e-6
    with torch.no_grad():
        module.proj.weight.add_(1.0)  # values are read at run time: the same graph
    assert module_digest(module) == digest and graph.key((x, n)) == key
    assert graph.key((x.to(torch.bfloat16), n)) != key  # dtype
    assert graph.key((x, torch.zeros(6))) != key  # the same length, but not marked dynamic
    assert input_spec((x, n)) == input_spec(_inputs(11))  # another length of the marked dimension


def test_a_torn_file_is_compiled_again_with_a_warning(tmp_path):
    module = Scaled().eval()
    x, n = _inputs()
    with torch.inference_mode():
        PrecompiledGraph(module, {}, tmp_path)(x, n)
        (path,) = (tmp_path / "precompiled").glob("*.aot")
        path.write_bytes(path.read_bytes()[:1000])
        graph = PrecompiledGraph(module, {}, tmp_path)
        with pytest.warns(UserWarning, match="did not load"):
            out = graph(x, n)
    assert (graph.compiles, graph.loads) == (1, 0) and _same(out, module(x, n))
    assert len(path.read_bytes()) > 1000  # saved whole again


def test_without_the_api_it_falls_back_to_torch_compile(tmp_path, monkeypatch):
    monkeypatch.setattr(precompiled, "_aot_api", lambda: None)
    module = Scaled().eval()
    x, n = _inputs()
    graph = PrecompiledGraph(module, {}, tmp_path)
    with torch.inference_mode(), pytest.warns(UserWarning, match="using torch.compile"):
        out = graph(x, n)
    assert graph._fallback is not None and _same(out, module(x, n))
    assert not (tmp_path / "precompiled").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode():
            graph(x, n)  # warned once


def test_runtime_digest_is_the_same_in_every_process():
    """String hashing differs per process (PYTHONHASHSEED): a set's repr order, a function's address
    in a repr, or a module one process imported and another did not must not move the key (each
    of these once made a second start compile again)."""
    import os
    import subprocess
    import sys

    code = "from q3tts.standalone.precompiled import runtime_digest; print(runtime_digest())"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and runtime_digest() in digests


def test_an_inference_tensor_is_another_kind_of_input(tmp_path):
    """The same values made inside and outside inference mode carry other dispatch keys, which the
    loaded graph's guards check: two keys, two saved graphs, each loaded again without a compile."""
    module = Scaled().eval()
    x, n = _inputs()
    with torch.inference_mode():
        xi = x.clone()
    assert input_spec((x, n)) != input_spec((xi, n))
    graph = PrecompiledGraph(module, {}, tmp_path)
    with torch.no_grad():
        for _ in range(2):
            graph(x, n)
            graph(xi, n)
    assert (graph.compiles, graph.loads) == (2, 0)
    again = PrecompiledGraph(module, {}, tmp_path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no "does not accept these inputs; compiling again"
        again(xi, n)
        again(x, n)
    assert (again.compiles, again.loads) == (0, 2)


def test_unused_files_are_pruned_and_a_load_keeps_its_file(tmp_path):
    """Each save removes saved graphs (and torn temporary files) untouched for PRUNE_AFTER_DAYS; a
    load renews its file's time, so a graph still in use survives however old its first save."""
    import os
    import time

    directory = tmp_path / "precompiled"
    module = Scaled().eval()
    x, n = _inputs()
    with torch.inference_mode():
        PrecompiledGraph(module, {}, tmp_path)(x, n)
    (in_use,) = directory.glob("*.aot")
    long_ago = time.time() - (precompiled.PRUNE_AFTER_DAYS + 1) * 86400
    stale, torn, recent, other = (directory / name for name in ("Old-1.aot", "Old-1.aot9x.tmp", "New-2.aot", "note"))
    for path in (stale, torn, recent, other):
        path.write_bytes(b"x")
    for path in (in_use, stale, torn, other):
        os.utime(path, (long_ago, long_ago))
    with torch.inference_mode():
        loaded = PrecompiledGraph(module, {}, tmp_path)
        loaded(x, n)  # loads in_use: its time renewed
        loaded(*_inputs_with_batch(3))  # a new kind of input: compiled and saved, which prunes
    assert loaded.loads == 1 and loaded.compiles == 1
    assert not stale.exists() and not torn.exists()
    assert in_use.exists() and recent.exists() and other.exists()
    assert precompiled.prune_unused(directory) == []  # nothing else is old


def _inputs_with_batch(batch):
    x = torch.randn(batch, 16, 8)
    n = torch.zeros(6)
    torch._dynamo.mark_dynamic(n, 0)
    return x, n
