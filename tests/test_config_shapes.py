"""Config sizes are checked against the weights' own shapes (safetensors headers only) before any
module is built, in the loader (a converted directory, an upstream one loaded directly, the codec
on first decode, the speech encoder on first encode) and in convert-ckpt: one ConfigError naming the key, its value and the tensor.

Every case builds nothing: the module builders and the weight reader are replaced by ones that
fail the test, so without the check each case fails (a meta model or plan built, weights read, or
for the codec's uncapped config, minutes of growing memory)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import q3tts.standalone.checkpoint as checkpoint_module
import q3tts.standalone.codec as codec_module
import q3tts.standalone.conversion as conversion_module
import q3tts.standalone.model as model_module
import q3tts.standalone.speech_encoder as encoder_module
from q3tts.convert import ConversionError, convert_checkpoint
from q3tts.standalone import Qwen3TTS
from q3tts.standalone.checkpoint import CheckpointError, CheckpointReader
from q3tts.standalone.config import ConfigError
from q3tts.standalone.config_shapes import (
    check_expects,
    codec_expects,
    count_indices,
    encoder_expects,
    model_expects,
    shapes_of,
)


def _edit(src, tmp_path, path, value, name="config.json"):
    """A copy of ``src`` whose JSON file ``name`` has ``path`` (a key list) set to ``value``."""
    directory = tmp_path / "ckpt"
    shutil.copytree(src, directory)
    data = json.loads((directory / name).read_text(encoding="utf-8"))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (directory / name).write_text(json.dumps(data), encoding="utf-8")
    (directory / "manifest.json").unlink(missing_ok=True)  # an edit no manifest vouches for
    return directory


@pytest.fixture
def nothing_built(monkeypatch):
    """Building a module or reading a weight fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a module was built or a weight read before the config was checked")

    monkeypatch.setattr(model_module, "network_parts", refuse)
    monkeypatch.setattr(model_module, "load_state_dict", refuse)
    monkeypatch.setattr(checkpoint_module, "load_state_dict", refuse)
    monkeypatch.setattr(conversion_module, "plan", refuse)
    monkeypatch.setattr(conversion_module, "codec_plan", refuse)
    monkeypatch.setattr(codec_module.CodecDecoder, "__init__", refuse)


TALKER = ["talker", "transformer"]
LOADED = [  # (standalone config.json path, value, the message's key and tensor)
    (TALKER + ["num_hidden_layers"], 1024, r"talker\.transformer\.num_hidden_layers = 1024, but the weights hold 2 of talker\.decoder\.layers\.N\.\*"),
    (TALKER + ["hidden_size"], 64, r"talker\.transformer\.hidden_size = 64, but tensor talker\.decoder\.norm\.weight has shape \[32\]"),
    (TALKER + ["intermediate_size"], 48, r"intermediate_size = 48, but tensor talker\.decoder\.layers\.0\.mlp\.w_down\.weight"),
    (TALKER + ["num_attention_heads"], 8, r"num_attention_heads = 8, but tensor talker\.decoder\.layers\.0\.attn\.wo\.weight has shape \[32, 32\]: dimension 1 is 32, the config implies 64 = num_attention_heads 8 x head_dim 8"),
    (TALKER + ["num_key_value_heads"], 4, r"num_key_value_heads = 4, but tensor talker\.decoder\.layers\.0\.attn\.wqkv\.weight"),
    (["talker", "vocab_size"], 2000, r"talker\.vocab_size = 2000, but tensor talker\.codec_embedding\.weight has shape \[1040, 32\]"),
    (["talker", "text_vocab_size"], 100, r"talker\.text_vocab_size = 100, but tensor talker\.text_embedding\.weight"),
    (["talker", "code_predictor", "transformer", "num_hidden_layers"], 3, r"talker\.code_predictor\.transformer\.num_hidden_layers = 3, but the weights hold 2 of code_predictor\.decoder\.layers\.N\.\*"),
    (["talker", "code_predictor", "vocab_size"], 99, r"talker\.code_predictor\.vocab_size = 99, but tensor code_predictor\.codec_embeddings has shape \[3, 16, 32\]"),
    (["speaker_encoder", "mel_dim"], 80, r"speaker_encoder\.mel_dim = 80, but tensor speaker_encoder\.blocks\.0\.conv\.weight"),
]  # fmt: skip


@pytest.mark.parametrize("path, value, message", LOADED, ids=[".".join(p) for p, _, _ in LOADED])
def test_loader_refuses_a_config_its_weights_contradict(checkpoints, tmp_path, nothing_built, path, value, message):
    directory = _edit(checkpoints["base"][1], tmp_path, path, value)
    with pytest.raises(ConfigError, match=message) as info:
        Qwen3TTS.from_pretrained(directory)
    assert str(info.value).startswith(f"{directory / 'config.json'}: ")
    assert "config.json and the weights disagree (a config of another model, or edited weights?)" in str(info.value)


CONVERTED = [  # (upstream config.json path, value, message)
    (["talker_config", "num_hidden_layers"], 1000, r"talker_config\.num_hidden_layers = 1000, but the weights hold 2 of talker\.model\.layers\.N\.\*"),
    (["talker_config", "num_key_value_heads"], 1, r"talker_config\.num_key_value_heads = 1, but tensor talker\.model\.layers\.0\.self_attn\.k_proj\.weight has shape \[16, 32\]"),
    (["talker_config", "vocab_size"], 2000, r"talker_config\.vocab_size = 2000, but tensor talker\.model\.codec_embedding\.weight"),
    (["talker_config", "code_predictor_config", "hidden_size"], 24, r"code_predictor_config\.hidden_size = 24, but tensor talker\.code_predictor\.model\.norm\.weight"),
]  # fmt: skip


@pytest.mark.parametrize("path, value, message", CONVERTED, ids=[".".join(p) for p, _, _ in CONVERTED])
def test_convert_refuses_a_config_its_weights_contradict(checkpoints, tmp_path, nothing_built, path, value, message):
    src = _edit(checkpoints["base"][0], tmp_path, path, value)
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_direct_load_of_an_upstream_dir_refuses_it(checkpoints, tmp_path, nothing_built, monkeypatch):
    monkeypatch.setenv("Q3TTS_CACHE", str(tmp_path / "cache"))
    src = _edit(checkpoints["custom_voice"][0], tmp_path, ["talker_config", "num_hidden_layers"], 1000)
    with pytest.raises(CheckpointError, match=r"cannot be converted \(.*talker_config\.num_hidden_layers = 1000, but"):
        Qwen3TTS.from_pretrained(src, progress=False)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # nothing cached


def test_codec_config_with_ten_million_layers_fails_at_once(checkpoints, tmp_path, monkeypatch):
    """decoder_config has no size caps: before the check, decoding with num_hidden_layers=10**7
    built a meta codec for minutes (over 30 s measured, then killed)."""
    directory = _edit(
        checkpoints["base"][1], tmp_path, ["decoder_config", "num_hidden_layers"], 10**7, "speech_tokenizer/config.json"
    )
    model = Qwen3TTS.from_pretrained(directory)
    monkeypatch.setattr(codec_module.CodecDecoder, "__init__", lambda *a: pytest.fail("codec built"))
    with pytest.raises(ConfigError, match=r"speech_tokenizer/config\.json: decoder_config\.num_hidden_layers = 10000000, but the weights hold 1 of decoder\.transformer\.layers\.N\.\*"):  # fmt: skip
        model.decode_codes(np.zeros((3, 4), dtype=np.int64))


def test_encoder_config_with_ten_million_layers_fails_at_once(checkpoints, tmp_path, monkeypatch):
    """encoder_config has no size caps either: encode_audio would build a 10**7-layer meta encoder."""
    directory = _edit(
        checkpoints["base"][1], tmp_path, ["encoder_config", "num_hidden_layers"], 10**7, "speech_tokenizer/config.json"
    )
    model = Qwen3TTS.from_pretrained(directory)
    monkeypatch.setattr(encoder_module.SpeechEncoder, "__init__", lambda *a: pytest.fail("encoder built"))
    with pytest.raises(ConfigError, match=r"speech_tokenizer/config\.json: encoder_config\.num_hidden_layers = 10000000, but the weights hold 1 of encoder\.transformer\.layers\.N\.\*"):  # fmt: skip
        model.encode_audio((np.zeros(24000, np.float32), 24000))


def test_convert_refuses_an_encoder_config_its_weights_contradict(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(conversion_module, "codec_plan", lambda *a: pytest.fail("codec plan built"))
    src = _edit(checkpoints["base"][0], tmp_path, ["encoder_config", "num_filters"], 64, "speech_tokenizer/config.json")
    with pytest.raises(ConversionError, match=r"encoder_config\.num_filters = 64, but tensor encoder\.encoder\.layers\.0\.conv\.weight has shape \[8, 1, 7\]"):  # fmt: skip
        convert_checkpoint(src, tmp_path / "out")


def test_convert_refuses_a_codec_config_its_weights_contradict(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(conversion_module, "codec_plan", lambda *a: pytest.fail("codec plan built"))
    src = _edit(
        checkpoints["base"][0], tmp_path, ["decoder_config", "num_quantizers"], 8, "speech_tokenizer/config.json"
    )
    with pytest.raises(ConversionError, match=r"decoder_config\.num_quantizers = 8, but the weights hold 3 of decoder\.quantizer\.rvq_rest\.vq\.layers\.N\.\* \(the config implies 7 = num_quantizers - 1\)"):  # fmt: skip
        convert_checkpoint(src, tmp_path / "out")


def _present(e, shapes) -> bool:
    return count_indices(shapes, e.tensor) > 0 if e.dim is None else e.tensor in shapes


@pytest.mark.parametrize("model_type", ["base", "custom_voice", "voice_design"])
def test_every_expectation_holds_on_the_clean_fixtures_and_sees_its_tensor(checkpoints, model_type):
    """No check is vacuous: on the clean fixtures each names a tensor (or layer prefix) that is
    there, in both layouts, model and codec, and all hold."""
    from q3tts.standalone.codec import load_codec_config
    from q3tts.standalone.conversion import Direction, read_model_config
    from q3tts.standalone.speech_encoder import load_speech_encoder_config

    up, st = checkpoints[model_type]
    for layout, directory in (("upstream", up), ("standalone", st)):
        direction = Direction.TO_STANDALONE if layout == "upstream" else Direction.TO_UPSTREAM
        tokenizer = directory / "speech_tokenizer"
        parts = [
            (directory, model_expects(read_model_config(directory, direction), layout)),
            (tokenizer, codec_expects(load_codec_config(tokenizer), layout)),
            (tokenizer, encoder_expects(load_speech_encoder_config(tokenizer), layout)),
        ]
        for where, expects in parts:
            with CheckpointReader(where) as reader:
                shapes = shapes_of(reader.infos)
            absent = [e.tensor for e in expects if not _present(e, shapes)]
            assert not absent, f"{layout} {where.name}: checks naming tensors that are not there: {absent}"
            check_expects(expects, shapes, "config.json")


def test_message_is_one_line_and_names_the_value(checkpoints, tmp_path):
    directory = _edit(checkpoints["voice_design"][1], tmp_path, TALKER + ["num_hidden_layers"], 7)
    with pytest.raises(ConfigError) as info:
        Qwen3TTS.from_pretrained(directory)
    assert "\n" not in str(info.value)
    assert re.search(r"num_hidden_layers = 7, .* \(the config implies 7\)", str(info.value))
