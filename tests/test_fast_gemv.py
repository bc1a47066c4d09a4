"""The fast path's one-row linears (standalone/fast.py _linear): up to GEMV_MAX_ROWS rows a reduction
inductor generates, above it torch's GEMM; int8 codes through the same reduction, int4 always through
its packed kernel. Eager here (the graphs' numbers are judged by test_fast_path and verify-parity)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from q3tts.standalone import fast
from q3tts.standalone.quant import WeightOnlyLinear, parse_quant


def _counted(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = fast.gemv

    def counting(x, *args, **kwargs):
        calls.append(x.numel() // x.shape[-1])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(fast, "gemv", counting)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_rows_up_to_the_limit_are_a_reduction_equal_to_the_gemm(monkeypatch, dtype, bias):
    calls = _counted(monkeypatch)
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 48, bias=bias, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(48, 64, generator=g))
        if bias:
            lin.bias.copy_(torch.randn(48, generator=g))
    for rows in range(1, fast.GEMV_MAX_ROWS + 2):
        x = torch.randn(rows, 1, 64, generator=g).to(dtype)
        got = fast.decode_linear(lin, x)
        ref = (x.double() @ lin.weight.double().T + (lin.bias.double() if bias else 0)).to(dtype)
        assert got.dtype == dtype and got.shape == (rows, 1, 48)
        tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.07, rtol=0.01)
        torch.testing.assert_close(got, ref, **tol)
    assert calls == list(range(1, fast.GEMV_MAX_ROWS + 1))  # the row past the limit went to the GEMM


def test_a_wrong_reduction_is_not_hidden_by_the_tolerance(monkeypatch):
    """The comparison above can fail: a reduction that drops the last input column is caught."""
    lin = nn.Linear(64, 48, bias=False)
    monkeypatch.setattr(fast, "gemv", lambda x, w, scales=None, bias=None, materialize=False: x[..., :-1] @ w[:, :-1].T)
    x = torch.randn(1, 64)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(fast.decode_linear(lin, x), x @ lin.weight.T, atol=1e-4, rtol=1e-5)


def test_int8_codes_run_through_the_reduction_and_int4_keeps_its_kernel(monkeypatch):
    calls = _counted(monkeypatch)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 128, generator=g)
    int8 = WeightOnlyLinear.from_weight(w, parse_quant("int8"), torch.bfloat16)
    int4 = WeightOnlyLinear.from_weight(w, parse_quant("int4-g32"), torch.bfloat16)
    x = torch.randn(1, 128, generator=g).to(torch.bfloat16)
    torch.testing.assert_close(fast.decode_linear(int8, x), int8(x), atol=0.05, rtol=0.01)
    assert calls == [1]
    assert torch.equal(fast.decode_linear(int4, x), int4(x)) and calls == [1]


@pytest.mark.parametrize("seqlen", [1, 2])
def test_decode_attention_reductions_equal_sdpa_over_cache_and_new_positions(seqlen):
    """fast._attention (scores and weighted sum as reductions, fast._scores/_mix) against SDPA in
    fp64 over the same keys: the masked cache positions and, causally, the new ones. A swapped
    key/value pair is far outside the tolerance (the check can fail)."""
    g = torch.Generator().manual_seed(0)
    bsz, heads, kv, dim, window = 2, 4, 2, 16, 7
    q = torch.randn(bsz, heads, seqlen, dim, generator=g)
    k_new, v_new = (torch.randn(bsz, kv, seqlen, dim, generator=g) for _ in range(2))
    k_cache, v_cache = (torch.randn(bsz, kv, window, dim, generator=g) for _ in range(2))
    cache_mask = torch.rand(bsz, 1, seqlen, window, generator=g) > 0.3
    keys = torch.cat((k_cache, k_new), 2).repeat_interleave(heads // kv, 1).double()
    values = torch.cat((v_cache, v_new), 2).repeat_interleave(heads // kv, 1).double()
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool).tril().expand(bsz, 1, seqlen, seqlen)
    mask = torch.cat((cache_mask, causal), -1)
    ref = F.scaled_dot_product_attention(q.double(), keys, values, attn_mask=mask, scale=dim**-0.5)
    got = fast._attention(q, k_new, v_new, k_cache, v_cache, cache_mask, dim**-0.5)
    assert (got.double() - ref).abs().max() < 1e-5
    swapped = fast._attention(q, v_new, k_new, v_cache, k_cache, cache_mask, dim**-0.5)
    assert (swapped.double() - ref).abs().max() > 1e-2


def test_int8_inputs_are_materialized_once_in_the_compiled_graph():
    """An int8 linear's input reaches the reduction through materialize_fp32 (an fp32 copy inductor
    cannot inline, so the RMSNorm before it is not recomputed per output row); a bf16 linear's does
    not. Checked on the traced graph, with the int8 result equal to the dequantized product."""
    from q3tts.standalone.quant import dequantize_int8, quantize_int8

    torch.manual_seed(0)
    weight = torch.randn(48, 64)
    codes, scales = quantize_int8(weight, group_size=32)
    x = torch.randn(1, 64)
    out = fast.gemv(x, codes, scales)
    assert torch.allclose(out, x @ dequantize_int8(codes, scales).T, rtol=1e-5, atol=1e-5)
    # each group's own scale: the two groups' scales swapped give another product
    assert not torch.allclose(fast.gemv(x, codes, scales.flip(-1)), out, rtol=1e-3, atol=1e-3)
    two = torch.randn(2, 1, 64)  # the batch-2 decode step's rows
    assert torch.allclose(fast.gemv(two, codes, scales), two @ dequantize_int8(codes, scales).T, rtol=1e-5, atol=1e-5)
    copy = fast.materialize_fp32(x)
    assert copy.dtype == torch.float32 and torch.equal(copy, x) and copy.data_ptr() != x.data_ptr()

    def ops(fn, *args) -> list[str]:
        gm = torch.fx.experimental.proxy_tensor.make_fx(fn)(*args)
        return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]

    assert any("materialize_fp32" in op for op in ops(lambda a: fast.gemv(a, codes, scales), x))
    assert not any("materialize_fp32" in op for op in ops(lambda a: fast.gemv(a, weight), x))
