"""The fixture factory writes complete upstream checkpoints whose random weights matter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from q3tts.verify.fixtures.writer import MODEL_TYPES

RELEASED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "preprocessor_config.json",
}
SPEECH_TOKENIZER_FILES = {"config.json", "model.safetensors", "preprocessor_config.json"}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fixture_is_a_complete_upstream_checkpoint(checkpoints, model_type):
    up_dir, _ = checkpoints[model_type]
    assert RELEASED_FILES <= {p.name for p in up_dir.iterdir()}
    assert SPEECH_TOKENIZER_FILES <= {p.name for p in (up_dir / "speech_tokenizer").iterdir()}
    cfg = json.loads((up_dir / "config.json").read_text())
    assert cfg["tts_model_type"] == model_type
    # As released: the speaker encoder config has no model_type (upstream's class would reject it).
    assert "model_type" not in cfg.get("speaker_encoder_config", {})


@pytest.mark.reference
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fixture_loads_through_upstream_from_pretrained(checkpoints, model_type):
    from qwen_tts import Qwen3TTSModel

    up_dir, _ = checkpoints[model_type]
    wrapper = Qwen3TTSModel.from_pretrained(str(up_dir))
    assert wrapper.model.tts_model_type == model_type
    assert (wrapper.model.speaker_encoder is not None) == (model_type == "base")
    assert wrapper.model.speech_tokenizer is not None
    assert wrapper.model.generate_config["max_new_tokens"] == 8192
    if model_type == "custom_voice":
        assert set(wrapper.model.get_supported_speakers()) == {"alice", "bob", "carol"}
    # The chat template's role tokens are single tokens, as upstream's position slicing assumes.
    ids = wrapper.processor(text="<|im_start|>assistant\nHello world<|im_end|>\n<|im_start|>assistant\n")["input_ids"][
        0
    ]
    assert [wrapper.processor.tokenizer.decode([i]) for i in ids[:3]] == ["<|im_start|>", "assistant", "\n"]


@pytest.mark.reference
def test_talker_logits_are_peaked_not_uniform(load_pair):
    """With std-0.02 init the codec logits are near uniform and sampling follows the RNG alone."""
    upstream, _ = load_pair("custom_voice", torch.float32)
    talker = upstream.talker
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, talker.config.text_vocab_size, (1, 16), generator=g)
    with torch.inference_mode():
        logits = talker(
            inputs_embeds=talker.text_projection(talker.model.text_embedding(ids)),
            attention_mask=torch.ones(1, 16, dtype=torch.long),
            use_cache=False,
        ).logits
    probs = logits.float().softmax(-1)
    # Uniform over 1040 ids would give max prob ~0.001.
    assert probs.max(-1).values.mean() > 0.2


@pytest.mark.reference
def test_codec_decodes_to_real_amplitude(load_pair):
    """Upstream's default init decodes to ~1e-9; the fixture's codec must produce real audio."""
    upstream, _ = load_pair("base", torch.float32)
    codes = torch.randint(0, 16, (40, 4), generator=torch.Generator().manual_seed(0))
    wavs, sr = upstream.speech_tokenizer.decode([{"audio_codes": codes}])
    wav = wavs[0]
    rms = float(np.sqrt(np.mean(wav**2)))
    assert sr == 24000 and wav.shape == (40 * 1920,)
    assert 0.03 < rms < 0.5, rms
    assert np.mean(np.abs(wav) >= 0.999) < 0.05  # hardly clipped
