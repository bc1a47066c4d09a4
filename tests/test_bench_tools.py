"""The benchmark tools' own arithmetic and arguments (bench/generation.py,
bench/profile_frame.py): no timing here, only what the reports are computed from."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.reference  # the verify tools import the upstream-side fixtures


def _meta_model(size: str):
    from q3tts.standalone import Qwen3TTS, Qwen3TTSConfig
    from q3tts.verify.fixtures.released import released_config
    from q3tts.verify.fixtures.writer import tiny_config

    config = tiny_config("custom_voice") if size == "tiny" else released_config(size, "custom_voice")
    cfg = Qwen3TTSConfig.from_upstream(config)
    with torch.device("meta"):
        return Qwen3TTS(cfg), cfg


@pytest.mark.parametrize("size", ["tiny", "0.6B"])
def test_profile_parts_add_up_to_the_floor_bytes(size):
    """The profile's per-part weight bytes (read off the modules) and the benchmark's floor bytes
    (computed from the config) are two independent counts of what one frame streams."""
    from q3tts.bench.generation import bytes_read_per_frame
    from q3tts.bench.profile_frame import CP, weight_bytes_per_frame

    model, cfg = _meta_model(size)
    parts = weight_bytes_per_frame(model)
    # The floor counts the matrices only; the profile also reads the vectors (norm weights, the
    # predictor's input-projection bias).
    groups = cfg.talker.num_code_groups
    cp = model.code_predictor
    cp_modules = [cp.decoder] + ([cp.input_projection] if cp.input_projection is not None else [])
    norms = sum(p.numel() for p in model.talker.decoder.parameters() if p.dim() == 1) + (groups - 1) * sum(
        p.numel() for m in cp_modules for p in m.parameters() if p.dim() == 1
    )
    assert norms > 0
    assert sum(parts.values()) == bytes_read_per_frame(cfg, 4) + 4 * norms
    # the predictor graph reads its decoder (and input projection) and one head per residual group
    per_step = sum(p.numel() for m in cp_modules for p in m.parameters()) + cp.heads[0].numel()
    assert parts[CP] == (groups - 1) * per_step * 4


def test_timers_count_only_while_active():
    from q3tts.bench.profile_frame import Timers

    timers = Timers()
    f = timers.wrap("part", lambda x: x + 1)
    assert f(1) == 2 and not timers.calls
    timers.active = True
    assert f(2) == 3 and f(3) == 4
    assert timers.calls["part"] == 2 and timers.seconds["part"] > 0


@pytest.mark.parametrize(
    ("module", "argv", "name"),
    [
        ("generation", ["--rss-interval", "0"], "--rss-interval"),
        ("profile_frame", ["--fast-dtypes", "fp16"], "--fast-dtypes"),
        ("profile_frame", ["--frames", "1"], "--frames"),
        ("profile_frame", ["--fast-dtypes", "fp16+int8"], "--fast-dtypes"),
        ("profile_frame", ["--fast-dtypes", "bf16+int3"], "int4-g128"),  # a misspelt quant, before any model
        ("linear_m1", ["--repeats", "0"], "--repeats"),
        ("attention", ["--iters", "0"], "--iters"),
        ("attention", ["--modes", "bf16,fp16"], "--modes"),
        ("int8_dequant", ["--rows", "2"], "--rows"),
        ("int8_dequant", ["--size", "3B"], "--size"),
    ],
)
def test_bad_arguments_name_the_argument(module, argv, name, capsys):
    import importlib

    main = importlib.import_module(f"q3tts.bench.{module}").main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code not in (0, None)
    assert name in str(exc.value.code) + capsys.readouterr().err


PEAK_RSS_SCRIPT = """
import json
from q3tts.bench.generation import PeakRSS, _can_reset_peak_rss

if not _can_reset_peak_rss():
    print(json.dumps(None))
    raise SystemExit
PeakRSS.interval = 3600.0
size = 256 * 2**20
with PeakRSS() as rss:
    block = b"\\x01" * size  # written, so every page is touched
    del block
with PeakRSS() as quiet:
    pass
print(json.dumps(dict(method=rss.method, growth=rss.growth, quiet=quiet.growth,
                      process=PeakRSS.process_peak_so_far() >= rss.peak)))
"""


def test_peak_rss_sees_a_peak_between_samples():
    """The kernel's high-water mark catches a 256 MB allocation freed before the context ends,
    with the sampling interval set far longer than the whole context (a sampler would see only
    the RSS at entry and exit), and the process peak survives the per-context reset. In a fresh
    process: a test worker's own memory history (heaps, earlier peaks) made the mark miss it."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if seen is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    size = 256 * 2**20
    assert seen["method"] == "kernel high-water mark (VmHWM)"
    assert seen["growth"] >= 0.9 * size, seen
    assert seen["quiet"] < 0.1 * size, seen  # the mark was reset on entry
    assert seen["process"], seen


def test_each_engine_is_held_to_the_floor_of_its_own_weight_bytes():
    """A GGUF Q8_0 engine streams 34 bytes per 32 weights (heads and embeddings too), not fp32's 4:
    its floor once used fp32's bytes, and the report showed it 'reaching' 130% of the floor."""
    from q3tts.bench.generation import Q4_K_BYTES, Q8_0_BYTES, bytes_read_per_frame, floor_dtype

    _, cfg = _meta_model("0.6B")
    engines = ("exact", "fast bf16+int4", "qwentts.cpp F16", "qwentts.cpp Q8_0", "qwentts.cpp Q4_K_M")
    assert [floor_dtype(e) for e in engines] == ["fp32", "bf16+int4", "bf16", "q8_0", "q4_k_m"]
    q8 = bytes_read_per_frame(cfg, Q8_0_BYTES)
    assert bytes_read_per_frame(cfg, 2) / 2 < q8 < bytes_read_per_frame(cfg, 2)
    q4 = bytes_read_per_frame(cfg, Q4_K_BYTES)
    assert bytes_read_per_frame(cfg, 0.5) < q4 < q8 / 1.8


@pytest.mark.parametrize("exact", [True, False])
def test_without_the_exact_engine_its_fp32_tensors_are_freed(monkeypatch, exact):
    """--no-exact (1.7B beside qwentts.cpp F32 would not fit in 24 GiB otherwise): no exact row, the
    fp32 model no fast engine shares is gone before the timed runs (with the exact engine, the
    control, it is alive). No fast engine here: a compile would cost the suite seconds for nothing
    this checks (fast bf16 is a cast copy, fast fp32 keeps its own references to the tensors)."""
    import gc
    import weakref

    from q3tts.bench import generation
    from q3tts.verify.fixtures.writer import tiny_config

    fp32_weight, alive_at_warm_up = [], []
    real_build_pair, real_warm_up = generation.build_pair, generation._warm_up

    def watched_build_pair(config, seed=0):
        up, st, cfg = real_build_pair(config, seed)
        fp32_weight.append(weakref.ref(st.talker.codec_head.weight))
        return up, st, cfg

    def watched_warm_up(*args):
        gc.collect()
        alive_at_warm_up.append(fp32_weight[0]() is not None)
        return real_warm_up(*args)

    monkeypatch.setattr(generation, "build_pair", watched_build_pair)
    monkeypatch.setattr(generation, "_warm_up", watched_warm_up)
    config = tiny_config("custom_voice")
    out = generation.bench_model("tiny", config, 2, [1], 1, (), None, upstream=False, exact=exact)
    assert list(out["runs"][0]["engines"]) == ["exact"] * exact
    assert out["runs"][0]["exact_codes_identical"] is None
    assert alive_at_warm_up == [exact]
