"""Weight-only quantized fast modes (standalone/quant.py) on the tiny fixtures: the quantizers, the
loader option, and the fidelity check of verify-parity --fast --quant (verify/cases/fast.py with
compare.fast_bounds), which must pass clean and fail on a planted quantization bug.

The fidelity tests run the engine's graphs uncompiled (FastEngine(compile=False): the same modules
and kernels, seconds instead of a compile); one test compiles the int8 engine.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.fast import FastEngine
from q3tts.standalone.quant import (
    QUANT_NAMES,
    WeightOnlyLinear,
    dequantize_int8,
    fit_int4,
    int8_group,
    parse_quant,
    quantize_int4,
    quantize_int8,
)
from q3tts.verify.cases.fast import run_fast_parity
from q3tts.verify.cli import main as verify_cli
from q3tts.verify.compare import FAST_TOLERANCES, fast_bounds

FP32 = torch.float32
CASE = ("custom_voice.english",)


def _weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / k**0.5


def test_int8_is_symmetric_per_group_of_32_and_rounds_to_nearest():
    w = _weight(48, 96)
    codes, scales = quantize_int8(w, group_size=32)
    assert codes.dtype == torch.int8 and scales.shape == (48, 3) and scales.dtype == FP32
    grouped = codes.view(48, 3, 32)
    assert int(grouped.abs().amax(dim=-1).min()) == 127  # each group's largest weight maps to +-127
    scale = scales.repeat_interleave(32, dim=1)
    err = (codes.float() * scale - w).abs()
    assert bool((err <= scale / 2 + 1e-7).all())
    torch.testing.assert_close(dequantize_int8(codes, scales), codes.float() * scale, rtol=0, atol=0)
    # against one scale per row, groups of 32 (Q8_0's) halve the weight error
    per_row_codes, per_row = quantize_int8(w, group_size=96)
    assert per_row.shape == (48, 1)
    assert float(err.pow(2).mean()) < 0.7 * float((dequantize_int8(per_row_codes, per_row) - w).pow(2).mean())


def test_int4_is_asymmetric_per_group_and_rounds_to_nearest():
    """Each code is the nearest of 0..15 under its group's stored scale and zero (values beyond a
    fitted range clip to the end codes)."""
    w = _weight(32, 128)
    codes, sz = quantize_int4(w, 32, FP32)
    assert sz.shape == (4, 32, 2) and int(codes.min()) == 0 and int(codes.max()) == 15
    scale, zero = sz[..., 0].T.repeat_interleave(32, 1), sz[..., 1].T.repeat_interleave(32, 1)
    nearest = (torch.round((w - zero) / scale) + 8).clamp(0, 15)
    assert torch.equal(codes.float(), nearest)
    err = ((codes.float() - 8) * scale + zero - w).abs()
    inside = (nearest > 0) & (nearest < 15)
    assert bool((err[inside] <= scale[inside] / 2 + 1e-6).all())


def test_int4_fit_beats_min_max_and_q4_k():
    """The fitted scale and zero per group (fit_int4) against min-max on a N(0, 0.02) matrix: at
    groups of 32 under ggml Q4_K's 2.04e-6 (reports/bitwidth-0.6B/reading.md), min-max's 2.45e-6 is not."""
    w = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0)) * 0.02
    codes, sz = quantize_int4(w, 32, FP32)
    wq = (codes.float() - 8) * sz[..., 0].T.repeat_interleave(32, 1) + sz[..., 1].T.repeat_interleave(32, 1)
    fitted = float((wq - w).pow(2).mean())
    wg = w.view(512, 32, 32)
    low, high = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    step = (high - low) / 15
    min_max = float((torch.round((wg - low) / step) * step + low - wg).pow(2).mean())
    assert fitted < 2.04e-6 < min_max, (fitted, min_max)


def test_int4_fit_in_row_chunks_is_the_whole_matrix_fit():
    """quantize_int4 fits rows in cache-sized chunks; each group's pair depends on its group alone."""
    w = (torch.randn(96, 256, generator=torch.Generator().manual_seed(2)) * 0.02).view(96, 8, 32)
    whole = fit_int4(w)
    chunked = [fit_int4(c) for c in w.split(7)]
    assert all(torch.equal(a, torch.cat([c[i] for c in chunked])) for i, a in enumerate(whole))


@pytest.mark.parametrize("name", ["int8", "int8-g32", "int8-g128", "int4-g32", "int4-g64"])
def test_quantized_linear_multiplies_by_the_quantized_weight(name):
    """The linear's output is x @ W_q.T for the weight its codes and scales stand for (computed
    here from quantize_*, not through the module's kernel)."""
    mode = parse_quant(name)
    w = _weight(64, 128, seed=1)
    if mode.bits == 8:
        codes, scales = quantize_int8(w, mode.group_size)
        wq = codes.float() * scales.repeat_interleave(mode.group_size, dim=1)
    else:
        codes, sz = quantize_int4(w, mode.group_size, FP32)
        g = mode.group_size
        wq = (codes.float() - 8) * sz[..., 0].T.repeat_interleave(g, 1) + sz[..., 1].T.repeat_interleave(g, 1)
    linear = WeightOnlyLinear.from_weight(w, mode, FP32)
    x = torch.randn(2, 3, 128)
    torch.testing.assert_close(linear(x), x @ wq.T, rtol=1e-5, atol=1e-5)
    xb = x.to(torch.bfloat16)
    assert linear(xb).dtype == torch.bfloat16  # activations keep their dtype
    torch.testing.assert_close(linear(xb).float(), xb.float() @ wq.T, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [FP32, torch.bfloat16])
def test_int8_dequantized_in_chunks_is_the_one_expression_bit_for_bit(monkeypatch, dtype):
    """dequantize_int8 runs a chunk of rows at a time (no weight-sized fp32 temporaries): the same bits
    as the one expression, on a last chunk shorter than the others and into a given buffer."""
    from q3tts.standalone import quant

    monkeypatch.setattr(quant, "DEQUANT_CHUNK_ELEMENTS", 7 * 128)  # 7 rows a chunk, 50 rows: 8 chunks
    codes, scales = quantize_int8(_weight(50, 128, seed=3), 32)
    whole = (codes.float().view(50, 4, 32) * scales[..., None]).view(50, 128).to(dtype)
    assert torch.equal(dequantize_int8(codes, scales, dtype), whole)
    out = torch.full((50, 128), float("nan"), dtype=dtype)
    assert dequantize_int8(codes, scales, dtype, out=out) is out and torch.equal(out, whole)


def test_int8_gemm_reuses_one_buffer_per_thread(monkeypatch):
    """Many rows: the int8 weight is dequantized into this thread's buffer, reused from linear to
    linear (a fresh tensor each time faulted in its pages), another thread's own; the outputs are
    those of F.linear over the dequantized weight, in and out of inference mode."""
    import threading

    from q3tts.standalone import quant

    monkeypatch.setattr(quant, "_DEQUANT_SCRATCH", quant._DequantScratch())
    big, small = (WeightOnlyLinear.from_weight(_weight(n, 128, seed=n), parse_quant("int8"), FP32) for n in (96, 64))
    x = torch.randn(5, 128)
    with torch.inference_mode():
        assert torch.equal(big(x), x @ big.dequantized().T)
    buffer = quant._DEQUANT_SCRATCH.buffers[FP32]
    assert torch.equal(small(x), x @ small.dequantized().T)  # outside inference mode, into the same buffer
    assert quant._DEQUANT_SCRATCH.buffers[FP32] is buffer and buffer.numel() == 96 * 128
    seen = []
    worker = threading.Thread(target=lambda: seen.append((small(x), quant._DEQUANT_SCRATCH.buffers[FP32])))
    worker.start()
    worker.join()
    assert torch.equal(seen[0][0], x @ small.dequantized().T)
    assert seen[0][1].data_ptr() != buffer.data_ptr()  # the other thread's own buffer


def test_int8_gemm_keeps_its_own_weight_when_autograd_needs_it():
    """A gradient through an int8 linear over many rows is x's through the weight it used, even when
    another int8 linear runs before the backward (the shared buffer would have been overwritten)."""
    first, second = (WeightOnlyLinear.from_weight(_weight(64, 128, seed=s), parse_quant("int8"), FP32) for s in (4, 5))
    x = torch.randn(5, 128, requires_grad=True)
    y = first(x)
    second(torch.randn(5, 128))
    y.sum().backward()
    torch.testing.assert_close(x.grad, first.dequantized().sum(0).expand(5, 128), rtol=1e-6, atol=1e-6)


def test_int8_group_is_the_one_asked_or_its_largest_divisor_that_fits():
    assert int8_group(1024) == 64 and int8_group(3072, 128) == 128 and int8_group(16) == 16 and int8_group(40) == 8
    assert int8_group(96, 64) == 32 and int8_group(1024, 32) == 32


def test_quant_names():
    assert parse_quant(None) is None and parse_quant("none") is None
    assert (parse_quant("int4").bits, parse_quant("int4").group_size) == (4, 32)
    assert parse_quant("int4-g32").group_size == 32 and parse_quant("int8").group_size == 64
    assert (parse_quant("int8-g32").bits, parse_quant("int8-g32").group_size) == (8, 32)
    with pytest.raises(ValueError, match=r"quant 'int3' is not one of none, int8, int4"):
        parse_quant("int3")


def test_load_option_quantizes_the_transformer_linears_only(checkpoints):
    st_dir = checkpoints["custom_voice"][1]
    plain = Qwen3TTS.from_pretrained(st_dir, dtype=FP32)
    model = Qwen3TTS.from_pretrained(st_dir, dtype=FP32, quant="int8")
    assert str(model.quant) == "int8" and model.fast_engine() is not None  # quant implies the fast path
    report = model.quant_report
    assert len(report.quantized) == 4 * (len(model.talker.decoder.layers) + len(model.code_predictor.decoder.layers))
    assert report.kept == [] and report.bytes_after < report.bytes_before / 3
    # linears reading fewer than 64 inputs (the tiny talker's 32, the code predictor's 16) take a finer group
    assert set(report.finer_groups.values()) == {16, 32}
    for name in report.quantized:
        linear = model.get_submodule(name)
        group = report.finer_groups.get(name, 64)
        assert linear.group_size == group == min(64, linear.in_features)
        assert linear.scales.shape == (linear.out_features, linear.in_features // group)
    quantized = {n for n, m in model.named_modules() if isinstance(m, WeightOnlyLinear)}
    assert quantized == set(report.quantized)
    # heads, norms, embeddings and projections: the plain model's tensors, untouched
    plain_state = plain.state_dict()
    for name, tensor in model.state_dict().items():
        if not name.endswith((".packed", ".scales")):
            assert torch.equal(tensor, plain_state[name]), name
    assert plain.quant is None and not any(isinstance(m, WeightOnlyLinear) for m in plain.modules())
    with pytest.raises(RuntimeError, match=r"weight-only quantized \(int8\): only the fast path"):
        _ = model.talker.decoder.layers[0].attn.wqkv.weight  # what the exact path reads


def test_int4_groups_fit_each_linear_or_keep_it(checkpoints):
    """int4-g128 asks for groups of 128; the tiny talker reads 32 or 64 inputs, so its linears are
    quantized in the largest group that divides them (named); the tiny code predictor's linears that
    read 16 inputs take no group of the CPU kernel (32 and more) and stay fp32, named."""
    model = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=FP32, quant="int4-g128")
    report = model.quant_report
    n_cp = len(model.code_predictor.decoder.layers)
    kept = {
        f"code_predictor.decoder.layers.{i}.{p}" for i in range(n_cp) for p in ("attn.wqkv", "attn.wo", "mlp.w_gate_up")
    }
    assert set(report.kept) == kept
    assert all(not isinstance(model.get_submodule(n), WeightOnlyLinear) for n in kept)
    assert sum(n.startswith("talker.") for n in report.quantized) == 4 * len(model.talker.decoder.layers)
    assert report.finer_groups["talker.decoder.layers.0.attn.wqkv"] == 32
    assert report.finer_groups["talker.decoder.layers.0.mlp.w_down"] == 64
    assert all(model.get_submodule(n).group_size == g for n, g in report.finer_groups.items())
    assert set(report.finer_groups) == set(report.quantized)  # nothing here is 128 wide


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quant": "int9"}, r"quant 'int9' is not one of"),
        ({"quant": "int8", "dtype": "bf16-mixed"}, r"quant int8 needs the model in fp32 or bf16"),
        ({"quant": "int8", "dtype": torch.float16}, r"quant int8 needs the model in fp32 or bf16"),
    ],
)
def test_load_option_refuses_bad_input(checkpoints, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], **kwargs)


def test_quant_bounds_are_for_fp32_activations_only():
    assert fast_bounds(FP32).forward == FAST_TOLERANCES[FP32]  # the plain modes keep their bounds
    assert not fast_bounds(FP32, "int8").generation_identical
    with pytest.raises(ValueError, match=r"quant int8 is measured with fp32 activations only, not bf16"):
        fast_bounds(torch.bfloat16, "int8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fast", "--quant", "int9"], "'int9': with --fast, one or more of int8"),
        (["--fast", "--quant", "int8", "--dtype", "bf16"], "measured with fp32 activations only"),
    ],
)
def test_verify_cli_refuses_bad_quant(tmp_path, args, message):
    result = CliRunner().invoke(verify_cli, [*args, "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "r").exists()


# --- fidelity: the int8 check passes clean and catches a planted quantization bug -----------------
@pytest.fixture(scope="module")
def int8_pair(load_models, checkpoints):
    wrapper, _plain = load_models("custom_voice", FP32)
    return wrapper, Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=FP32, quant="int8")


def _int8_report(wrapper, model, compile: bool = False):
    engine = FastEngine(model.talker, model.code_predictor, compile=compile)
    return run_fast_parity(
        wrapper, model, FP32, "fp32", engine=engine, max_new_tokens=8, case_names=CASE, modes=("greedy",), quant="int8"
    )


def test_int8_check_passes_clean(int8_pair):
    report = _int8_report(*int8_pair)
    assert report["passed"], report["failing"]
    assert report["quant"] == "int8" and not report["generation_judged"]
    assert report["teacher_forced"] and report["stepwise"][0]["talker_steps"] > 0
    # quantization is seen: not the fp32 fast path's last-bit distances
    assert max(c["max_rel"] for c in report["forward"]) > 100 * FAST_TOLERANCES[FP32].rtol


@pytest.mark.parametrize("layer, linear", [(0, "mlp.w_down"), (1, "attn.wqkv")])
def test_int8_check_catches_wrong_scales_on_one_layer(int8_pair, layer, linear):
    """One talker linear's group scales applied to the wrong rows (rolled by one), as a packing or
    transposition bug would: the clean model passes the same check (test above)."""
    wrapper, model = int8_pair
    owner, attr = linear.split(".")
    module = getattr(getattr(model.talker.decoder.layers[layer], owner), attr)
    clean = module.scales.clone()
    module.scales.copy_(clean.roll(1))
    try:
        report = _int8_report(wrapper, model)
    finally:
        module.scales.copy_(clean)
    assert not report["passed"] and not report["raised"]
    assert any(name.startswith("fast.") for name in report["failing"]), report["failing"]


@pytest.fixture(scope="module")
def int4_pair(load_models, checkpoints):
    wrapper, _plain = load_models("custom_voice", FP32)
    return wrapper, Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=FP32, quant="int4")


def test_int4_check_passes_clean_and_catches_scales_and_zeros_swapped(int4_pair):
    """int4's bounds are wide (4-bit noise on a tiny random model), so the planted bug is a packing
    one: one talker linear's per-group scales and zeros swapped. Measured: the clean run's lowest
    forward cosine 0.944 (floor 0.85), the fault's 0.28. (Scales rolled by one channel in a
    code-predictor down projection stay within int4's bounds on this fixture: reports/fast_parity-int4.md.)"""
    wrapper, model = int4_pair

    def report():
        engine = FastEngine(model.talker, model.code_predictor, compile=False)
        return run_fast_parity(
            wrapper,
            model,
            FP32,
            "fp32",
            engine=engine,
            max_new_tokens=8,
            case_names=CASE,
            modes=("greedy",),
            quant="int4",
        )

    clean = report()
    assert clean["passed"], clean["failing"]
    module = model.talker.decoder.layers[0].attn.wo
    saved = module.scales.clone()
    module.scales.copy_(saved.flip(-1))
    try:
        faulty = report()
    finally:
        module.scales.copy_(saved)
    assert not faulty["passed"] and not faulty["raised"]
    assert any(name.startswith("fast.talker") for name in faulty["failing"]), faulty["failing"]


@pytest.mark.slow_compile
def test_int8_compiled_engine_passes(int8_pair):
    report = _int8_report(*int8_pair, compile=True)
    assert report["passed"], report["failing"]
    torch._dynamo.reset()


def test_every_quant_name_loads(checkpoints):
    for name in QUANT_NAMES:
        model = Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype=torch.bfloat16, quant=name)
        assert model.quant_report.quantized and model.quant_report.mode == name


# --- q3tts synthesize --fast --quant --------------------------------------------------------------
def _synthesize(checkpoints, tmp_path, *args):
    from q3tts.standalone.cli import main as q3tts_cli

    model = checkpoints["custom_voice"][1]
    out = tmp_path / "q.wav"
    common = ["synthesize", "--model", str(model), "--text", "Hi.", "--speaker", "alice", "--out", str(out)]
    return CliRunner().invoke(q3tts_cli, [*common, "--greedy", "--max-new-tokens", "4", *args]), out


def test_synthesize_quant_loads_the_quantized_fast_path(checkpoints, tmp_path, monkeypatch):
    """--fast --quant int8 loads a quantized model (the engine built uncompiled here) and writes audio."""
    seen = []
    compile_fast = Qwen3TTS.compile_fast

    def uncompiled(self, warm_up=(), **options):
        seen.append(self.quant)
        return compile_fast(self, warm_up, **{**options, "compile": False})

    monkeypatch.setattr(Qwen3TTS, "compile_fast", uncompiled)
    result, out = _synthesize(checkpoints, tmp_path, "--fast", "--quant", "int8")
    assert result.exit_code == 0, result.output
    assert out.is_file() and seen and all(str(q) == "int8" for q in seen)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quant", "int8"], "--quant runs on the fast path: add --fast"),
        (["--fast", "--quant", "int9"], "quant 'int9' is not one of none, int8"),
        (["--fast", "--quant", "int8", "--dtype", "bf16-mixed"], "quant int8 needs the model in fp32 or bf16"),
    ],
)
def test_synthesize_quant_bad_input(checkpoints, tmp_path, args, message):
    result, out = _synthesize(checkpoints, tmp_path, *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not out.exists()


def test_quant_activations_default_to_fp32_and_follow_a_plain_dtype(checkpoints):
    st_dir = checkpoints["custom_voice"][1]
    assert Qwen3TTS.from_pretrained(st_dir, quant="int4").talker.decoder.layers[0].attn.wo.scales.dtype == FP32
    bf16 = Qwen3TTS.from_pretrained(st_dir, dtype="bf16", quant="int4")
    assert bf16.dtype == torch.bfloat16 and bf16.talker.decoder.layers[0].attn.wo.scales.dtype == torch.bfloat16
    # int8's group scales stay fp32 whatever the activations (quant.quantize_int8)
    bf16_int8 = Qwen3TTS.from_pretrained(st_dir, dtype="bf16", quant="int8")
    wo = bf16_int8.talker.decoder.layers[0].attn.wo
    assert bf16_int8.dtype == torch.bfloat16 and wo.scales.dtype == FP32
    assert wo(torch.ones(2, 3, wo.in_features, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_benchmark_entries_for_the_quantized_modes(checkpoints):
    """bench/generation.py --fast-dtypes fp32+int8,fp32+int4: each a quantized model over the
    benchmark's tensors (the base model untouched), held to its own floor of bytes per frame."""
    from q3tts.bench.generation import fast_mode_bytes, fast_model

    st = Qwen3TTS.from_pretrained(checkpoints["custom_voice"][1], dtype=FP32)
    cfg = st.config
    sizes = {m: fast_mode_bytes(cfg, m) for m in ("fp32", "bf16", "fp32+int8", "bf16+int8", "fp32+int4")}
    assert sizes["fp32+int4"] < sizes["fp32+int8"] < sizes["fp32"] and sizes["bf16+int8"] < sizes["bf16"]
    assert sizes["bf16+int8"] < sizes["fp32+int8"]  # the heads are read in the activation dtype
    model = fast_model(st, cfg, "fp32+int8")
    assert str(model.quant) == "int8" and isinstance(model.talker.decoder.layers[0].attn.wqkv, WeightOnlyLinear)
    assert not any(isinstance(m, WeightOnlyLinear) for m in st.modules())
    with pytest.raises(ValueError, match=r"--fast-dtypes entry 'fp16\+int8': the dtype is one of fp32, bf16"):
        fast_model(st, cfg, "fp16+int8")


# --- the sharp reference: upstream on the dequantized weights (verify/cases/dequantized.py) -------
@pytest.fixture(scope="module")
def dequantized_refs(load_models, checkpoints):
    """{quant: (upstream on the int8/int4 copy's dequantized weights, that quantized copy)}."""
    from q3tts.verify.cases.dequantized import load_dequantized_reference
    from q3tts.verify.faults.fast_selftest import quantized_copy

    _wrapper, plain = load_models("custom_voice", FP32)
    out = {}
    for quant in ("int8", "int4"):
        model = quantized_copy(plain, quant)
        out[quant] = (load_dequantized_reference(checkpoints["custom_voice"][0], model), model)
    return out


def _sharp_report(ref, model, quant, case=CASE, mode="greedy"):
    engine = FastEngine(model.talker, model.code_predictor, compile=False)
    return run_fast_parity(
        ref, model, FP32, "fp32", engine=engine, max_new_tokens=8, case_names=case, modes=(mode,), quant=quant,
        dequantized_reference=True,
    )  # fmt: skip


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_dequantized_reference_passes_the_plain_fp32_bounds(dequantized_refs, quant):
    """Against upstream on its own dequantized weights a quantized mode is as close as the plain
    fp32 fast path (kernel rounding only), and its codes are judged and identical."""
    report = _sharp_report(*dequantized_refs[quant], quant)
    assert report["passed"] and report["generation_judged"], report["failing"]
    assert report["reference"] == "upstream, dequantized weights"
    assert max(c["max_rel"] for c in report["forward"]) < FAST_TOLERANCES[FP32].rtol
    assert all(g["identical"] for g in report["generation"])


def test_dequantized_reference_refuses_names_upstream_lacks(dequantized_refs, checkpoints, monkeypatch):
    from q3tts.verify.cases import dequantized

    _ref, model = dequantized_refs["int8"]
    real = dequantized.dequantized_state
    monkeypatch.setattr(dequantized, "dequantized_state", lambda m: {**real(m), "talker.no_such.weight": torch.ones(1)})
    with pytest.raises(KeyError, match=r"talker.no_such.weight"):
        dequantized.load_dequantized_reference(checkpoints["custom_voice"][0], model)


def test_sharp_check_catches_what_int4_bounds_hide(load_models, dequantized_refs):
    """The prefill's positions off by one after left padding: within int4's own (fidelity) bounds
    against upstream's weights, caught against upstream on the dequantized weights."""
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.fast_selftest import quantized_copy

    wrapper, plain = load_models("custom_voice", FP32)
    ref, _model = dequantized_refs["int4"]
    fault = next(f for f in CATALOGUE if f.name == "padded_position")
    case = ("batch.custom_voice",)
    with fault.inject(plain):
        faulty = quantized_copy(plain, "int4")
        engine = FastEngine(faulty.talker, faulty.code_predictor, compile=False)
        wide = run_fast_parity(
            wrapper, faulty, FP32, "fp32", engine=engine, max_new_tokens=8, case_names=case, modes=("sampled",),
            quant="int4",
        )  # fmt: skip
        sharp = _sharp_report(ref, faulty, "int4", case=case, mode="sampled")
    assert wide["passed"], wide["failing"]
    assert not sharp["passed"] and sharp["failing"], sharp


# --- the fast self-test in a quantized mode: faults planted under the quantizer -------------------
@pytest.mark.parametrize("fault_name", ["swapped_qk", "top_k_plus_one"])
def test_quant_self_test_plants_the_fault_under_the_quantizer(load_models, dequantized_refs, fault_name):
    """A talker weight fault is planted in the plain model and reaches the int8 graphs through a
    quantized copy (the forward cases fail against upstream on the clean copy's dequantized
    weights); a sampler fault runs on the clean quantized model's shared engine. The plain model is
    left plain and unfaulted. The clean pass of the same checks is the test above."""
    from q3tts.verify.faults.catalogue import CATALOGUE
    from q3tts.verify.faults.fast_selftest import run_fast_fault

    _wrapper, plain = load_models("custom_voice", FP32)
    ref, clean = dequantized_refs["int8"]
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    fault = next(f for f in CATALOGUE if f.name == fault_name)
    kwargs = dict(engine_options={"compile": False}, case_names=CASE, quant="int8")
    if fault.component == "generation":
        engine = FastEngine(clean.talker, clean.code_predictor, compile=False)
        r = run_fast_fault(fault, ref, clean, FP32, "fp32", 8, None, engine=engine, modes=("split_top_k",), **kwargs)
    else:
        r = run_fast_fault(fault, ref, plain, FP32, "fp32", 8, None, modes=("greedy",), **kwargs)
        assert any(c.startswith("fast.talker_step") for c in r.failing), r.failing
    assert r.detected and r.quant == "int8", r
    assert plain.quant is None and all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_verify_cli_passes_the_quant_to_the_fast_self_test(tmp_path, monkeypatch):
    """verify-parity --fast --self-test --quant int8 runs the fast self-test in that mode (the run
    itself is the committed reports/fast_faults-int8.md; the seam is tested above)."""
    import q3tts.verify.faults.fast_selftest as fast_selftest

    seen = {}

    def record(report_dir, dtype_names, names, engine_options=None, quant=None):
        seen.update(dtypes=tuple(dtype_names), names=names, quant=quant)
        return False  # a missed fault: the command must fail

    monkeypatch.setattr(fast_selftest, "run_fast_self_test", record)
    args = ["--fast", "--self-test", "--quant", "int8", "--faults", "top_k_plus_one", "--report-dir", str(tmp_path)]
    result = CliRunner().invoke(verify_cli, args)
    assert seen == {"dtypes": ("fp32",), "names": ["top_k_plus_one"], "quant": "int8"}, seen
    assert result.exit_code == 1, result.output
