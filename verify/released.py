"""config.json of the released 12 Hz checkpoints (values from upstream.md section 2), for
random-weight models at real size: benchmarks and shape checks, never downloads."""

from __future__ import annotations

import copy
from typing import Any

LANGUAGES = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "italian": 2070,
    "portuguese": 2071,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
}
SPEAKERS = {
    "serena": 3066,
    "vivian": 3065,
    "uncle_fu": 3010,
    "ryan": 3061,
    "aiden": 2861,
    "ono_anna": 2873,
    "sohee": 2864,
    "eric": 2875,
    "dylan": 2878,
}
DIALECT_SPEAKERS = {"dylan": "beijing_dialect", "eric": "sichuan_dialect"}

SIZES = {"1.7B": ("1b7", 2048, 6144), "0.6B": ("0b6", 1024, 3072)}


def released_config(size: str, model_type: str) -> dict[str, Any]:
    tag, hidden, inter = SIZES[size]
    langs = copy.deepcopy(LANGUAGES)
    spk_id, spk_dialect = {}, {}
    if model_type == "custom_voice":
        langs.update({"beijing_dialect": 2074, "sichuan_dialect": 2062})
        spk_id = dict(SPEAKERS)
        spk_dialect = {s: DIALECT_SPEAKERS.get(s, False) for s in SPEAKERS}
    cfg: dict[str, Any] = {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tts_model_type": model_type,
        "tts_model_size": tag,
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "im_start_token_id": 151644,
        "im_end_token_id": 151645,
        "tts_pad_token_id": 151671,
        "tts_bos_token_id": 151672,
        "tts_eos_token_id": 151673,
        "assistant_token_id": 77091,
        "talker_config": {
            "vocab_size": 3072,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "rope_scaling": {"interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
            "num_code_groups": 16,
            "text_hidden_size": 2048,
            "text_vocab_size": 151936,
            "position_id_per_seconds": 13,
            "attention_bias": False,
            "codec_eos_token_id": 2150,
            "codec_think_id": 2154,
            "codec_nothink_id": 2155,
            "codec_think_bos_id": 2156,
            "codec_think_eos_id": 2157,
            "codec_pad_id": 2148,
            "codec_bos_id": 2149,
            "codec_language_id": langs,
            "spk_id": spk_id,
            "spk_is_dialect": spk_dialect,
            "code_predictor_config": {
                "vocab_size": 2048,
                "hidden_size": 1024,
                "intermediate_size": 3072,
                "num_hidden_layers": 5,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "hidden_act": "silu",
                "max_position_embeddings": 65536,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000,
                "rope_scaling": None,
                "num_code_groups": 16,
                "layer_types": ["full_attention"] * 5,
            },
        },
    }
    if model_type == "base":
        cfg["speaker_encoder_config"] = {"enc_dim": hidden, "sample_rate": 24000}
    return cfg


def released_speech_tokenizer_config() -> dict[str, Any]:
    """speech_tokenizer/config.json of the released 12 Hz tokenizer (upstream.md section 2.5)."""
    return {
        "model_type": "qwen3_tts_tokenizer_12hz",
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "encoder_valid_num_quantizers": 16,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": 1920,
        "encode_downsample_rate": 1920,
        "encoder_config": {
            "audio_channels": 1,
            "num_filters": 64,
            "kernel_size": 7,
            "residual_kernel_size": 3,
            "last_kernel_size": 3,
            "num_residual_layers": 1,
            "compress": 2,
            "upsampling_ratios": [8, 6, 5, 4],
            "hidden_size": 512,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "intermediate_size": 2048,
            "hidden_act": "gelu",
            "norm_eps": 1e-5,
            "layer_scale_initial_scale": 0.01,
            "rope_theta": 10000,
            "max_position_embeddings": 8000,
            "sliding_window": 250,
            "num_quantizers": 32,
            "num_semantic_quantizers": 1,
            "codebook_size": 2048,
            "codebook_dim": 256,
            "vector_quantization_hidden_dimension": 256,
            "pad_mode": "constant",
            "use_causal_conv": True,
            "sampling_rate": 24000,
            "_frame_rate": 12.5,  # as published (transformers saves MimiConfig.frame_rate so)
        },
        "decoder_config": {
            "latent_dim": 1024,
            "codebook_dim": 512,
            "codebook_size": 2048,
            "decoder_dim": 1536,
            "hidden_size": 512,
            "intermediate_size": 1024,
            "hidden_act": "silu",
            "num_hidden_layers": 8,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 64,
            "rms_norm_eps": 1e-5,
            "layer_scale_initial_scale": 0.01,
            "rope_theta": 10000,
            "max_position_embeddings": 8000,
            "sliding_window": 72,
            "num_quantizers": 16,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "num_semantic_quantizers": 1,
            "semantic_codebook_size": 4096,
            "vector_quantization_hidden_dimension": 512,
        },
    }
