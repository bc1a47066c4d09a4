"""from_pretrained(verify="sha256") hashes every file the manifest lists before reading a weight
and names a changed one; the default (None, or "size") checks sizes only, so a flipped byte of
the same size loads; anything else is refused by name."""

from __future__ import annotations

import shutil

import pytest

import q3tts.standalone.model as model_module
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.checkpoint import CheckpointError, CheckpointReader


def _flipped(src, tmp_path, rel="model.safetensors"):
    """A copy of ``src`` with one byte in the middle of the last tensor's data of ``rel`` flipped."""
    directory = tmp_path / "ckpt"
    shutil.copytree(src, directory)
    with CheckpointReader(directory / rel.rpartition("/")[0] if "/" in rel else directory) as reader:
        info = max(reader.infos.values(), key=lambda i: i.begin)
    path = directory / rel
    data = bytearray(path.read_bytes())
    data[info.begin + info.nbytes // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return directory


@pytest.mark.parametrize("rel", ["model.safetensors", "speech_tokenizer/model.safetensors"])
def test_a_flipped_byte_is_named_with_sha256_and_not_without(checkpoints, tmp_path, monkeypatch, rel):
    directory = _flipped(checkpoints["base"][1], tmp_path, rel)
    Qwen3TTS.from_pretrained(directory)  # sizes match: the default does not see it
    Qwen3TTS.from_pretrained(directory, verify="size")
    monkeypatch.setattr(model_module, "load_state_dict", lambda *a, **k: pytest.fail("a weight was read"))
    with pytest.raises(CheckpointError) as info:
        Qwen3TTS.from_pretrained(directory, verify="sha256")
    assert str(info.value) == (
        f"{directory / rel}: sha256 differs from the manifest (same size: the content changed; a flipped bit or an "
        "edit); convert the checkpoint again or restore the file"
    )


def test_clean_checkpoint_passes_sha256(checkpoints):
    for model_type in ("base", "custom_voice", "voice_design"):
        model = Qwen3TTS.from_pretrained(checkpoints[model_type][1], verify="sha256")
        assert model.config.tts_model_type == model_type


def test_sha256_of_an_upstream_dir_verifies_its_conversion(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("Q3TTS_CACHE", str(tmp_path / "cache"))
    model = Qwen3TTS.from_pretrained(checkpoints["voice_design"][0], verify="sha256", progress=False)
    assert model.checkpoint_dir.parent == tmp_path / "cache"


def test_sha256_needs_a_manifest(checkpoints, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoints["base"][1], directory)
    (directory / "manifest.json").unlink()
    Qwen3TTS.from_pretrained(directory)
    with pytest.raises(CheckpointError, match=r"verify='sha256' needs manifest\.json .* and there is none$"):
        Qwen3TTS.from_pretrained(directory, verify="sha256")


def test_a_resized_file_is_named_by_sha256_too(checkpoints, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoints["base"][1], directory)
    with open(directory / "vocab.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(CheckpointError, match=r"vocab\.json has \d+ bytes, the manifest says \d+"):
        Qwen3TTS.from_pretrained(directory, verify="sha256")


@pytest.mark.parametrize("value", ["md5", "SHA256", "", True, False, 1, ["sha256"]])
def test_unknown_verify_values_are_refused(checkpoints, value):
    with pytest.raises(ValueError, match=r"^verify must be None, 'size' or 'sha256', got "):
        Qwen3TTS.from_pretrained(checkpoints["base"][1], verify=value)
