"""The manifest is the whole truth about a converted directory (issue 31, findings 1 and 4):
the loader reads only the files it lists, `convert-ckpt --check` reports every unlisted file and
fails on those a loader would read, and a manifest whose paths leave the directory or whose
entries are not objects is one clear error before any path of it is touched."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from q3tts.convert.cli import main as convert_cli
from q3tts.standalone import CheckpointError, Qwen3TTS

SHARD = "model-00001-of-00001.safetensors"


@pytest.fixture
def converted(checkpoints, tmp_path):
    dst = tmp_path / "st"
    shutil.copytree(checkpoints["base"][1], dst)
    return dst


def plant_index(directory) -> None:
    """A weights index and a shard of all-7.0 tensors dropped into a converted directory."""
    sd = load_file(str(directory / "model.safetensors"))
    planted = {k: torch.full_like(v, 7.0) if v.is_floating_point() else v for k, v in sd.items()}
    save_file(planted, str(directory / SHARD))
    index = {"metadata": {}, "weight_map": {k: SHARD for k in planted}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def edit_manifest(directory, edit) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest["files"])
    path.write_text(json.dumps(manifest))


def test_a_planted_index_and_shard_are_not_loaded(converted):
    plant_index(converted)
    m = Qwen3TTS.from_pretrained(converted)
    w = m.talker.codec_head.weight
    assert not torch.all(w == 7.0), "the planted shard was loaded"
    assert torch.equal(w, load_file(str(converted / "model.safetensors"))["talker.codec_head.weight"])


def test_check_fails_on_a_planted_index_and_shard_and_notes_other_unlisted_files(converted):
    plant_index(converted)
    (converted / "NOTES.md").write_text("mine")
    result = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert result.exit_code == 1, result.output
    out = result.output
    for name in ("model.safetensors.index.json", SHARD):
        assert f"convert-ckpt: unlisted: {converted / name}: not in the manifest, and a loader reads" in out
    assert f"convert-ckpt: note: {converted / 'NOTES.md'}: not in the manifest (no loader reads it)" in out
    assert "2 unlisted file(s) a loader would read" in out.splitlines()[-1]


def test_check_passes_with_only_a_harmless_unlisted_file(converted):
    (converted / "NOTES.md").write_text("mine")
    result = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert result.exit_code == 0 and "ok:" in result.output and "note:" in result.output, result.output


def test_an_unlisted_file_in_the_speech_tokenizer_is_reported(converted):
    shutil.copy(converted / "speech_tokenizer" / "config.json", converted / "speech_tokenizer" / "extra.json")
    result = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert result.exit_code == 1 and "speech_tokenizer/extra.json: not in the manifest" in result.output


@pytest.mark.parametrize(
    "entry, message",
    [
        ("../../../../../etc/passwd", r"entry '\.\./\.\./\.\./\.\./\.\./etc/passwd' leaves the directory"),
        ("/etc/passwd", r"entry '/etc/passwd' is an absolute path"),
        ("speech_tokenizer/../../x", r"leaves the directory"),
    ],
    ids=["dotdot", "absolute", "inner-dotdot"],
)
def test_a_manifest_path_outside_the_directory_is_refused_before_any_stat(converted, monkeypatch, entry, message):
    edit_manifest(converted, lambda files: files.__setitem__(entry, {"sha256": "0" * 64, "size": 1}))
    seen = []
    real_stat = os.stat

    def spy(path, *a, **k):
        seen.append(str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", spy)
    with pytest.raises(CheckpointError, match=message):
        Qwen3TTS.from_pretrained(converted)
    assert not [p for p in seen if "passwd" in p or p.endswith("/x")], seen
    monkeypatch.undo()
    result = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert result.exit_code == 1 and "damaged manifest" in result.output and "passwd: " not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.__setitem__("config.json", ["not", "an", "object"]), r"entry 'config.json' is a list"),
        (lambda f: f["config.json"].__setitem__("size", "12"), r"entry 'config.json': size '12' is not"),
        (
            lambda f: f["config.json"].__setitem__("size", True),
            r"entry .config.json.: size True is not a non-negative integer",
        ),
        (
            lambda f: f["config.json"].__setitem__("sha256", 5),
            r"entry .config.json.: sha256 5 is not 64 lower-case hex",
        ),
    ],
    ids=["list", "size-str", "size-bool", "sha-int"],
)
def test_a_manifest_entry_of_the_wrong_type_is_one_clear_error(converted, edit, message):
    edit_manifest(converted, edit)
    with pytest.raises(CheckpointError, match=r"manifest.json: damaged manifest \(" + message):
        Qwen3TTS.from_pretrained(converted)


def test_an_index_shard_the_manifest_does_not_list_is_refused(converted):
    """A listed index that names an unlisted shard: the shard is not read."""
    plant_index(converted)
    index = converted / "model.safetensors.index.json"
    (converted / "model.safetensors").unlink()
    edit_manifest(
        converted,
        lambda files: (
            files.pop("model.safetensors"),
            files.__setitem__(index.name, {"sha256": "0" * 64, "size": index.stat().st_size}),
        ),
    )
    with pytest.raises(CheckpointError, match=rf"shard {SHARD} is not in the manifest"):
        Qwen3TTS.from_pretrained(converted)
