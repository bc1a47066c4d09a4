"""The standalone reads config.json as upstream's config classes read it (issue 26).

Hypothesis builds configs with upstream's own ``Qwen3TTSConfig`` (random values, random keys left
out so that class defaults apply), and the fields the runtime uses must come out the same from
our reader, both on the dict as given and on what upstream's class writes back (``to_dict``, the
body of the config.json save_pretrained writes). The published files of the five official models
(verify/fixtures/official/) are read the same way.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from q3tts.standalone.codec import CodecConfig
from q3tts.standalone.config import ConfigError, Qwen3TTSConfig
from q3tts.standalone.speech_encoder import SpeechEncoderConfig, mimi_frame_rate
from q3tts.verify.fixtures.released import RELEASES, TOKENIZER_REPO, official_file

pytestmark = pytest.mark.reference  # upstream's config classes are the reference

TRANSFORMER_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
)
CODEC_IDS = (
    "codec_eos_token_id",
    "codec_think_id",
    "codec_nothink_id",
    "codec_think_bos_id",
    "codec_think_eos_id",
    "codec_pad_id",
    "codec_bos_id",
)
TOKEN_IDS = ("im_start_token_id", "im_end_token_id", "tts_pad_token_id", "tts_bos_token_id", "tts_eos_token_id")
SPEAKER_FIELDS = (
    "mel_dim",
    "enc_dim",
    "enc_channels",
    "enc_kernel_sizes",
    "enc_dilations",
    "enc_attention_channels",
    "enc_res2net_scale",
    "enc_se_channels",
    "sample_rate",
)


def _stack(c) -> dict:
    """What upstream's attention and MLP layers take from a (sub-)config object."""
    out = {k: getattr(c, k) for k in TRANSFORMER_FIELDS}
    out["head_dim"] = getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)  # the layers' getattr
    return out


def upstream_view(d: dict) -> dict:
    """The runtime's fields, as upstream's config classes resolve them from ``d``."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig as UpstreamConfig

    c = UpstreamConfig(**copy.deepcopy(d))
    t, cp = c.talker_config, c.talker_config.code_predictor_config
    view = dict(
        tts_model_type=c.tts_model_type,
        talker=_stack(t),
        code_predictor=_stack(cp),
        vocab_size=t.vocab_size,
        text_vocab_size=t.text_vocab_size,
        text_hidden_size=t.text_hidden_size,
        num_code_groups=t.num_code_groups,
        cp_vocab_size=cp.vocab_size,
        cp_num_code_groups=cp.num_code_groups,
        mrope_section=list(t.rope_scaling["mrope_section"]),
        mrope_interleaved=t.rope_scaling["interleaved"],
        codec_language_id=dict(t.codec_language_id or {}),
        spk_id={k: (v[0] if isinstance(v, list) else v) for k, v in (t.spk_id or {}).items()},
        spk_is_dialect=dict(t.spk_is_dialect or {}),
        **{k: getattr(t, k) for k in CODEC_IDS},
        **{k: getattr(c, k) for k in TOKEN_IDS},
    )
    if c.tts_model_type == "base":
        view["speaker"] = {k: getattr(c.speaker_encoder_config, k) for k in SPEAKER_FIELDS}
    return view


def our_view(d: dict) -> dict:
    c = Qwen3TTSConfig.from_upstream(d)
    t, cp = c.talker, c.talker.code_predictor

    def stack(s):
        return {k: getattr(s, k) for k in (*TRANSFORMER_FIELDS, "head_dim")}

    view = dict(
        tts_model_type=c.tts_model_type,
        talker=stack(t.transformer),
        code_predictor=stack(cp.transformer),
        vocab_size=t.vocab_size,
        text_vocab_size=t.text_vocab_size,
        text_hidden_size=t.text_hidden_size,
        num_code_groups=t.num_code_groups,
        cp_vocab_size=cp.vocab_size,
        cp_num_code_groups=cp.num_code_groups,
        mrope_section=list(t.mrope_section),
        mrope_interleaved=t.mrope_interleaved,
        codec_language_id=dict(t.codec_language_id),
        spk_id=dict(t.spk_id),
        spk_is_dialect=dict(t.spk_is_dialect),
        **{k: getattr(t, k) for k in CODEC_IDS},
        **{k: getattr(c, k) for k in TOKEN_IDS},
    )
    if c.speaker_encoder is not None:
        view["speaker"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(c.speaker_encoder).items() if k in SPEAKER_FIELDS
        }
    return view


def _written(d: dict) -> dict:
    """What upstream's class writes back for ``d`` (save_pretrained's config.json body)."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig as UpstreamConfig

    written = json.loads(UpstreamConfig(**copy.deepcopy(d)).to_json_string())
    written.get("speaker_encoder_config", {}).pop("model_type", None)  # see fixtures.drop_unloadable_speaker_model_type
    return written


# --- the property ----------------------------------------------------------------------------

optional = st.booleans()  # whether a key is written (else upstream's class default applies)


@st.composite
def upstream_configs(draw) -> dict:
    model_type = draw(st.sampled_from(["base", "custom_voice", "voice_design"]))
    head_dim = draw(st.sampled_from([8, 16]))
    kv = draw(st.sampled_from([1, 2]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))
    talker: dict = dict(
        hidden_size=draw(st.sampled_from([32, 64])),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        text_vocab_size=draw(st.integers(300, 400)),
        rope_scaling=dict(
            interleaved=draw(st.booleans()), mrope_section=[head_dim // 2 - 2, 1, 1], rope_type="default"
        ),
    )
    # A stack's head count and KV heads go together: the class defaults (talker 16/2, code
    # predictor 16/8) are valid pairs, a drawn head count with a default KV count may not be.
    if draw(optional):
        talker.pop("num_attention_heads"), talker.pop("num_key_value_heads")
    if draw(optional):  # no head_dim: the talker's layers take hidden // heads
        talker.pop("head_dim")
        hd = talker["hidden_size"] // talker.get("num_attention_heads", 16)
        talker["rope_scaling"]["mrope_section"] = [hd // 2 - 2, 1, 1] if hd >= 6 else [hd // 2, 0, 0]
    values = dict(
        vocab_size=st.integers(1040, 3072),
        intermediate_size=st.integers(8, 128),
        num_hidden_layers=st.integers(1, 30),
        max_position_embeddings=st.integers(64, 65536),
        rms_norm_eps=st.sampled_from([1e-6, 1e-5, 1e-8]),
        rope_theta=st.sampled_from([10000, 1000000, 500000.0]),
        text_hidden_size=st.integers(8, 64),
        codec_language_id=st.dictionaries(st.sampled_from(["english", "chinese", "german"]), st.integers(30, 40)),
        **{k: st.integers(0, 1039) for k in CODEC_IDS},
    )
    if model_type == "custom_voice":
        values["spk_id"] = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(40, 60))
        values["spk_is_dialect"] = st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from([False, "x_dialect"]))
    for key, strategy in values.items():
        if draw(optional):
            talker[key] = draw(strategy)
    groups = draw(st.integers(2, 16))
    cp: dict = dict(num_code_groups=groups)
    talker["num_code_groups"] = groups
    cp_values = dict(
        vocab_size=st.integers(8, 4096),
        hidden_size=st.sampled_from([16, 32]),
        intermediate_size=st.integers(8, 64),
        num_hidden_layers=st.integers(1, 6),
        head_dim=st.sampled_from([8, 16]),
        max_position_embeddings=st.integers(16, 65536),
        rms_norm_eps=st.sampled_from([1e-6, 1e-5]),
        rope_theta=st.sampled_from([10000, 1000000]),
    )
    for key, strategy in cp_values.items():
        if draw(optional):
            cp[key] = draw(strategy)
    if draw(optional):
        kv = draw(st.sampled_from([1, 2, None]))  # None: the code predictor's rule (kv = heads)
        cp.update(num_attention_heads=(kv or 1) * draw(st.sampled_from([1, 2])), num_key_value_heads=kv)
    talker["code_predictor_config"] = cp
    d: dict = dict(tts_model_type=model_type, talker_config=talker)
    for key in TOKEN_IDS:
        if draw(optional):
            d[key] = draw(st.integers(300, 320))
    if model_type == "base":
        speaker: dict = dict(enc_dim=talker["hidden_size"])
        if draw(optional):
            speaker.update(enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=draw(st.sampled_from([8, 16])))
        if draw(optional):
            speaker["sample_rate"] = draw(st.sampled_from([16000, 24000]))
        d["speaker_encoder_config"] = speaker
    return d


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=upstream_configs())
def test_the_runtime_reads_every_field_as_upstreams_config_classes(d):
    expected = upstream_view(d)
    assert our_view(d) == expected  # as given: absent keys take the class defaults
    assert our_view(_written(d)) == expected  # as upstream's class writes it back


def test_a_planted_default_is_caught():
    """The property can fail: with the talker's KV-head default changed in our table, a config
    without num_key_value_heads reads differently from upstream's."""
    from q3tts.standalone import config as our_config

    d = dict(
        tts_model_type="voice_design",
        talker_config=dict(
            hidden_size=32,
            head_dim=8,
            text_vocab_size=320,
            rope_scaling=dict(interleaved=True, mrope_section=[2, 1, 1]),
            code_predictor_config={},
        ),
    )
    assert our_view(d) == upstream_view(d)
    defaults = our_config.UPSTREAM_DEFAULTS["talker_config"]
    saved = defaults["num_key_value_heads"]
    try:
        defaults["num_key_value_heads"] = 16
        assert our_view(d) != upstream_view(d)
    finally:
        defaults["num_key_value_heads"] = saved


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("text_vocab_size"), "missing required field 'text_vocab_size'"),
        (lambda t: t["rope_scaling"].pop("interleaved"), "rope_scaling.interleaved is required"),
        (lambda t: t.update(hidden_size=None), "field 'hidden_size' is null"),
    ],
    ids=["no-text-vocab", "no-interleaved", "null-hidden"],
)
def test_a_config_upstream_cannot_run_is_refused_in_one_line(edit, message):
    """Each of these configs upstream's classes accept but its talker then fails on (a missing
    attribute, a KeyError in the attention, None arithmetic); ours refuses it with the field's name."""
    import torch

    from q3tts.verify.fixtures.writer import build_upstream_modules, tiny_config

    def run_upstream(config):
        model = build_upstream_modules(config)
        model.talker(inputs_embeds=torch.zeros(1, 2, 32), position_ids=torch.zeros(3, 1, 2, dtype=torch.long))

    d = tiny_config("voice_design")
    run_upstream(d)  # the unedited config runs: the failure below is the edit's
    edit(d["talker_config"])
    with pytest.raises(ConfigError, match=message) as err:
        Qwen3TTSConfig.from_upstream(d)
    assert "\n" not in str(err.value)
    with pytest.raises((AttributeError, KeyError, TypeError)):
        run_upstream(d)


# --- the published files ---------------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(RELEASES), ids=lambda r: f"{r[0]}-{r[1]}")
def test_published_config_reads_as_upstreams_classes_read_it(release):
    d = official_file(RELEASES[release], "config.json")
    assert our_view(d) == upstream_view(d)
    assert our_view(_written(d)) == upstream_view(d)


@pytest.mark.parametrize("repo", [*sorted(RELEASES.values()), TOKENIZER_REPO])
def test_published_speech_tokenizer_config_reads_as_upstreams_classes_read_it(repo):
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config

    path = "config.json" if repo == TOKENIZER_REPO else "speech_tokenizer/config.json"
    d = official_file(repo, path)
    up = Qwen3TTSTokenizerV2Config(**copy.deepcopy(d))
    assert "_frame_rate" in d["encoder_config"] and "frame_rate" not in d["encoder_config"]  # as published
    e = d["encoder_config"]
    assert mimi_frame_rate(e, e["sampling_rate"], tuple(e["upsampling_ratios"])) == up.encoder_config.frame_rate == 12.5
    enc = SpeechEncoderConfig.from_upstream(d)
    assert (enc.valid_num_quantizers, enc.num_quantizers, enc.codebook_size, enc.encode_downsample_rate) == (
        up.encoder_valid_num_quantizers,
        up.encoder_config.num_quantizers,
        up.encoder_config.codebook_size,
        up.encode_downsample_rate,
    )
    codec = CodecConfig.from_upstream(d)
    dec = up.decoder_config
    assert (codec.num_quantizers, codec.codebook_size, codec.codebook_dim) == (
        dec.num_quantizers,
        dec.codebook_size,
        dec.codebook_dim,
    )
    assert tuple(codec.upsample_rates) == tuple(dec.upsample_rates)
    assert tuple(codec.upsampling_ratios) == tuple(dec.upsampling_ratios)
    assert (codec.decode_upsample_rate, codec.output_sample_rate) == (up.decode_upsample_rate, up.output_sample_rate)


# --- the speech tokenizer's config -------------------------------------------------------------

ENCODER_KEYS = dict(
    num_filters=st.sampled_from([8, 16, 64]),
    kernel_size=st.sampled_from([3, 7]),
    residual_kernel_size=st.sampled_from([3, 5]),
    last_kernel_size=st.sampled_from([3, 7]),
    num_residual_layers=st.integers(1, 2),
    dilation_growth_rate=st.integers(1, 3),
    compress=st.integers(1, 3),
    hidden_size=st.sampled_from([16, 512]),
    num_hidden_layers=st.integers(1, 8),
    num_attention_heads=st.sampled_from([2, 8]),
    num_key_value_heads=st.sampled_from([2, 8]),
    head_dim=st.one_of(st.none(), st.sampled_from([8, 64])),
    intermediate_size=st.integers(8, 2048),
    norm_eps=st.sampled_from([1e-5, 1e-6]),
    rope_theta=st.sampled_from([10000.0, 500000.0]),
    num_quantizers=st.integers(16, 32),
    num_semantic_quantizers=st.integers(1, 2),
    codebook_size=st.sampled_from([16, 2048]),
    codebook_dim=st.one_of(st.none(), st.sampled_from([8, 256])),
    vector_quantization_hidden_dimension=st.sampled_from([8, 256]),
)
DECODER_KEYS = dict(
    latent_dim=st.sampled_from([16, 1024]),
    codebook_size=st.sampled_from([16, 2048]),
    decoder_dim=st.sampled_from([32, 1536]),
    hidden_size=st.sampled_from([16, 512]),
    intermediate_size=st.integers(8, 3072),
    num_hidden_layers=st.integers(1, 8),
    num_attention_heads=st.sampled_from([2, 16]),
    num_key_value_heads=st.sampled_from([2, 16]),
    rms_norm_eps=st.sampled_from([1e-5, 1e-6]),
    rope_theta=st.sampled_from([10000, 500000]),
    sliding_window=st.integers(8, 128),
    num_quantizers=st.integers(2, 16),
    upsample_rates=st.sampled_from([[8, 5, 4, 3], [4, 4, 4]]),
    upsampling_ratios=st.sampled_from([[2, 2], [2]]),
)


@st.composite
def speech_tokenizer_configs(draw) -> dict:
    enc = {k: draw(s) for k, s in ENCODER_KEYS.items() if draw(optional)}
    dec = {k: draw(s) for k, s in DECODER_KEYS.items() if draw(optional)}
    dec["codebook_dim"] = draw(st.sampled_from([8, 512]))  # upstream's decoder config has no default for it
    d = dict(model_type="qwen3_tts_tokenizer_12hz", encoder_config=enc, decoder_config=dec)
    for key, strategy in dict(
        encoder_valid_num_quantizers=st.integers(1, 16),
        decode_upsample_rate=st.sampled_from([1920, 960]),
        encode_downsample_rate=st.sampled_from([1920, 960]),
        output_sample_rate=st.sampled_from([24000, 16000]),
    ).items():
        if draw(optional):
            d[key] = draw(strategy)
    return d


def _attr(c, name: str):
    value = getattr(c, name)
    return tuple(value) if isinstance(value, list) else value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=speech_tokenizer_configs())
def test_the_speech_tokenizer_config_reads_as_upstreams_classes(d):
    """Every encoder and decoder field the runtime reads, from the dict as given and as upstream's
    class writes it back, against the attributes upstream's classes resolve."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config

    up = Qwen3TTSTokenizerV2Config(**copy.deepcopy(d))
    e, dc = up.encoder_config, up.decoder_config
    written = json.loads(up.to_json_string())
    for source in (d, written):
        enc = SpeechEncoderConfig.from_upstream(source)
        for name in ENCODER_KEYS:
            ours = {"vector_quantization_hidden_dimension": enc.quantizer_dim}.get(name, getattr(enc, name, None))
            assert ours == _attr(e, name), name
        assert enc.valid_num_quantizers == up.encoder_valid_num_quantizers
        assert enc.encode_downsample_rate == up.encode_downsample_rate
        codec = CodecConfig.from_upstream(source)
        for name in (*DECODER_KEYS, "codebook_dim"):
            assert getattr(codec, name) == _attr(dc, name), name
        # The decoder's attention takes getattr(config, "head_dim", hidden // heads).
        assert codec.head_dim == getattr(dc, "head_dim", dc.hidden_size // dc.num_attention_heads)
        assert (codec.decode_upsample_rate, codec.output_sample_rate) == (
            up.decode_upsample_rate,
            up.output_sample_rate,
        )
