"""Bounded resources before allocation (issue 31, findings 2 and 3): a sample rate off by 1000
fails at once with a hint, a config that would build 10**7 layers or carries a NaN is refused
with the key named, deeply nested JSON is one clear error, and long audio is refused before it
is resampled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from q3tts.convert import ConversionError, convert_checkpoint
from q3tts.standalone import CheckpointError, Qwen3TTS
from q3tts.standalone.audio import normalize_inputs
from q3tts.standalone.config import ConfigError


def _sine(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize(
    "n, sr, hint",
    [(24000, 1, r"did you pass kHz\? 1 kHz is sr=1000"), (5 * 24000, 24, r"did you pass kHz\? 24 kHz is sr=24000")],
    ids=["sr=1", "sr=24"],
)
def test_a_sample_rate_in_khz_fails_before_resampling(load_standalone, monkeypatch, n, sr, hint):
    """Resampling 1 s at sr=1 to 24 kHz is a 24000x upsample: the refusal must come first (the
    resampler is forbidden here, which no clock under load can make flaky)."""
    from q3tts.standalone import audio as audio_module

    m = load_standalone("base")
    wav = _sine(n / 24000, 24000)
    monkeypatch.setattr(audio_module, "resample", lambda *a, **k: pytest.fail("resampled before the rate check"))
    for call in (
        lambda: m.create_voice_clone_prompt((wav, sr), x_vector_only_mode=True),
        lambda: m.encode_audio((wav, sr)),
    ):
        with pytest.raises(ValueError, match=rf"sample rate {sr} Hz is outside 1000\.\.384000 Hz \({hint}\)"):
            call()


def test_a_sample_rate_above_the_range_is_refused():
    with pytest.raises(ValueError, match=r"audio: sample rate 480000000 Hz is outside 1000\.\.384000 Hz$"):
        normalize_inputs((_sine(0.01, 24000), 480_000_000), None, 24000)


def test_audio_longer_than_the_cap_is_refused_before_resampling(monkeypatch):
    monkeypatch.setenv("Q3TTS_MAX_AUDIO_SECONDS", "2")
    with pytest.raises(ValueError, match=r"3 s of audio .* is above the 2 s cap; split it, or raise the cap"):
        normalize_inputs((_sine(3, 16000), 16000), None, 24000)
    normalize_inputs((_sine(1, 16000), 16000), None, 24000)  # under the cap: resampled


@pytest.fixture
def standalone_copy(checkpoints, tmp_path):
    dst = tmp_path / "st"
    shutil.copytree(checkpoints["base"][1], dst)
    (dst / "manifest.json").unlink()  # a hand-edited config: no manifest vouches for it
    return dst


@pytest.fixture
def upstream_copy(checkpoints, tmp_path):
    dst = tmp_path / "up"
    shutil.copytree(checkpoints["base"][0], dst)
    return dst


def _edit_config(directory, edit) -> None:
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))


def test_a_huge_layer_count_fails_fast_with_the_key_named(standalone_copy, upstream_copy, tmp_path):
    _edit_config(standalone_copy, lambda c: c["talker"]["transformer"].__setitem__("num_hidden_layers", 10**7))
    with pytest.raises(ConfigError, match=r"talker.transformer.num_hidden_layers = 10000000 is not a whole number"):
        Qwen3TTS.from_pretrained(standalone_copy)
    _edit_config(upstream_copy, lambda c: c["talker_config"].__setitem__("num_hidden_layers", 10**7))
    with pytest.raises(ConversionError, match=r"talker_config.num_hidden_layers = 10000000 is not a whole number"):
        convert_checkpoint(upstream_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_huge_vocabulary_is_refused_with_the_key_named(standalone_copy):
    _edit_config(standalone_copy, lambda c: c["talker"].__setitem__("text_vocab_size", 10**12))
    with pytest.raises(
        ConfigError, match=r"talker_config.text_vocab_size = 1000000000000 is not a whole number in 1\.\."
    ):
        Qwen3TTS.from_pretrained(standalone_copy)


def test_a_nan_rms_norm_eps_is_refused_with_the_key_named(standalone_copy, upstream_copy, tmp_path):
    _edit_config(standalone_copy, lambda c: c["talker"]["transformer"].__setitem__("rms_norm_eps", float("nan")))
    with pytest.raises(ConfigError, match=r"talker.transformer.rms_norm_eps = nan must be a finite number > 0"):
        Qwen3TTS.from_pretrained(standalone_copy)
    _edit_config(upstream_copy, lambda c: c["talker_config"]["code_predictor_config"].__setitem__("rope_theta", "inf"))
    with pytest.raises(ConversionError, match=r"code_predictor_config.rope_theta = inf must be a finite number > 0"):
        convert_checkpoint(upstream_copy, tmp_path / "out")


def test_deeply_nested_json_is_one_clear_error(standalone_copy, upstream_copy, tmp_path):
    deep = '{"format": "q3tts-standalone", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (standalone_copy / "config.json").write_text(deep)
    with pytest.raises(CheckpointError, match=r"config.json: invalid JSON \(nested deeper than 64 levels"):
        Qwen3TTS.from_pretrained(standalone_copy)
    good = (upstream_copy / "config.json").read_text()
    (upstream_copy / "config.json").write_text(deep)
    with pytest.raises(ConversionError, match=r"config.json: malformed JSON \(nested deeper than 64 levels"):
        convert_checkpoint(upstream_copy, tmp_path / "out")
    (upstream_copy / "config.json").write_text(good)
    (upstream_copy / "speech_tokenizer" / "config.json").write_text(deep)
    with pytest.raises(ConversionError, match=r"speech_tokenizer/config.json: .*nested deeper than 64 levels"):
        convert_checkpoint(upstream_copy, tmp_path / "out")
