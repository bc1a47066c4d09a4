"""Strict accounting at load and convert time: every problem is an error that names it."""

from __future__ import annotations

import importlib.metadata
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from q3tts.convert import ConversionError, convert_checkpoint
from q3tts.standalone import CheckpointError, Qwen3TTS


def upstream_version_installed() -> str | None:
    """What the converter must record: the installed qwen-tts (none in the fast tier)."""
    try:
        return importlib.metadata.version("qwen-tts")
    except importlib.metadata.PackageNotFoundError:
        return None


def _edit_weights(directory, edit):
    """A hand-edited checkpoint: no manifest vouches for it, so only key accounting can catch it
    (the manifest size check has its own tests in test_durable_output.py)."""
    sd = load_file(str(directory / "model.safetensors"))
    edit(sd)
    save_file(sd, str(directory / "model.safetensors"))
    (directory / "manifest.json").unlink(missing_ok=True)


@pytest.fixture
def upstream_copy(checkpoints, tmp_path):
    dst = tmp_path / "up"
    shutil.copytree(checkpoints["base"][0], dst)
    return dst


@pytest.fixture
def standalone_copy(checkpoints, tmp_path):
    dst = tmp_path / "st"
    shutil.copytree(checkpoints["base"][1], dst)
    return dst


def test_loading_an_upstream_directory_without_conversion_says_convert_first(checkpoints):
    with pytest.raises(CheckpointError, match="conversion is off.*convert-ckpt"):
        Qwen3TTS.from_pretrained(checkpoints["base"][0], convert=False)


def test_missing_tensor_is_named_at_load(standalone_copy):
    _edit_weights(standalone_copy, lambda sd: sd.pop("talker.decoder.layers.1.mlp.w_down.weight"))
    with pytest.raises(CheckpointError, match=r"missing \['talker.decoder.layers.1.mlp.w_down.weight'\]"):
        Qwen3TTS.from_pretrained(standalone_copy)


def test_unexpected_tensor_is_named_at_load(standalone_copy):
    _edit_weights(standalone_copy, lambda sd: sd.__setitem__("talker.extra", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected \['talker.extra'\]"):
        Qwen3TTS.from_pretrained(standalone_copy)


def test_misshaped_tensor_is_named_at_load(standalone_copy):
    _edit_weights(standalone_copy, lambda sd: sd.__setitem__("talker.codec_head.weight", torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match="talker.codec_head.weight has shape"):
        Qwen3TTS.from_pretrained(standalone_copy)


def test_load_casts_to_requested_dtype_and_keeps_rope_fp32(checkpoints):
    m = Qwen3TTS.from_pretrained(checkpoints["base"][1], dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert m.talker.inv_freq.dtype == torch.float32 and m.code_predictor.inv_freq.dtype == torch.float32


def test_converting_a_standalone_directory_is_refused(checkpoints, tmp_path):
    with pytest.raises(ConversionError, match="already a standalone checkpoint"):
        convert_checkpoint(checkpoints["base"][1], tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("talker.model.norm.weight"), r"missing tensor\(s\) \['talker.model.norm.weight'\]"),
        (
            lambda sd: sd.__setitem__("talker.bogus.weight", torch.zeros(1)),
            r"unexpected tensor\(s\) \['talker.bogus.weight'\]",
        ),
        (
            lambda sd: sd.__setitem__("talker.codec_head.weight", torch.zeros(5, 32)),
            r"tensor talker.codec_head.weight has shape \[5, 32\]",
        ),
    ],
    ids=["missing", "extra", "misshaped"],
)
def test_bad_source_tensors_are_named_and_nothing_is_written(upstream_copy, tmp_path, edit, message):
    _edit_weights(upstream_copy, edit)
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(upstream_copy, dst)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


def test_existing_destination_is_left_untouched_without_force(upstream_copy, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(upstream_copy, dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    convert_checkpoint(upstream_copy, dst, force=True)
    assert not (dst / "keep.txt").exists() and (dst / "manifest.json").is_file()


def test_manifest_lists_every_output_file_with_its_hash(checkpoints):
    import json

    from q3tts.standalone.conversion import sha256_file

    st = checkpoints["voice_design"][1]
    manifest = json.loads((st / "manifest.json").read_text())
    files = {p.relative_to(st).as_posix() for p in st.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == files
    for name, info in manifest["files"].items():
        assert info["sha256"] == sha256_file(st / name)
    assert manifest["upstream_version"] == upstream_version_installed()
    assert set(manifest["source_files"]) == {"model.safetensors", "config.json"}


@pytest.mark.parametrize("kind", ["missing_child", "broken_symlink"])
def test_a_mistyped_local_path_is_never_taken_for_a_hub_id(tmp_path, monkeypatch, kind):
    """Issue 31: `ckpts/tiny-cv` (a typo of an existing folder's child) was reported as "cannot
    reach huggingface.co", and online it would have tried a download. A string whose parent
    exists here, or a dangling symlink, is a path: the error says so and the hub is never asked."""
    import huggingface_hub

    from q3tts.standalone.model import CheckpointError, resolve_checkpoint_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts").mkdir()
    if kind == "broken_symlink":
        (tmp_path / "ckpts" / "tiny-cv").symlink_to(tmp_path / "nowhere")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: asked.append(a))
    with pytest.raises(CheckpointError, match=r"ckpts/tiny-cv: no such directory .*read as a local path"):
        resolve_checkpoint_dir("ckpts/tiny-cv")
    assert asked == []


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None, 0.5])
def test_boolean_modes_are_strict(value):
    """Issue 31: non_streaming_mode="no" and x_vector_only_mode="no" were read as True."""
    from q3tts.standalone.prompt import PromptError, strict_flag

    with pytest.raises(PromptError, match=r"non_streaming_mode must be True or False, got"):
        strict_flag("non_streaming_mode", value)
    assert strict_flag("x", True) is True and strict_flag("x", False) is False


def test_generate_and_clone_refuse_a_string_for_a_boolean_mode(checkpoints):
    import numpy as np
    import torch

    from q3tts.standalone import Qwen3TTS

    model = Qwen3TTS.from_pretrained(checkpoints["base"][1])
    with pytest.raises(ValueError, match="non_streaming_mode must be True or False, got 'no'"):
        model.generate(input_ids=[torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]])], non_streaming_mode="no")
    wav = (np.random.default_rng(0).standard_normal(24000) * 0.1).astype(np.float32)
    with pytest.raises(ValueError, match="x_vector_only_mode must be True or False, got 'no'"):
        model.create_voice_clone_prompt((wav, 24000), ref_text="hi", x_vector_only_mode="no")
