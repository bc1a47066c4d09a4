"""Every interrupt of a command that writes is one line and a conventional exit (issue 31,
finding 5): a real SIGTERM/SIGINT delivered to this process at the moment a command writes (the
first-load conversion into the cache, the output file), through the one mechanism
(standalone/interrupts.py) that convert-ckpt uses too; nothing is left half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import q3tts.standalone.conversion as conversion
from q3tts.convert.cli import main as convert_cli
from q3tts.standalone.cli import main as q3tts
from q3tts.verify.cases.forward import speech_like_waveform

SIGNALS = [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]


class Unhandled(Exception):
    """A signal no command handler took: the test fails instead of pytest dying of it."""


@pytest.fixture(autouse=True)
def signals_fail_the_test_when_unhandled():
    def fail(signum, _frame):
        raise Unhandled(signal.Signals(signum).name)

    previous = {s: signal.signal(s, fail) for s in (signal.SIGTERM, signal.SIGHUP)}
    # SIGINT as a CLI started from a terminal has it (KeyboardInterrupt). A suite started in the
    # background (`cmd &`) inherits SIGINT ignored and Python installs no handler: the SIGINT cases
    # then exited 0 in such a fast-tier run (test_durable_output.py sets SIG_DFL in its children).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for s, h in previous.items():
        signal.signal(s, h)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("Q3TTS_CACHE", str(root))
    return root


@pytest.fixture
def upstream(checkpoints, tmp_path):
    dst = tmp_path / "up"
    shutil.copytree(checkpoints["base"][0], dst)
    return dst


def _signal_when(monkeypatch, module, name, sig):
    """Deliver ``sig`` to this process when ``module.name`` is called (after it ran)."""
    real = getattr(module, name)

    def then_signal(*a, **k):
        out = real(*a, **k)
        os.kill(os.getpid(), sig)
        return out

    monkeypatch.setattr(module, name, then_signal)


def _one_line(result, prog, signame, note):
    lines = [line for line in result.stderr.splitlines() if line.strip() and ": converting " not in line]
    assert lines == [f"{prog}: interrupted ({signame}); {note}"], result.stderr
    assert "Traceback" not in result.stderr


def _no_litter(*roots):
    left = [p for root in roots if root.exists() for p in root.rglob("*") if ".partial" in p.name]
    assert not left, left


@pytest.mark.parametrize("sig, code, name", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_synthesize_interrupted_while_converting_on_first_load(upstream, cache, tmp_path, monkeypatch, sig, code, name):
    _signal_when(monkeypatch, conversion, "write_manifest", sig)  # the conversion's last write
    wav = tmp_path / "ref.wav"
    sf.write(str(wav), speech_like_waveform(0), 24000)
    out = tmp_path / "x.wav"
    args = ["synthesize", "--model", str(upstream), "--text", "Hi.", "--ref-audio", str(wav), "--out", str(out)]
    result = CliRunner().invoke(q3tts, args)
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    _one_line(result, "q3tts", name, "nothing was left half-written")
    assert not out.exists() and not [p for p in cache.iterdir() if p.is_dir()]
    _no_litter(cache, tmp_path)


def test_synthesize_interrupted_while_writing_the_wav_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    _signal_when(monkeypatch, sf, "write", signal.SIGTERM)
    out = tmp_path / "x.wav"
    args = ["synthesize", "--model", str(checkpoints["custom_voice"][1]), "--speaker", "alice", "--text", "Hi."]
    result = CliRunner().invoke(q3tts, [*args, "--greedy", "--max-new-tokens", "3", "--out", str(out)])
    assert result.exit_code == 143, (result.stderr, result.exception)
    _one_line(result, "q3tts", "SIGTERM", "nothing was left half-written")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_encode_interrupted_while_writing_leaves_no_partial(checkpoints, tmp_path, monkeypatch):
    wav = tmp_path / "ref.wav"
    sf.write(str(wav), speech_like_waveform(0), 24000)
    _signal_when(monkeypatch, np, "save", signal.SIGTERM)
    out = tmp_path / "codes"
    result = CliRunner().invoke(q3tts, ["encode", str(wav), "--model", str(checkpoints["base"][1]), "--out", str(out)])
    assert result.exit_code == 143, (result.stderr, result.exception)
    _one_line(result, "q3tts", "SIGTERM", "nothing was left half-written")
    assert list(out.iterdir()) == []


def test_prepare_data_interrupted_writes_nothing(checkpoints, tmp_path, monkeypatch):
    import q3tts.standalone.model as model_mod

    wav = tmp_path / "ref.wav"
    sf.write(str(wav), speech_like_waveform(0), 24000)
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"audio": str(wav), "text": "hello", "ref_audio": str(wav)}) + "\n")
    _signal_when(monkeypatch, model_mod.Qwen3TTS, "encode_audio", signal.SIGHUP)
    out = tmp_path / "train.jsonl"
    result = CliRunner().invoke(
        q3tts, ["prepare-data", str(raw), "--model", str(checkpoints["base"][1]), "--out", str(out)]
    )
    assert result.exit_code == 129, (result.stderr, result.exception)
    _one_line(result, "q3tts", "SIGHUP", "nothing was written to --out")
    assert not out.exists()
    _no_litter(tmp_path)


def test_finetune_interrupted_while_converting_its_base(upstream, cache, tmp_path, monkeypatch):
    _signal_when(monkeypatch, conversion, "write_manifest", signal.SIGTERM)
    train = tmp_path / "train.jsonl"
    train.write_text("")
    args = ["finetune", "--model", str(upstream), "--train-jsonl", str(train), "--speaker-name", "spk"]
    result = CliRunner().invoke(q3tts, [*args, "--out", str(tmp_path / "ft")])
    assert result.exit_code == 143, (result.stderr, result.exception)
    assert "Traceback" not in result.stderr and "interrupted (SIGTERM)" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "ft").exists() and not [p for p in cache.iterdir() if p.is_dir()]


def test_convert_ckpt_uses_the_same_mechanism(upstream, tmp_path, monkeypatch):
    _signal_when(monkeypatch, conversion, "write_manifest", signal.SIGTERM)
    result = CliRunner().invoke(convert_cli, [str(upstream), str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 143
    _one_line(result, "convert-ckpt", "SIGTERM", "nothing was written to DST")


def test_every_writing_command_is_wrapped():
    for name in ("synthesize", "encode", "prepare-data", "finetune"):
        callback = q3tts.commands[name].callback
        assert callback.__module__ and getattr(callback, "__wrapped__", None), (
            f"{name}: not wrapped by exit_on_interrupt"
        )
    assert getattr(convert_cli.callback, "__wrapped__", None)


def _handler_installed(pid: int, sig: int) -> bool:
    """Whether process ``pid`` catches ``sig`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (sig - 1)))


@pytest.mark.parametrize("command", ["convert-ckpt", "q3tts"])
def test_a_signal_while_the_command_still_imports_is_one_line(upstream, tmp_path, command):
    """The first seconds of a process go to importing torch: a SIGTERM then is one line too, as
    soon as the command runs (the packages import nothing heavy before it)."""
    import subprocess
    import sys
    import time

    script = Path(sys.executable).parent / command
    args = [str(upstream), str(tmp_path / "out")]
    if command == "q3tts":
        args = ["synthesize", "--model", str(upstream), "--text", "Hi.", "--out", str(tmp_path / "x.wav")]
    env = {**os.environ, "Q3TTS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([str(script), *args], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not _handler_installed(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    prog = "convert-ckpt" if command == "convert-ckpt" else "q3tts"
    note = "nothing was written to DST" if command == "convert-ckpt" else "nothing was left half-written"
    assert proc.returncode == 143, err
    assert [line for line in err.splitlines() if line.strip()] == [f"{prog}: interrupted (SIGTERM); {note}"], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.wav").exists()


def test_the_entry_points_import_nothing_heavy_before_the_command_runs():
    """So the handler is in place for the seconds torch takes to import (issue 31: a signal in
    convert-ckpt's first seconds exited without the message)."""
    import subprocess
    import sys

    code = "import sys, q3tts.convert.cli, q3tts.standalone.cli; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
