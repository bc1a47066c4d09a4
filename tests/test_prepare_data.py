"""q3tts prepare-data: upstream's fine-tuning JSONL gets audio_codes from the standalone encoder,
equal to upstream's Qwen3TTSTokenizer.encode over the same 32-item batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from q3tts.standalone.cli import main as q3tts
from q3tts.verify.cases.forward import speech_like_waveform

pytestmark = pytest.mark.reference  # drives upstream qwen-tts


def _raw(tmp_path, n=3):
    lines = []
    for i in range(n):
        wav = speech_like_waveform(i)[: 24000 * (i + 1) // 2 + 777 * i]
        sf.write(tmp_path / f"u{i}.wav", wav, 24000)
        lines.append({"audio": f"u{i}.wav", "text": f"Utterance number {i}.", "ref_audio": "u0.wav"})
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return raw, lines


def test_prepare_data_matches_upstream_batch_encode(checkpoints, load_models, tmp_path):
    raw, lines = _raw(tmp_path)
    out = tmp_path / "train.jsonl"
    r = CliRunner().invoke(
        q3tts, ["prepare-data", str(raw), "--model", str(checkpoints["base"][1]), "--out", str(out), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["text"] for x in rows] == [x["text"] for x in lines] and "_audio_path" not in rows[0]
    wrapper, _ = load_models("base", torch.float32)
    upstream = wrapper.model.speech_tokenizer.encode([str(tmp_path / x["audio"]) for x in lines]).audio_codes
    for row, ref in zip(rows, upstream):
        assert np.array_equal(np.asarray(row["audio_codes"]), ref.cpu().numpy())


def test_prepare_data_refuses_bad_lines(checkpoints, tmp_path):
    raw, _ = _raw(tmp_path, 1)
    raw.write_text(raw.read_text() + json.dumps({"audio": "missing.wav", "text": "x", "ref_audio": "u0.wav"}) + "\n")
    out = tmp_path / "train.jsonl"
    r = CliRunner().invoke(q3tts, ["prepare-data", str(raw), "--model", str(checkpoints["base"][1]), "--out", str(out)])
    assert r.exit_code == 1 and f"{raw}:2: audio file" in r.output and "does not exist" in r.output
    assert not out.exists() and not list(tmp_path.glob(".train.jsonl.partial-*"))
