"""Weights sit at 64-byte-aligned addresses on both sides of every comparison.

On some CPUs (AMD EPYC, measured) MKL's fp32 matrix-vector product rounds by the weight's address
mod 16 bytes: the same [8, 32] linear on the same values differs by 9.5e-07 between addresses 0 and
8 mod 16. A tensor read as a view of a file or a Python buffer lands wherever the file's layout
puts it, so the standalone reader reads into torch-allocated memory, and the verifier moves
upstream's mmap-placed tensors there too (where its own loader puts every tensor it casts)."""

from __future__ import annotations

import pytest
import torch

from q3tts.standalone.checkpoint import CheckpointReader

ALIGN = 64


def misaligned(tensors) -> list[str]:
    return [name for name, t in tensors if t.numel() and t.data_ptr() % ALIGN]


@pytest.mark.parametrize("model_type", ["base", "custom_voice"])
def test_standalone_weights_are_aligned(load_standalone, model_type):
    model = load_standalone(model_type)
    assert not misaligned(model.named_parameters()) and not misaligned(model.named_buffers())
    assert not misaligned(model.codec.named_parameters())


def test_the_reader_aligns_whatever_the_file_offsets(checkpoints):
    """The fixture's tensors start at file offsets of every residue mod 64; each read lands aligned."""
    with CheckpointReader(checkpoints["base"][0]) as reader:
        offsets = {reader.infos[n].begin % ALIGN for n in reader.names()}
        assert len(offsets) > 1  # the file does not align them itself
        assert not misaligned((n, reader.get(n)) for n in reader.names())


@pytest.mark.reference
def test_upstream_is_compared_with_aligned_weights(checkpoints):
    from qwen_tts import Qwen3TTSModel

    from q3tts.verify.cases.forward import align_weights, load_upstream_wrapper

    plain = Qwen3TTSModel.from_pretrained(str(checkpoints["base"][0]), dtype=torch.float32).model
    before = {n: t.clone() for n, t in plain.state_dict().items()}
    assert misaligned(plain.named_parameters())  # transformers left views into the mapped file
    assert align_weights(plain) > 0
    assert not misaligned(plain.named_parameters()) and not misaligned(plain.named_buffers())
    assert all(torch.equal(before[n], t) for n, t in plain.state_dict().items())  # moved, not changed
    wrapper = load_upstream_wrapper(checkpoints["base"][0], torch.float32)
    assert not misaligned(wrapper.model.named_parameters())
    assert not misaligned(wrapper.model.speech_tokenizer.model.named_parameters())
