"""Direct loading: an upstream checkpoint is converted once into the cache by convert-ckpt's own
code path, reused, re-converted when the source changes, safe under concurrent loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from q3tts.convert import convert_checkpoint
from q3tts.standalone import CheckpointError, Qwen3TTS
from q3tts.standalone.cli import main as q3tts


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("Q3TTS_CACHE", str(root))
    return root


@pytest.fixture
def upstream(checkpoints, tmp_path):
    dst = tmp_path / "up"
    shutil.copytree(checkpoints["custom_voice"][0], dst)
    return dst


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_cached_conversion_is_byte_identical_to_convert_ckpt(upstream, cache, tmp_path, capsys):
    model = Qwen3TTS.from_pretrained(upstream)
    err = capsys.readouterr().err
    (entry,) = _entries(cache)
    assert f"converting {upstream} into {entry}" in err and "converted in" in err
    convert_checkpoint(upstream, tmp_path / "explicit")
    assert _files(entry) == _files(tmp_path / "explicit")
    ref = Qwen3TTS.from_pretrained(tmp_path / "explicit")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_second_load_reuses_and_changed_source_converts_again(upstream, cache, capsys):
    Qwen3TTS.from_pretrained(upstream)
    capsys.readouterr()
    Qwen3TTS.from_pretrained(upstream)
    assert "converting" not in capsys.readouterr().err and len(_entries(cache)) == 1
    cfg = json.loads((upstream / "generation_config.json").read_text())
    (upstream / "generation_config.json").write_text(json.dumps({**cfg, "top_k": 7}))
    m = Qwen3TTS.from_pretrained(upstream)
    assert "converting" in capsys.readouterr().err and len(_entries(cache)) == 2
    assert m.generate_defaults["top_k"] == 7


def test_concurrent_loads_share_one_result(upstream, cache):
    code = (
        "import sys; from q3tts.standalone import Qwen3TTS; "
        "m = Qwen3TTS.from_pretrained(sys.argv[1]); print(m.checkpoint_dir)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(upstream)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "Q3TTS_CACHE": str(cache)},
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dirs = {o[0].strip() for o in outs}
    (entry,) = _entries(cache)
    assert dirs == {str(entry)} and not [p for p in cache.iterdir() if ".partial-" in p.name]
    Qwen3TTS.from_pretrained(entry)  # intact: the manifest sizes hold


def test_no_convert_refuses(upstream, cache, tmp_path):
    with pytest.raises(CheckpointError, match="conversion is off"):
        Qwen3TTS.from_pretrained(upstream, convert=False)
    r = CliRunner().invoke(
        q3tts,
        [
            "synthesize",
            "--model",
            str(upstream),
            "--speaker",
            "alice",
            "--text",
            "Hi.",
            "--out",
            str(tmp_path / "x.wav"),
            "--no-convert",
        ],
    )
    assert r.exit_code == 1 and "conversion is off" in r.output
    assert not cache.exists() or not _entries(cache)


def test_cli_loads_an_upstream_directory(upstream, cache, tmp_path):
    r = CliRunner().invoke(
        q3tts,
        [
            "synthesize",
            "--model",
            str(upstream),
            "--speaker",
            "alice",
            "--text",
            "Hi.",
            "--greedy",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "x.wav"),
        ],
    )
    assert r.exit_code == 0 and "converting" in r.output and (tmp_path / "x.wav").is_file(), r.output


def test_neither_format_is_named(tmp_path, cache):
    d = tmp_path / "odd"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="neither a standalone checkpoint .* nor an upstream"):
        Qwen3TTS.from_pretrained(d)


def test_partial_download_leaves_nothing_in_the_cache(upstream, cache):
    weights = upstream / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r"cannot be converted .*truncated"):
        Qwen3TTS.from_pretrained(upstream)
    assert not _entries(cache) and not [p for p in cache.iterdir() if ".partial-" in p.name]


def test_unwritable_cache_is_named(upstream, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        ro = Path("/proc/q3tts-cache")  # root ignores permission bits; /proc refuses everyone
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
    monkeypatch.setenv("Q3TTS_CACHE", str(ro))
    with pytest.raises(CheckpointError, match=rf"{ro}: the conversion cache is not writable.*Q3TTS_CACHE"):
        Qwen3TTS.from_pretrained(upstream)
