"""Upstream on the weights a weight-only quantized model computes with: the sharp reference of the
quantized fast modes.

Against upstream's own weights a quantized mode is judged by wide, measured bounds (its fidelity,
compare.fast_bounds): quantization moves every logit, so a bug smaller than that noise hides in it
(measured: int4's bounds missed a prefill position off by one after left padding, and a dropped
dialect override). Here each quantized linear's weight in upstream's model is replaced by the
weight its codes and scales stand for (WeightOnlyLinear.dequantized), mapped back to upstream's
tensor names through the layout map (standalone/layout.py: fused qkv and gate/up split again).
Upstream then computes the same function as the quantized model, up to the kernels' rounding, so
the fast path is judged against it with the plain fp32 bounds, codes included (measured on the
tiny custom_voice fixture, int4: forward max rel 6.1e-7, every generated code identical).
"""

from __future__ import annotations

from pathlib import Path

import torch

from q3tts.standalone.layout import plan


def dequantized_state(quantized) -> dict[str, torch.Tensor]:
    """Upstream tensor name -> fp32 weight, for every linear ``quantized`` (a Qwen3TTS after
    quantize_model) holds in quantized form; the linears it kept stay out."""
    report = quantized.quant_report
    if report is None:
        raise ValueError("the model is not weight-only quantized: nothing to dequantize")
    entries = {e.target: e for e in plan(quantized.config)}
    state: dict[str, torch.Tensor] = {}
    for name in report.quantized:
        entry = entries.get(f"{name}.weight")
        if entry is None:
            raise KeyError(f"{name}.weight is not in the layout map: cannot name its upstream tensors")
        weight = quantized.get_submodule(name).dequantized().float()
        state.update(zip(entry.sources, entry.to_upstream(weight), strict=True))
    return state


@torch.no_grad()
def load_dequantized_reference(upstream_dir: str | Path, quantized):
    """Upstream's wrapper of ``upstream_dir`` in fp32, with the quantized linears' weights replaced
    by ``quantized``'s dequantized ones. Every replaced name must be one of upstream's tensors with
    the same shape (a layout map that drifted from upstream fails here, not in the numbers)."""
    from q3tts.verify.cases.forward import load_upstream_wrapper

    wrapper = load_upstream_wrapper(upstream_dir, torch.float32)
    own = wrapper.model.state_dict()
    state = dequantized_state(quantized)
    wrong = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    if wrong:
        raise KeyError(f"dequantized weights that upstream's model does not hold with that shape: {wrong[:5]}")
    for name, weight in state.items():
        own[name].copy_(weight)
    return wrapper
