"""Resampling, encoding and decoding are estimated from the input's size and the config, and
refused above the cap (max_work_bytes=, Q3TTS_MAX_WORK_BYTES, else half the RAM) before any
work: one WorkTooLarge line with the estimate, the cap and how to raise it.

Each refusal test replaces the work itself with one that fails the test, so without the check it
fails (and a 10**7-frame decode does not run for days first); the peak-RSS checks read the
kernel's high-water mark after resetting it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import q3tts.standalone.codec as codec_module
import q3tts.standalone.speaker_encoder as speaker_module
import q3tts.standalone.speech_encoder as encoder_module
from q3tts.standalone.audio import resample
from q3tts.standalone.work_memory import (
    MAX_WORK_BYTES_ENV,
    WorkTooLarge,
    decode_bytes,
    parse_bytes,
    physical_memory,
    work_cap,
)

HOW = r"split the input, or raise the cap: Q3TTS_MAX_WORK_BYTES=\d+G \(or max_work_bytes= where the call takes it\)"


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _peak_of(call) -> tuple[int, float, BaseException | None]:
    """(peak RSS above the start, seconds, the error raised) of ``call()``."""
    Path("/proc/self/clear_refs").write_text("5")
    base, t0, error = _status("VmRSS"), time.perf_counter(), None
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - returned to the test
        error = e
    return _status("VmHWM") - base, time.perf_counter() - t0, error


def _forbid(monkeypatch, owner, name):
    monkeypatch.setattr(owner, name, lambda *a, **k: pytest.fail(f"{owner.__name__}.{name} ran: nothing was refused"))


def test_a_ten_million_frame_decode_is_refused_at_once_with_the_default_cap(load_standalone, monkeypatch):
    m = load_standalone("base")
    assert m.codec is not None  # loaded before measuring
    monkeypatch.delenv(MAX_WORK_BYTES_ENV, raising=False)
    _forbid(monkeypatch, codec_module.CodecDecoder, "chunked")
    codes = torch.zeros(1, 4, dtype=torch.long).expand(10**7, 4)  # a view: no memory of its own
    peak, seconds, error = _peak_of(lambda: m.decode_codes(codes))
    assert isinstance(error, WorkTooLarge), error
    assert re.fullmatch(
        r"decoding 1 item\(s\) of up to 10000000 frames: needs about 215\.7 GiB of memory \(estimated before "
        r"starting\), above the \d+\.\d GiB cap; " + HOW,
        str(error),
    ), str(error)
    assert peak < 16 << 20, (seconds, peak)  # the decode itself is forbidden above: no clock needed


def test_decode_cap_keyword_and_environment(load_standalone, monkeypatch):
    m = load_standalone("base")
    codes = torch.zeros(2000, 4, dtype=torch.long)
    m.decode_codes(codes)  # the default cap lets a normal decode through
    estimate = decode_bytes(m.codec.cfg, 1, 2000)
    _forbid(monkeypatch, codec_module.CodecDecoder, "chunked")
    with pytest.raises(WorkTooLarge, match=r"above the 1\.0 MiB cap"):
        m.decode_codes(codes, max_work_bytes="1M")
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, str(estimate - 1))
    with pytest.raises(WorkTooLarge, match=r"decoding 1 item\(s\) of up to 2000 frames"):
        m.decode_codes(codes)
    with pytest.raises(WorkTooLarge):  # a list of lists is measured too
        m.decode_codes([codes.tolist()])
    monkeypatch.undo()
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, str(estimate))
    assert m.decode_codes(codes)[0][0].shape == (2000 * 1920,)  # at the cap: decoded


def test_encode_refused_before_the_encoder_runs_and_a_short_one_passes(load_standalone, monkeypatch):
    m = load_standalone("base")
    wav = (0.1 * np.random.default_rng(0).standard_normal(24000 * 60)).astype(np.float32)
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, "100M")
    assert m.encode_audio((wav[:24000], 24000))[0].shape == (13, 4)
    _forbid(monkeypatch, encoder_module.SpeechEncoder, "forward")
    with pytest.raises(WorkTooLarge, match=r"^encoding 1 item\(s\) of up to 60 s: needs about \d+\.\d MiB .* above the 100\.0 MiB cap; " + HOW):  # fmt: skip
        m.encode_audio((wav, 24000))
    with pytest.raises(WorkTooLarge, match=r"above the 1\.0 KiB cap"):
        m.encode_audio((wav[:24000], 24000), max_work_bytes=1024)


def test_speaker_embedding_refused_before_the_speaker_encoder_runs(load_standalone, monkeypatch):
    m = load_standalone("base")
    wav = (0.1 * np.random.default_rng(1).standard_normal(24000 * 120)).astype(np.float32)
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, "64M")
    assert m.extract_speaker_embedding(wav[:24000], 24000).shape == (m.config.speaker_encoder.enc_dim,)
    _forbid(monkeypatch, speaker_module.SpeakerEncoder, "forward")
    with pytest.raises(WorkTooLarge, match=r"^extract_speaker_embedding: needs about .* above the 64\.0 MiB cap"):
        m.extract_speaker_embedding(wav, 24000)


def test_resampling_refused_before_soxr_runs(monkeypatch):
    import soxr

    wav = np.zeros(44100 * 60, np.float32)
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, "40M")
    assert resample(wav[:44100], 44100, 24000).shape == (24001,)  # ceil(44100 x 24000 / 44100), float64 as librosa
    _forbid(monkeypatch, soxr, "resample")
    with pytest.raises(WorkTooLarge, match=r"^resampling 44100 Hz -> 24000 Hz: needs about 45\.7 MiB .* 40\.0 MiB cap"):
        resample(wav, 44100, 24000)


def test_voice_clone_reference_is_bounded_too(load_standalone, monkeypatch):
    m = load_standalone("base")
    wav = (0.1 * np.random.default_rng(2).standard_normal(24000 * 60)).astype(np.float32)
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, "100M")
    with pytest.raises(WorkTooLarge, match=r"^encoding 1 item"):
        m.create_voice_clone_prompt((wav, 24000), ref_text="Hi.")


@pytest.mark.parametrize(
    "text, value",
    [("123", 123), ("512M", 512 << 20), ("8G", 8 << 30), ("1.5GiB", 3 << 29), ("2 kb", 2048), ("1T", 1 << 40)],
)
def test_sizes_parse(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-5", "0", "5X", "nan"])
def test_bad_cap_is_named(monkeypatch, text):
    monkeypatch.setenv(MAX_WORK_BYTES_ENV, text)
    if not text:  # empty: the default
        assert work_cap() == int(physical_memory() * 0.5)
        return
    with pytest.raises(ValueError, match=rf"^{MAX_WORK_BYTES_ENV}='{re.escape(text)}' "):
        work_cap()


def test_bad_keyword_is_named():
    with pytest.raises(TypeError, match=r"max_work_bytes must be a number of bytes or a size string, got 1\.5"):
        work_cap(1.5)
    with pytest.raises(ValueError, match=r"max_work_bytes='huge' is not a size in bytes"):
        work_cap("huge")


def test_cli_refusal_is_one_line_and_exit_1(checkpoints, tmp_path):
    """A refused estimate is an input that cannot be used with this cap (exit 1), not a usage error;
    nothing is written."""
    from click.testing import CliRunner

    from q3tts.standalone.cli import main

    out = tmp_path / "out.wav"
    args = ["synthesize", "--model", str(checkpoints["custom_voice"][1]), "--text", "Hi.", "--speaker", "alice"]
    args += ["--out", str(out), "--max-new-tokens", "3"]
    result = CliRunner().invoke(main, args, env={MAX_WORK_BYTES_ENV: "1K"})
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"q3tts: error: decoding 1 item\(s\) of up to \d+ frames: needs about [0-9.]+ MiB of memory \(estimated before "
        r"starting\), above the 1\.0 KiB cap; " + HOW,
        lines[0],
    ), result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_default_cap_follows_a_container_limit(tmp_path):
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    assert physical_memory((str(limit),)) == 1 << 30
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert physical_memory((str(limit),)) == physical_memory(())
    assert physical_memory((str(tmp_path / "absent"),)) == physical_memory(()) > 1 << 30


def test_cli_encode_refusal_creates_no_output_directory(checkpoints, tmp_path):
    """`q3tts encode` refused by the estimate leaves no --out directory behind (it made an empty one)."""
    import numpy as np
    import soundfile as sf
    from click.testing import CliRunner

    from q3tts.standalone.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(24000, np.float32), 24000)
    out = tmp_path / "codes"
    args = ["encode", str(wav), "--model", str(checkpoints["base"][1]), "--out", str(out)]
    result = CliRunner().invoke(main, args, env={MAX_WORK_BYTES_ENV: "1K"})
    assert result.exit_code == 1 and "above the 1.0 KiB cap" in result.stderr, (result.exit_code, result.stderr)
    assert not out.exists()
    assert CliRunner().invoke(main, args).exit_code == 0 and (out / "a.npy").exists()
