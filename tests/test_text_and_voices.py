"""Text tokenization without transformers, and the text-level voice methods, against upstream."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from q3tts.standalone.text import TextTokenizer, uses_mistral_regex
from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.fixtures.writer import write_text_tokenizer

TEXTS = [
    "Hello world, 123!",
    "中文 字符 and emoji 😀 mixed",
    "  multiple   spaces\n\n\ttabs and\r\nCRLF",
    "HelloWorld it's we'll THEY'RE",
    "数字1234567890。全角，标点！",
    "\nstarts with a newline",
    "ends with spaces   ",
    "café naïve Ünïcode e\u0301",  # NFC folds the combining accent
    "a/b/c path-like_words and URLs http://x.y/z?q=1",
    "",
]


@pytest.mark.reference
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("template", ["assistant", "ref", "instruct"])
def test_token_ids_equal_upstream_processor(load_models, text, template):
    wrapper, standalone = load_models("base", torch.float32)
    build = {
        "assistant": TextTokenizer.assistant_text,
        "ref": TextTokenizer.ref_text,
        "instruct": TextTokenizer.instruct_text,
    }[template]
    expected = wrapper.processor(text=build(text))["input_ids"][0]
    assert standalone.text_tokenizer.encode(build(text)) == expected


@pytest.mark.parametrize(
    "version, model_type, expected",
    [
        ("4.57.3", "qwen3_tts", True),
        ("4.57.2", "qwen3_tts", False),
        ("4.56.0", "qwen3_tts", False),
        ("5.0.0", "qwen3_tts", False),
        ("5.0.0.dev0", "qwen3_tts", True),
        (None, "qwen3_tts", True),
        ("4.50.0", "mistral", True),
    ],
)
def test_mistral_regex_decision(version, model_type, expected):
    cfg = {"model_type": model_type}
    if version:
        cfg["transformers_version"] = version
    assert uses_mistral_regex(150_000, cfg) is expected
    assert uses_mistral_regex(99_999, cfg) is False
    assert uses_mistral_regex(150_000, None) is False


@pytest.mark.reference
@pytest.mark.parametrize("version", ["4.57.3", "4.57.1"])
def test_fix_mistral_regex_quirk_matches_upstream_on_a_large_vocabulary(checkpoints, tmp_path, version):
    """Upstream patches the split regex for >100k vocabularies depending on config.json's
    transformers_version; the standalone tokenizer must make the same choice."""
    from qwen_tts import Qwen3TTSModel  # noqa: F401  (registers the processor classes)
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSProcessor
    from transformers import AutoConfig, AutoProcessor

    AutoConfig.register("qwen3_tts", Qwen3TTSConfig, exist_ok=True)
    AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor, exist_ok=True)
    up_dir = tmp_path / "big"
    up_dir.mkdir()
    write_text_tokenizer(up_dir, filler_tokens=100_500)
    cfg = json.loads((checkpoints["base"][0] / "config.json").read_text())
    cfg["transformers_version"] = version
    (up_dir / "config.json").write_text(json.dumps(cfg))
    shutil.copy(checkpoints["base"][0] / "preprocessor_config.json", up_dir)
    processor = AutoProcessor.from_pretrained(str(up_dir), fix_mistral_regex=True)
    st_dir = tmp_path / "st"
    st_dir.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(up_dir / name, st_dir)
    shutil.copy(up_dir / "config.json", st_dir / "upstream_config.json")
    tok = TextTokenizer.from_dir(st_dir)
    assert tok.mistral_regex is (version == "4.57.3")
    for text in ["HelloWorld and CamelCaseWords", "it's/path\nNEW", *TEXTS]:
        assert tok.encode(text) == processor(text=text)["input_ids"][0], text
    # The two regexes give different ids here, so the check above is not vacuous.
    other_cfg = dict(cfg, transformers_version="4.57.1" if version == "4.57.3" else "4.57.3")
    (st_dir / "upstream_config.json").write_text(json.dumps(other_cfg))
    other = TextTokenizer.from_dir(st_dir)
    assert other.mistral_regex is not tok.mistral_regex
    assert any(other.encode(t) != tok.encode(t) for t in ["HelloWorld and CamelCaseWords", "it's/path\nNEW"])


def _same_audio(up, st):
    (up_wavs, up_sr), (st_wavs, st_sr) = up, st
    assert up_sr == st_sr == 24000
    assert len(up_wavs) == len(st_wavs)
    for a, b in zip(up_wavs, st_wavs):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert np.sqrt(np.mean(a**2)) > 0.01  # real audio, not silence


@pytest.mark.reference
@pytest.mark.parametrize("sampled", [False, True])
def test_voice_methods_return_upstream_audio(load_models, sampled):
    """The text-level methods end to end (tokenizer, prompt, decode loop, codec) against
    upstream's wrapper methods: identical waveforms."""
    gen = dict(do_sample=sampled, subtalker_dosample=sampled, max_new_tokens=20)
    cv_up, cv_st = load_models("custom_voice", torch.float32)
    vd_up, vd_st = load_models("voice_design", torch.float32)
    b_up, b_st = load_models("base", torch.float32)
    wav = speech_like_waveform(3)
    runs = [
        (
            cv_up,
            cv_st,
            lambda m: m.generate_custom_voice(
                ["Hi there.", "Second one!"], speaker=["alice", "bob"], language="auto", **gen
            ),
        ),
        (vd_up, vd_st, lambda m: m.generate_voice_design("Hello.", instruct="Calm and deep.", **gen)),
        (
            b_up,
            b_st,
            lambda m: m.generate_voice_clone(
                "Clone me.", language="english", ref_audio=(wav, 24000), x_vector_only_mode=True, **gen
            ),
        ),
    ]
    for up, st, call in runs:
        torch.manual_seed(5)
        expected = call(up)
        torch.manual_seed(5)
        _same_audio(expected, call(st))
    # ICL with given reference codes: upstream's prompt carries the same codes.
    ref_code = torch.randint(0, 16, (5, 4), generator=torch.Generator().manual_seed(0))
    items_up = b_up.create_voice_clone_prompt(ref_audio=(wav, 24000), ref_text="Reference words.")
    items_up[0].ref_code = ref_code
    torch.manual_seed(5)
    expected = b_up.generate_voice_clone("Clone me.", language="english", voice_clone_prompt=items_up, **gen)
    torch.manual_seed(5)
    got = b_st.generate_voice_clone(
        "Clone me.", language="english", ref_audio=(wav, 24000), ref_text="Reference words.", ref_code=ref_code, **gen
    )
    _same_audio(expected, got)


def test_voice_methods_reject_bad_input(load_standalone):
    cv = load_standalone("custom_voice", torch.float32)
    base = load_standalone("base", torch.float32)
    with pytest.raises(ValueError, match="unsupported speakers"):
        cv.generate_custom_voice("Hi", speaker="nobody")
    with pytest.raises(ValueError, match="unsupported languages"):
        cv.generate_custom_voice("Hi", speaker="alice", language="klingon")
    with pytest.raises(ValueError, match="needs a 'voice_design' checkpoint"):
        cv.generate_voice_design("Hi", instruct="x")
    wav = speech_like_waveform(0)
    # ICL without reference codes encodes the audio (tests/test_voice_clone_from_audio.py).
    with pytest.raises(ValueError, match="ref_text is required"):
        base.create_voice_clone_prompt((wav, 24000))
    with pytest.raises(ValueError, match="sample rate must be a positive integer"):
        base.create_voice_clone_prompt((wav, 0), x_vector_only_mode=True)
    assert cv.get_supported_speakers() == ["alice", "bob", "carol"]
    assert cv.get_supported_languages() == ["auto", "chinese", "english", "german"]
