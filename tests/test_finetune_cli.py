"""`q3tts finetune`: one epoch end to end on a tiny Base model, and bad data refused up front."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from q3tts.standalone import Qwen3TTS
from q3tts.standalone.cli import main
from q3tts.verify.cases.forward import speech_like_waveform


def _write_data(tmp_path, groups, lines=None):
    sf.write(str(tmp_path / "ref.wav"), speech_like_waveform(0), 24000)
    g = torch.Generator().manual_seed(0)
    rows = lines or [
        {
            "audio": "a.wav",
            "text": t,
            "ref_audio": "ref.wav",
            "audio_codes": torch.randint(0, 16, (n, groups), generator=g).tolist(),
        }
        for t, n in (("hello there", 4), ("one two", 3))
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_finetune_command_writes_loadable_epochs(checkpoints, tmp_path):
    st_dir = checkpoints["base"][1]
    groups = Qwen3TTS.from_pretrained(st_dir).config.talker.num_code_groups
    data = _write_data(tmp_path, groups)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            str(st_dir),
            "--train-jsonl",
            str(data),
            "--speaker-name",
            "newvoice",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    for e in (0, 1):
        m = Qwen3TTS.from_pretrained(out / f"checkpoint-epoch-{e}")
        assert m.config.tts_model_type == "custom_voice" and "newvoice" in m.get_supported_speakers()
    assert not list(out.glob(".*"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.pop("audio_codes"), "train.jsonl:2: missing field 'audio_codes'"),
        (lambda r: r.update(text="  "), "train.jsonl:2: empty text"),
        (lambda r: r["audio_codes"][1].append(0), "train.jsonl:2: audio_codes frame 1 has"),
        (lambda r: r.update(ref_audio="nope.wav"), "train.jsonl:2: cannot read ref_audio"),
    ],
)
def test_bad_data_is_refused_before_training(checkpoints, tmp_path, edit, message):
    st_dir = checkpoints["base"][1]
    good = {"audio": "a.wav", "text": "hi", "ref_audio": "ref.wav", "audio_codes": [[1, 2, 3, 4]] * 3}
    bad = json.loads(json.dumps(good))
    edit(bad)
    data = _write_data(tmp_path, 4, [good, bad])
    res = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            str(st_dir),
            "--train-jsonl",
            str(data),
            "--speaker-name",
            "x",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_wrong_sample_rate_refused(checkpoints, tmp_path):
    st_dir = checkpoints["base"][1]
    sf.write(str(tmp_path / "ref16k.wav"), speech_like_waveform(0)[:16000], 16000)
    data = _write_data(tmp_path, 4, [{"text": "hi", "ref_audio": "ref16k.wav", "audio_codes": [[1, 2, 3, 4]]}])
    res = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            str(st_dir),
            "--train-jsonl",
            str(data),
            "--speaker-name",
            "x",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 1 and "is 16000 Hz" in res.output, res.output
