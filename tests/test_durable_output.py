"""The durable output writer under signals, crashes, full disks, concurrent writers and umasks,
and damage detection on load (issue: outputs that survive signals, crashes and full disks).

Checkpoints here are written straight from the layout map (upstream names and shapes, no
qwen_tts needed), so these tests run in the fast tier.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import q3tts.standalone.conversion as convert_mod
import q3tts.standalone.output_dir as output_dir
from q3tts.convert import ConversionError, convert_checkpoint
from q3tts.convert.cli import main as convert_cli
from q3tts.standalone import CheckpointError, Qwen3TTS
from q3tts.standalone.config import Qwen3TTSConfig
from q3tts.standalone.layout import plan
from q3tts.verify.fixtures.writer import tiny_config


def write_layout_checkpoint(dst: Path, cfg: dict, seed: int = 0, big: bool = False) -> Path:
    """An upstream-layout checkpoint made from the layout map: every tensor the map reads, with
    its planned shape. ``big`` fills with zeros (fast to make) for size-only uses."""
    dst.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for e in plan(Qwen3TTSConfig.from_upstream(cfg)):
        for name, shape in zip(e.sources, e.source_shapes):
            tensors[name] = torch.zeros(shape) if big else torch.randn(shape, generator=g) * 0.1
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "generation_config.json").write_text(json.dumps({"top_k": 50}))
    return dst


@pytest.fixture(scope="module")
def small_src(tmp_path_factory):
    return write_layout_checkpoint(tmp_path_factory.mktemp("small") / "up", tiny_config("custom_voice"))


@pytest.fixture(scope="module")
def big_src(tmp_path_factory):
    """About 620 MB of weights (a released-size text embedding on a tiny model): long enough to
    interrupt mid-write."""
    cfg = tiny_config("custom_voice")
    cfg["talker_config"].update(text_vocab_size=151936, text_hidden_size=1024)
    return write_layout_checkpoint(tmp_path_factory.mktemp("big") / "up", cfg, big=True)


def _partials(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name]


def _start_cli(src: Path, dst: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "q3tts.convert.cli", str(src), str(dst), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
        **popen,
    )


def _sigint_default() -> None:
    # A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler; the child must see Ctrl-C as a user's terminal sends it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_mid_write(parent: Path, proc: subprocess.Popen, timeout: float = 60.0) -> Path:
    """Wait until the partial directory holds part of the weights, then return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _partials(parent):
            w = p / "model.safetensors"
            if w.is_file() and w.stat().st_size > 50_000_000:
                return p
        if proc.poll() is not None:
            raise AssertionError(f"conversion ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.005)
    raise AssertionError("no partial output appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_mid_write_removes_the_partial_and_exits_128_plus_signal(big_src, tmp_path, sig):
    dst = tmp_path / "out"
    proc = _start_cli(big_src, dst)
    _wait_mid_write(tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"convert-ckpt: interrupted ({sig.name}); nothing was written to DST"], err
    assert not dst.exists() and not _partials(tmp_path)


def test_partial_left_by_sigkill_is_removed_by_the_next_run(big_src, small_src, tmp_path):
    dst = tmp_path / "out"
    proc = _start_cli(big_src, dst)
    partial = _wait_mid_write(tmp_path, proc)
    proc.kill()
    proc.wait()
    assert partial.is_dir()  # SIGKILL cannot be handled: the litter is there ...
    r = CliRunner().invoke(convert_cli, [str(small_src), str(dst), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"removed {partial}, left behind by an interrupted run" in r.output  # ... and the next run says so
    assert not _partials(tmp_path) and (dst / "manifest.json").is_file()


def test_partial_of_a_live_process_is_never_removed(small_src, tmp_path):
    dst = tmp_path / "out"
    live = tmp_path / ".out.partial-live"
    live.mkdir()
    (live / output_dir.OWNER_FILE).write_text(
        json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time() - 5})
    )
    unknown_host = tmp_path / ".out.partial-elsewhere"
    unknown_host.mkdir()
    (unknown_host / output_dir.OWNER_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "started": 0}))
    convert_checkpoint(small_src, dst)
    assert live.is_dir() and unknown_host.is_dir()


def test_partial_of_an_exited_process_is_removed(small_src, tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = tmp_path / ".out.partial-dead"
    partial.mkdir()
    (partial / output_dir.OWNER_FILE).write_text(
        json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename, "started": time.time() - 5})
    )
    notes = []
    convert_checkpoint(small_src, tmp_path / "out", say=notes.append)
    assert not partial.exists() and notes == [f"removed {partial}, left behind by an interrupted run"]


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root.parent).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_output_permissions_follow_the_umask(small_src, tmp_path, umask, dir_mode, file_mode):
    os.chmod(small_src / "generation_config.json", 0o444)  # a read-only source (hub cache) must not leak its mode
    dst = tmp_path / "out"
    previous = os.umask(umask)  # the umask is read at each write (output_dir.current_umask): set it here, for this call
    try:
        convert_checkpoint(small_src, dst)
    finally:
        os.umask(previous)
    modes = _modes(dst)
    assert modes.pop("out") == dir_mode
    assert modes and all(m == (dir_mode if (tmp_path / p).is_dir() else file_mode) for p, m in modes.items()), modes


def test_files_are_fsynced_before_the_rename_and_the_parent_after(small_src, tmp_path, monkeypatch):
    events = []
    real_tree, real_dir, real_rename = output_dir._fsync_tree, output_dir._fsync_dir, output_dir.rename_no_replace
    monkeypatch.setattr(output_dir, "_fsync_tree", lambda p: (events.append(("tree", p.name)), real_tree(p)))
    monkeypatch.setattr(output_dir, "_fsync_dir", lambda p: (events.append(("dir", p.name)), real_dir(p)))
    monkeypatch.setattr(
        output_dir, "rename_no_replace", lambda a, b: (events.append(("rename", b.name)), real_rename(a, b))
    )
    convert_checkpoint(small_src, tmp_path / "out")
    kinds = [e[0] for e in events]
    assert kinds[0] == "tree" and kinds.count("rename") == 1, events  # the whole tree first ...
    assert events[kinds.index("rename") + 1 :] == [("dir", tmp_path.name)], events  # ... the parent after the rename


@pytest.mark.parametrize("force", [False, True])
def test_destination_appearing_midway_is_not_clobbered_without_force(small_src, tmp_path, monkeypatch, force):
    dst = tmp_path / "out"
    real = convert_mod._write_configs

    def concurrent_writer(*a):
        dst.mkdir()
        (dst / "theirs.txt").write_text("the other writer's output")
        return real(*a)

    monkeypatch.setattr(convert_mod, "_write_configs", concurrent_writer)
    if force:
        convert_checkpoint(small_src, dst, force=True)
        assert (dst / "manifest.json").is_file() and not (dst / "theirs.txt").exists()
    else:
        with pytest.raises(ConversionError, match="appeared while this run was writing"):
            convert_checkpoint(small_src, dst)
        assert sorted(p.name for p in dst.iterdir()) == ["theirs.txt"]
    assert not _partials(tmp_path)


def test_write_failure_midway_names_the_path_and_cleans_up(small_src, tmp_path):
    dst = tmp_path / "out"

    def limit():  # the weights file is about 1.3 MB; stop it at 200 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    r = subprocess.run(
        [sys.executable, "-m", "q3tts.convert.cli", str(small_src), str(dst), "--no-progress"],
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "model.safetensors: write failed (File too large)" in lines[0] and "Traceback" not in r.stderr
    assert not dst.exists() and not _partials(tmp_path)


@pytest.fixture
def converted(small_src, tmp_path):
    dst = tmp_path / "st"
    convert_checkpoint(small_src, dst)
    return dst


def test_truncated_file_is_named_on_load(converted):
    Qwen3TTS.from_pretrained(converted)  # intact: loads
    weights = converted / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(
        CheckpointError, match=rf"model.safetensors has {size - 100} bytes, the manifest says {size}.*convert it again"
    ):
        Qwen3TTS.from_pretrained(converted)


def test_missing_side_file_is_named_on_load(converted):
    (converted / "generation_config.json").unlink()
    with pytest.raises(CheckpointError, match="generation_config.json is missing"):
        Qwen3TTS.from_pretrained(converted)


def test_check_rehashes_every_file(converted):
    ok = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert ok.exit_code == 0 and "ok:" in ok.output, ok.output
    weights = converted / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit, same size: only the hash can see it
    weights.write_bytes(bytes(data))
    (converted / "vocab.json").unlink(missing_ok=True)
    (converted / "generation_config.json").write_text("{}")
    bad = CliRunner().invoke(convert_cli, ["--check", str(converted)])
    assert bad.exit_code == 1, bad.output
    assert "model.safetensors: sha256 differs" in bad.output
    assert "generation_config.json: 2 bytes, the manifest says" in bad.output
    assert "of" in bad.output.splitlines()[-1] and "do not match the manifest" in bad.output
    # The size check on load sees the size change (the flipped bit needs --check):
    with pytest.raises(CheckpointError, match="generation_config.json has 2 bytes"):
        Qwen3TTS.from_pretrained(converted)
