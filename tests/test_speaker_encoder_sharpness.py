"""Every Res2Net branch of the fixture speaker encoder is live under the parity input, and a 0.1%
perturbation of any one branch fails speaker-encoder parity, located in its block (issue 19,
item 4: a ReLU-dead branch once hid such a perturbation)."""

from __future__ import annotations

import pytest
import torch

from q3tts.verify.cases.forward import ParityInputs, run_forward_cases

BRANCHES = [(b, i) for b in (1, 2, 3) for i in range(7)]


def _branch(standalone, block, branch):
    return standalone.speaker_encoder.blocks[block].res2net_block.blocks[branch]


def test_every_res2net_branch_fires(load_pair):
    upstream, standalone = load_pair("base", torch.float32)
    active = {}
    hooks = [
        _branch(standalone, b, i).register_forward_hook(
            lambda _m, _i, out, key=(b, i): active.__setitem__(key, float((out > 0).float().mean()))
        )
        for b, i in BRANCHES
    ]
    try:
        standalone.extract_speaker_embedding(ParityInputs.make(standalone).waveform, 24000)
    finally:
        for h in hooks:
            h.remove()
    # Measured: every branch fires in >= 22% of its (channel, frame) units (4% for block 1 branch 3
    # with the earlier 1.7 kHz waveform).
    assert min(active.values()) > 0.1, {k: round(v, 3) for k, v in active.items()}


@pytest.mark.parametrize("block, branch", BRANCHES, ids=[f"block{b}.branch{i}" for b, i in BRANCHES])
@pytest.mark.parametrize("tensor", ["weight", "bias"])
def test_a_branch_perturbed_by_a_thousandth_is_caught(load_pair, block, branch, tensor):
    upstream, standalone = load_pair("base", torch.float32)
    p = getattr(_branch(standalone, block, branch).conv, tensor)
    original = p.detach().clone()
    g = torch.Generator().manual_seed(block * 10 + branch)
    with torch.no_grad():
        p.add_(1e-3 * original.pow(2).mean().sqrt() * torch.randn(p.shape, generator=g))
    try:
        failed = [r for r in run_forward_cases(upstream, standalone, torch.float32) if not r.passed]
    finally:
        with torch.no_grad():
            p.copy_(original)
    assert [r.case for r in failed] == ["speaker_encoder.embedding"], [r.case for r in failed]
    assert failed[0].first_bad_layer == f"speaker_encoder.blocks.{block}"
