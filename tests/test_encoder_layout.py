"""convert-ckpt maps the speech-tokenizer encoder into the standalone layout with strict accounting."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from q3tts.convert import convert_checkpoint
from q3tts.standalone.speech_encoder import SpeechEncoder, load_speech_encoder_config


def test_converted_encoder_names_are_the_modules(checkpoints):
    up, st = checkpoints["base"]
    names = {k for k in load_file(str(st / "speech_tokenizer" / "model.safetensors")) if k.startswith("encoder.")}
    with torch.device("meta"):
        model = SpeechEncoder(load_speech_encoder_config(st / "speech_tokenizer"))
    assert names == {"encoder." + k for k in model.state_dict()}
    up_names = {k for k in load_file(str(up / "speech_tokenizer" / "model.safetensors")) if k.startswith("encoder.")}
    assert len(up_names) > len(names)  # q/k/v fused, codebooks stacked


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.update({"encoder.bogus.weight": torch.zeros(2)}), "encoder.bogus.weight"),
        (
            lambda t: t.pop("encoder.encoder_transformer.layers.0.mlp.fc1.weight"),
            "encoder.encoder_transformer.layers.0.mlp.fc1.weight",
        ),
        (
            lambda t: t.update({"encoder.downsample.conv.weight": torch.zeros(16, 16, 3)}),
            "encoder.downsample.conv.weight",
        ),
    ],
)
def test_encoder_tensor_accounting_is_strict(checkpoints, tmp_path, edit, match):
    up, _ = checkpoints["base"]
    src = tmp_path / "up"
    shutil.copytree(up, src)
    path = src / "speech_tokenizer" / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        convert_checkpoint(src, tmp_path / "st")
    assert not (tmp_path / "st").exists()
