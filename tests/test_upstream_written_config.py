"""Config files as upstream's own classes write them (issue 26): transformers saves MimiConfig's
frame rate as ``_frame_rate`` (a property over a private attribute), as the published
``speech_tokenizer/config.json`` does, and the standalone reads it the way MimiConfig does."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_speech_encoder import assert_same_codes, noisy_speech

from q3tts.convert import convert_checkpoint
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.speech_encoder import mimi_frame_rate
from q3tts.verify.fixtures.goldens import weights_digest

pytestmark = pytest.mark.reference  # upstream's config and model classes write the files

RATIOS = st.lists(st.integers(1, 10), min_size=1, max_size=5)
RATE = st.one_of(st.none(), st.floats(0.5, 100.0), st.integers(1, 100))


@settings(max_examples=200, deadline=None)
@given(
    sr=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    ratios=RATIOS,
    key=st.sampled_from(["_frame_rate", "frame_rate", "both", None]),
    a=RATE,
    b=RATE,
)
def test_frame_rate_is_resolved_as_mimi_config_resolves_it(sr, ratios, key, a, b):
    from transformers import MimiConfig

    e = dict(sampling_rate=sr, upsampling_ratios=ratios)
    if key in ("_frame_rate", "frame_rate"):
        e[key] = a
    elif key == "both":
        e.update(_frame_rate=a, frame_rate=b)
    upstream = MimiConfig(**e)
    assert mimi_frame_rate(e, sr, tuple(ratios)) == upstream.frame_rate
    saved = upstream.to_dict()  # what save_pretrained writes
    assert "frame_rate" not in saved and "_frame_rate" in saved
    assert mimi_frame_rate(saved, sr, tuple(ratios)) == upstream.frame_rate


@pytest.mark.parametrize("value", ["12.5", "nan", "-1", "true", "[12.5]"])
def test_a_bad_frame_rate_is_one_clear_error(value):
    e = json.loads(f'{{"_frame_rate": {value}}}'.replace("nan", "NaN"))
    if value == "12.5":
        assert mimi_frame_rate(e, 24000, (8, 6, 5, 4)) == 12.5
        return
    with pytest.raises(ValueError, match=r"encoder_config\._frame_rate=.* must be a positive number"):
        mimi_frame_rate(e, 24000, (8, 6, 5, 4))


def _upstream_saved_checkpoint(checkpoints, tmp_path, variant: str):
    """The base fixture (written by upstream's save_pretrained in this environment: conftest), its
    speech tokenizer's frame rate then given as ``variant``."""
    src = checkpoints["base"][0]
    dst = tmp_path / f"upstream-{variant}"
    shutil.copytree(src, dst)
    path = dst / "speech_tokenizer" / "config.json"
    cfg = json.loads(path.read_text())
    enc = cfg["encoder_config"]
    assert enc["_frame_rate"] == 12.5 and "frame_rate" not in enc  # what upstream writes
    if variant == "frame_rate":
        enc["frame_rate"] = enc.pop("_frame_rate")
    elif variant == "neither":
        del enc["_frame_rate"]
    path.write_text(json.dumps(cfg, indent=2))
    return dst


def test_upstream_refuses_the_base_config_it_saves_and_the_standalone_reads_it(checkpoints, tmp_path):
    """qwen-tts 0.1.1 writes ``speaker_encoder_config.model_type = ""`` and then cannot load the
    file (the fixtures drop that key: fixtures.drop_unloadable_speaker_model_type). The standalone
    converts the directory as saved, with no edit, to the same checkpoint."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig as UpstreamConfig

    from q3tts.verify.fixtures.writer import build_upstream_modules, drop_unloadable_speaker_model_type, tiny_config

    saved = tmp_path / "saved"
    build_upstream_modules(tiny_config("base")).save_pretrained(str(saved))
    as_saved = json.loads((saved / "config.json").read_text())
    assert as_saved["speaker_encoder_config"]["model_type"] == ""
    with pytest.raises(TypeError, match="model_type"):
        UpstreamConfig.from_pretrained(str(saved))
    assert drop_unloadable_speaker_model_type(saved / "config.json")
    UpstreamConfig.from_pretrained(str(saved))  # loads after the one edit

    src = checkpoints["base"][0]
    raw = tmp_path / "as-saved"
    shutil.copytree(src, raw)
    cfg = json.loads((raw / "config.json").read_text())
    cfg["speaker_encoder_config"]["model_type"] = ""  # the fixture as upstream saved it
    (raw / "config.json").write_text(json.dumps(cfg, indent=2))
    convert_checkpoint(raw, tmp_path / "st-raw")
    st = checkpoints["base"][1]
    assert json.loads((tmp_path / "st-raw" / "config.json").read_text()) == json.loads((st / "config.json").read_text())
    for rel in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        assert weights_digest(tmp_path / "st-raw" / rel) == weights_digest(st / rel), rel


@pytest.mark.parametrize("variant", ["_frame_rate", "frame_rate", "neither"])
def test_upstream_written_speech_tokenizer_converts_and_encodes_as_upstream(
    checkpoints, tmp_path, monkeypatch, variant
):
    """convert-ckpt, then encode; and direct loading of the upstream directory: upstream's codes."""
    from qwen_tts import Qwen3TTSTokenizer

    monkeypatch.setenv("Q3TTS_CACHE", str(tmp_path / "cache"))
    up = _upstream_saved_checkpoint(checkpoints, tmp_path, variant)
    st_dir = tmp_path / f"standalone-{variant}"
    convert_checkpoint(up, st_dir)
    model = Qwen3TTS.from_pretrained(st_dir, dtype=torch.float32)
    tokenizer = Qwen3TTSTokenizer.from_pretrained(str(up / "speech_tokenizer"))
    wav = noisy_speech(3, 2.0)
    ref = tokenizer.encode(wav, sr=24000).audio_codes
    assert_same_codes(ref, model.encode_audio(wav, sr=24000))
    assert_same_codes(ref, Qwen3TTS.from_pretrained(up, dtype=torch.float32).encode_audio(wav, sr=24000))
