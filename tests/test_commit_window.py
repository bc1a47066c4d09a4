"""No owner-less partial (issue 31, finding 6): a SIGKILL in the commit window (after the files
are complete, before the rename) leaves a partial directory with its owner record, which the
next run removes and names; a complete partial without a record (a run of an older version, or
one killed while removing it) is removed and named too, never left for an hour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import q3tts.standalone.output_dir as output_dir
from q3tts.standalone.output_dir import OWNER_FILE, OutputDir

KILL_IN_COMMIT = """
import os, signal, sys
import q3tts.standalone.output_dir as od
def killed(path):  # the commit window: files complete, fsync under way, rename not yet done
    os.kill(os.getpid(), signal.SIGKILL)
od._fsync_tree = killed
with od.OutputDir(sys.argv[1]) as out:
    (out.path / "weights.bin").write_bytes(b"x" * 4096)
    out.commit()
"""


def _partials(root):
    return sorted(p for p in root.iterdir() if ".partial-" in p.name)


def test_a_kill_in_the_commit_window_leaves_the_owner_record_and_the_next_run_removes_it(tmp_path):
    dst = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_IN_COMMIT, str(dst)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (partial,) = _partials(tmp_path)
    assert (partial / "weights.bin").is_file() and not dst.exists()
    assert (partial / OWNER_FILE).is_file(), "the commit window left a partial without its owner record"
    notes = []
    with OutputDir(dst, say=notes.append) as out:
        (out.path / "weights.bin").write_bytes(b"y")
        out.commit()
    assert notes == [f"removed {partial}, left behind by an interrupted run"]
    assert _partials(tmp_path) == [] and sorted(p.name for p in dst.iterdir()) == ["weights.bin"]


def test_a_complete_partial_without_an_owner_record_is_removed_and_named(tmp_path):
    partial = tmp_path / ".out.partial-old"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 1024)  # complete, its record already gone
    notes = []
    with OutputDir(tmp_path / "out", say=notes.append) as out:
        out.commit()
    assert not partial.exists() and notes == [f"removed {partial}, left behind by an interrupted run"]


def test_an_empty_young_partial_without_a_record_is_left_to_its_writer(tmp_path):
    """Between mkdtemp and writing the record a live writer's directory is empty: kept."""
    young = tmp_path / ".out.partial-starting"
    young.mkdir()
    old = tmp_path / ".out.partial-ancient"
    old.mkdir()
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    with OutputDir(tmp_path / "out") as out:
        out.commit()
    assert young.is_dir() and not old.exists()


def test_the_record_is_in_the_partial_until_the_rename_and_gone_after(tmp_path, monkeypatch):
    seen = []
    real = output_dir.rename_no_replace

    def rename(a, b):
        seen.append((a / OWNER_FILE).is_file())
        real(a, b)

    monkeypatch.setattr(output_dir, "rename_no_replace", rename)
    with OutputDir(tmp_path / "out") as out:
        (out.path / "f").write_text("x")
        out.commit()
    assert seen == [True] and not (tmp_path / "out" / OWNER_FILE).exists()
