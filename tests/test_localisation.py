"""The localisation rule: a fault is named where it enters (the first layer whose output differs
at all), not where its error first grows past the tolerance."""

from __future__ import annotations

import torch

from q3tts.verify.compare import first_differing_layer, first_divergent_layer

NAMES = ["layers.0", "layers.1", "layers.2"]


def _stack(deltas: list[float]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Reference layer outputs of scale ~1 (the residual stream) and the same with an error of
    ``deltas[i]`` of its scale (a gain, so the cosine stays 1 and only the max abs bound acts)."""
    g = torch.Generator().manual_seed(0)
    ref = [torch.randn(4, 16, generator=g).to(torch.bfloat16) for _ in NAMES]
    got = [(r.float() * (1 + d)).to(torch.bfloat16) if d else r.clone() for r, d in zip(ref, deltas)]
    return ref, got


def test_an_error_under_tolerance_at_its_origin_is_named_there():
    # 1% of the scale at layer 0 (under bf16's 3%), 5% at layer 1: the bound is crossed one layer late.
    ref, got = _stack([0.01, 0.05, 0.08])
    assert first_divergent_layer(NAMES, ref, got, torch.bfloat16) == "layers.1"
    assert first_differing_layer(NAMES, ref, got) == "layers.0"


def test_identical_layers_before_the_origin_are_skipped():
    ref, got = _stack([0.0, 0.0, 0.01])
    assert first_differing_layer(NAMES, ref, got) == "layers.2"
    assert first_divergent_layer(NAMES, ref, got, torch.bfloat16) is None
    assert first_differing_layer(NAMES, ref, ref) is None


def test_select_restricts_the_comparison_to_real_positions():
    ref, got = _stack([0.0, 0.0, 0.0])
    got[0] = got[0].clone()
    got[0][0] += 1  # a padded row: not compared
    keep = torch.tensor([False, True, True, True])
    assert first_differing_layer(NAMES, ref, got, select=lambda t: t[keep]) is None
    assert first_differing_layer(NAMES, ref, got) == "layers.0"
