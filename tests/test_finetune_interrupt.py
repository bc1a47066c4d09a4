"""Interrupting `q3tts finetune` loses at most the current epoch; a half-written checkpoint never
appears. Deterministic interruptions (mid-epoch, mid-checkpoint-write) in process, and real
SIGINT / SIGTERM / SIGHUP sent to a running `q3tts finetune` process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from q3tts.convert.cli import main as convert_cli
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.cli import main
from q3tts.standalone.output_dir import Interrupted
from q3tts.verify.cases.forward import speech_like_waveform

SPEAKER = "newvoice"


def _data(tmp_path: Path, groups: int) -> Path:
    sf.write(str(tmp_path / "ref.wav"), speech_like_waveform(0), 24000)
    g = torch.Generator().manual_seed(0)
    rows = [
        {"text": t, "ref_audio": "ref.wav", "audio_codes": torch.randint(0, 16, (n, groups), generator=g).tolist()}
        for t, n in (("hello there", 4), ("one two", 3))
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(st_dir, data, out, epochs):
    return [
        "finetune",
        "--model",
        str(st_dir),
        "--train-jsonl",
        str(data),
        "--speaker-name",
        SPEAKER,
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--lr",
        "1e-3",
        "--no-progress",
    ]


@pytest.fixture
def job(checkpoints, tmp_path):
    st_dir = checkpoints["base"][1]
    groups = Qwen3TTS.from_pretrained(st_dir).config.talker.num_code_groups
    return st_dir, _data(tmp_path, groups), tmp_path / "out"


def assert_only_finished_epochs(out: Path, finished: int) -> None:
    """OUT holds checkpoint-epoch-0..finished-1, each complete (every file re-hashed against its
    manifest) and loadable with the new speaker, and nothing else: no partial, no later epoch."""
    assert sorted(p.name for p in out.iterdir()) == [f"checkpoint-epoch-{e}" for e in range(finished)]
    for e in range(finished):
        ckpt = out / f"checkpoint-epoch-{e}"
        check = CliRunner().invoke(convert_cli, ["--check", str(ckpt)])
        assert check.exit_code == 0 and "ok:" in check.output, check.output
        model = Qwen3TTS.from_pretrained(ckpt)
        assert model.config.tts_model_type == "custom_voice" and SPEAKER in model.get_supported_speakers()


def _message_re(sig_name: str, epoch: int | str) -> str:
    return rf"q3tts: interrupted \({sig_name}\) during epoch {epoch}; that epoch is lost and left no checkpoint"


def _kept(out: Path, finished: int) -> str:
    return "; finished epochs kept: " + ", ".join(str(out / f"checkpoint-epoch-{e}") for e in range(finished))


_CLI = "import torch; torch.set_num_threads(1); from q3tts.standalone.cli import main; main()"

# The CLI sending a real signal to itself from inside the training loop: the 6th forward is
# epoch 2's second micro-batch (2 items, batch 1), i.e. mid-epoch, after two checkpoints.
_SIGNAL_MID_EPOCH = """
import os, signal, torch
import q3tts.standalone.finetune as ft
torch.set_num_threads(1)
forward, calls = ft.training_forward, [0]
def forward_then_signal(*a, **kw):
    calls[0] += 1
    if calls[0] == 6:
        os.kill(os.getpid(), signal.{sig})
    return forward(*a, **kw)
ft.training_forward = forward_then_signal
from q3tts.standalone.cli import main
main()
"""


def _start(code: str, st_dir, data, out, epochs: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *_args(st_dir, data, out, epochs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


def _sigint_default() -> None:
    # A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler; the child must see Ctrl-C as a user's terminal sends it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_mid_epoch_keeps_finished_epochs(job, sig):
    st_dir, data, out = job
    proc = _start(_SIGNAL_MID_EPOCH.format(sig=sig.name), st_dir, data, out, epochs=5)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert _last_line(err) == _message_re(sig.name, 2).replace("\\", "") + _kept(out, 2), err
    assert_only_finished_epochs(out, 2)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Interrupted(signal.SIGTERM)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_checkpoint_write_leaves_no_partial(job, monkeypatch, exc):
    """The second epoch's checkpoint is interrupted after its weights are half on disk."""
    import safetensors.torch as st

    st_dir, data, out = job
    save = st.save_file
    writes = {"n": 0}

    def half_then_interrupt(tensors, filename, metadata=None):
        writes["n"] += 1
        if writes["n"] == 2:
            save(dict(list(tensors.items())[: len(tensors) // 2]), filename, metadata=metadata)
            raise exc
        return save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", half_then_interrupt)
    res = CliRunner().invoke(main, _args(st_dir, data, out, epochs=4))
    name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
    assert res.exit_code == (130 if name == "SIGINT" else 143), res.output
    assert re.search(_message_re(name, 1) + re.escape(_kept(out, 1)), res.output), res.output
    assert_only_finished_epochs(out, 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_to_a_running_finetune(job, sig):
    """A real signal from outside, the moment the second checkpoint appears (so usually while the
    writer finishes it, or in the next epoch): exit 128 + signal, one clear line, and exactly the
    epochs the line says are kept are on disk, each intact; nothing half-written."""
    st_dir, data, out = job
    proc = _start(_CLI, st_dir, data, out, epochs=100000)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-epoch-1").is_dir():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no second epoch: {proc.communicate()}")
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    m = re.fullmatch(_message_re(sig.name, r"(\d+)") + r"; finished epochs kept: (.*)", _last_line(err))
    assert m, err
    finished = int(m.group(1))
    assert finished >= 2 and _kept(out, finished) == "; finished epochs kept: " + m.group(2)
    assert_only_finished_epochs(out, finished)
