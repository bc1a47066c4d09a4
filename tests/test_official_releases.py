"""Each of the five official 12 Hz releases, as a tiny random-weight checkpoint that keeps every
published file and key (verify/fixtures/official/): only the widths shrink. Token ids, speakers, languages,
rope settings, the generation config, the tokenizer config and the speech tokenizer's keys
(``_frame_rate`` included) are the published ones. It converts, loads, and speaks as upstream does."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from q3tts.convert import convert_checkpoint
from q3tts.standalone import Qwen3TTS
from q3tts.verify.fixtures.released import MODEL_REPO_FILES, OFFICIAL_DIR, RELEASES, official_file
from q3tts.verify.fixtures.writer import (
    build_upstream_codec,
    build_upstream_modules,
    random_state_dict,
    write_text_tokenizer,
)

pytestmark = pytest.mark.reference  # upstream's modules give the tensor names and shapes

TALKER_WIDTH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
TALKER_WIDTH.update(num_key_value_heads=2, head_dim=8, text_hidden_size=16)
PREDICTOR_WIDTH = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
PREDICTOR_WIDTH.update(num_key_value_heads=1, head_dim=8, layer_types=["full_attention"])
SPEAKER_WIDTH = dict(enc_dim=32, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8)
ENCODER_WIDTH = dict(num_filters=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
ENCODER_WIDTH.update(num_key_value_heads=2, head_dim=8, intermediate_size=32, codebook_dim=8)
ENCODER_WIDTH.update(vector_quantization_hidden_dimension=8, upsample_groups=16)
DECODER_WIDTH = dict(latent_dim=16, codebook_dim=8, decoder_dim=32, hidden_size=16, intermediate_size=32)
DECODER_WIDTH.update(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8)
DECODER_WIDTH.update(vector_quantization_hidden_dimension=8)


def _narrow(d: dict, widths: dict) -> None:
    """Overwrite only keys the published file has (key order kept), so no key is added."""
    for key, value in widths.items():
        if key in d:
            d[key] = value


def narrow_config(published: dict) -> dict:
    cfg = json.loads(json.dumps(published))
    t = cfg["talker_config"]
    _narrow(t, TALKER_WIDTH)
    t["rope_scaling"]["mrope_section"] = [2, 1, 1]  # sums to head_dim / 2
    _narrow(t["code_predictor_config"], PREDICTOR_WIDTH)
    if "speaker_encoder_config" in cfg:
        # Published Base files give only enc_dim and sample_rate; the channel keys are added so that
        # the speaker encoder is tiny too (class defaults are 512 channels).
        cfg["speaker_encoder_config"].update(SPEAKER_WIDTH)
    return cfg


def narrow_speech_tokenizer_config(published: dict) -> dict:
    cfg = json.loads(json.dumps(published))
    _narrow(cfg["encoder_config"], ENCODER_WIDTH)
    _narrow(cfg["decoder_config"], DECODER_WIDTH)
    return cfg


def _dump(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_release(dst, repo: str, seed: int = 0):
    """The release's published files (config files narrowed), random weights from upstream's modules."""
    from safetensors.torch import save_file

    for rel in MODEL_REPO_FILES:
        if rel not in ("config.json", "speech_tokenizer/config.json"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(OFFICIAL_DIR / repo / rel, dst / rel)
    cfg = narrow_config(official_file(repo, "config.json"))
    _dump(dst / "config.json", cfg)
    save_file(random_state_dict(build_upstream_modules(cfg), seed), str(dst / "model.safetensors"))
    codec_cfg = narrow_speech_tokenizer_config(official_file(repo, "speech_tokenizer/config.json"))
    _dump(dst / "speech_tokenizer" / "config.json", codec_cfg)
    state = random_state_dict(build_upstream_codec(codec_cfg), seed + 1)
    save_file(state, str(dst / "speech_tokenizer" / "model.safetensors"))
    # vocab.json and merges.txt (published: 151643 byte-level BPE entries) are the tiny BPE padded to
    # the published size, so the published added tokens keep their ids (151643..151675).
    published_tok = (dst / "tokenizer_config.json").read_text(encoding="utf-8")
    write_text_tokenizer(dst, filler_tokens=151643 - 300)
    (dst / "tokenizer_config.json").write_text(published_tok, encoding="utf-8")
    return cfg


@pytest.fixture(scope="module", params=sorted(RELEASES), ids=lambda r: f"{r[0]}-{r[1]}")
def release(request, tmp_path_factory):
    repo = RELEASES[request.param]
    root = tmp_path_factory.mktemp(repo)
    cfg = write_release(root / "upstream", repo)
    convert_checkpoint(root / "upstream", root / "standalone")
    return request.param, repo, cfg, root


def test_a_release_converts_and_loads_with_its_published_keys(release):
    (size, model_type), repo, cfg, root = release
    model = Qwen3TTS.from_pretrained(root / "standalone", dtype=torch.float32)
    t = cfg["talker_config"]
    assert model.config.tts_model_type == model_type
    assert model.get_supported_speakers() == sorted(t["spk_id"])
    languages = sorted(["auto"] + [k for k in t["codec_language_id"] if "dialect" not in k])
    assert model.get_supported_languages() == languages
    assert model.config.talker.codec_eos_token_id == t["codec_eos_token_id"]
    assert model.config.tts_pad_token_id == cfg["tts_pad_token_id"]
    published_gen = official_file(repo, "generation_config.json")
    assert {k: model.generate_defaults[k] for k in published_gen if k in model.generate_defaults} == {
        k: v for k, v in published_gen.items() if k in model.generate_defaults
    }


def test_a_release_speaks_as_upstream(release):
    """Greedy codes for a few frames, standalone against upstream on the same directory."""
    from q3tts.verify.cases.forward import load_upstream_wrapper

    (size, model_type), repo, cfg, root = release
    up = load_upstream_wrapper(root / "upstream", torch.float32)
    ours = Qwen3TTS.from_pretrained(root / "standalone", dtype=torch.float32)
    options = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=4)
    text = "Hello world."
    if model_type == "custom_voice":
        speaker = sorted(cfg["talker_config"]["spk_id"])[0]
        args = dict(text=text, speaker=speaker, language="english", **options)
        a, b = up.generate_custom_voice(**args), ours.generate_custom_voice(**args)
    elif model_type == "voice_design":
        args = dict(text=text, instruct="A warm voice.", language="english", **options)
        a, b = up.generate_voice_design(**args), ours.generate_voice_design(**args)
    else:
        wav = (0.1 * torch.randn(24000, generator=torch.Generator().manual_seed(0))).numpy()
        args = dict(text=text, ref_audio=(wav, 24000), x_vector_only_mode=True, language="english", **options)
        a, b = up.generate_voice_clone(**args), ours.generate_voice_clone(**args)
    (wa, sra), (wb, srb) = a, b
    assert sra == srb
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        assert x.shape == y.shape and float(abs(x - y).max()) == 0.0
