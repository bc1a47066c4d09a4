"""The parity tests can fail: corrupting the standalone side must be reported, and located."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from q3tts.standalone import Qwen3TTS
from q3tts.verify.cases.forward import run_forward_cases

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


def _swap_in_checkpoint(src, dst, a: str, b: str):
    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    sd[a], sd[b] = sd[b].clone(), sd[a].clone()
    save_file(sd, str(dst / "model.safetensors"))
    (dst / "manifest.json").unlink()  # a hand-edited checkpoint: no manifest vouches for it


@pytest.mark.parametrize(
    "a, b, failing_prefix, layer",
    [
        (
            "talker.decoder.layers.1.attn.q_norm.weight",
            "talker.decoder.layers.1.attn.k_norm.weight",
            "talker.",
            "talker.layers.1",
        ),
        (
            "code_predictor.decoder.layers.0.attn_norm.weight",
            "code_predictor.decoder.layers.0.mlp_norm.weight",
            "code_predictor.",
            "code_predictor.layers.0",
        ),
        (
            "speaker_encoder.blocks.2.tdnn1.conv.bias",
            "speaker_encoder.blocks.2.tdnn2.conv.bias",
            "speaker_encoder.embedding",
            "speaker_encoder.blocks.2",
        ),
    ],
)
def test_swapped_tensors_are_reported_and_located(checkpoints, load_pair, tmp_path, a, b, failing_prefix, layer):
    upstream, _ = load_pair("base", torch.float32)
    broken_dir = tmp_path / "broken"
    _swap_in_checkpoint(checkpoints["base"][1], broken_dir, a, b)
    broken = Qwen3TTS.from_pretrained(broken_dir)
    results = run_forward_cases(upstream, broken, torch.float32)
    failed = [r for r in results if not r.passed]
    assert failed, "swapping two tensors went unnoticed"
    assert all(r.case.startswith(failing_prefix) for r in failed), [r.case for r in failed]
    assert {r.first_bad_layer for r in failed} == {layer}


def test_every_standalone_tensor_matters(load_pair):
    """Noise of 1% of a tensor's RMS, in any single tensor, must fail forward parity in fp32:
    every weight reaches an output the tests compare, and the fixture's init makes it count.
    (At 0.1% every tensor is caught too since the parity waveform keeps every Res2Net branch live;
    measured, same noise: the closest, block 2 branch 0's weight, moves an output 1.43x the 1e-5
    bound. tests/test_speaker_encoder_sharpness.py holds each branch to 0.1%.)"""
    upstream, standalone = load_pair("base", torch.float32)
    g = torch.Generator().manual_seed(0)
    undetected = []
    # asp.conv feeds a softmax over time: a per-channel constant shift (its bias) cancels exactly,
    # in upstream as here. It is the one tensor that provably cannot change an output.
    params = {k: v for k, v in standalone.named_parameters() if k != "speaker_encoder.asp.conv.bias"}
    for name, p in params.items():
        original = p.detach().clone()
        with torch.no_grad():
            p.add_(1e-2 * original.float().pow(2).mean().sqrt() * torch.randn(p.shape, generator=g))
        try:
            if all(r.passed for r in run_forward_cases(upstream, standalone, torch.float32)):
                undetected.append(name)
        finally:
            with torch.no_grad():
                p.copy_(original)
    assert not undetected, f"perturbations not detected: {undetected}"
    assert all(r.passed for r in run_forward_cases(upstream, standalone, torch.float32))
