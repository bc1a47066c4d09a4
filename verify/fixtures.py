"""Fixture factory: complete upstream-format checkpoint directories for tiny random configs.

A directory written here is what a released Qwen3-TTS repo holds (config.json,
generation_config.json, model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
preprocessor_config.json, speech_tokenizer/...), only tiny, and it loads through upstream's own
``qwen_tts.Qwen3TTSModel.from_pretrained``.

Weights are drawn so that every one of them matters. Upstream's init (std 0.02, unit norms, zero
biases, zero codebooks) gives near-uniform logits and near-silent audio, where any
implementation "matches". Here: linear layers keep activations at unit scale (std 1/sqrt(fan_in)),
output heads are peaked (std 4/sqrt(fan_in)), norms, biases and layer scales are perturbed away from
their neutral values, and codebooks are random.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

MODEL_TYPES = ("base", "custom_voice", "voice_design")

# The seed of each model type's fixture in the test suite (conftest) and in the goldens recorded
# from it (verify/goldens.py).
SUITE_SEEDS = {model_type: 10 + i for i, model_type in enumerate(MODEL_TYPES)}

# Text-token layout of the tiny tokenizer: 256 byte tokens, BPE merges up to _N_BPE, then specials.
_N_BPE = 300
SPECIAL_TOKENS = {
    "<|endoftext|>": 300,
    "<|im_start|>": 301,
    "<|im_end|>": 302,
    "<tts_pad>": 303,
    "<tts_text_bos>": 304,
    "<tts_text_eod>": 305,
}
TEXT_VOCAB_SIZE = 320

GENERATION_CONFIG = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}


def _tiny_talker_config(num_code_groups: int) -> dict[str, Any]:
    """talker_config of the tiny model (code predictor included)."""
    talker = dict(
        vocab_size=1040,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_theta=1000000,
        rope_scaling={"interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default"},
        num_code_groups=num_code_groups,
        text_hidden_size=24,
        text_vocab_size=TEXT_VOCAB_SIZE,
        position_id_per_seconds=13,
        attention_bias=False,
        use_cache=True,
        tie_word_embeddings=False,
        codec_eos_token_id=17,
        codec_think_id=18,
        codec_nothink_id=19,
        codec_think_bos_id=20,
        codec_think_eos_id=21,
        codec_pad_id=22,
        codec_bos_id=23,
        codec_language_id={"english": 30, "chinese": 31, "german": 33},
        spk_id={},
        spk_is_dialect={},
        code_predictor_config=dict(
            vocab_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            hidden_act="silu",
            max_position_embeddings=64,
            rope_theta=1000000,
            rms_norm_eps=1e-6,
            num_code_groups=num_code_groups,
            layer_types=["full_attention"] * 2,
            attention_bias=False,
            use_cache=True,
            tie_word_embeddings=False,
            rope_scaling=None,
        ),
    )
    return talker


def tiny_config(model_type: str, *, num_code_groups: int = 4) -> dict[str, Any]:
    """config.json content for a tiny model, shaped like the released files.

    The codec vocabulary is 16 codes + 1024 special ids: upstream suppresses the top 1024 ids
    unconditionally, so a smaller vocabulary would suppress real codes.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}")
    talker = _tiny_talker_config(num_code_groups)
    cfg: dict[str, Any] = dict(
        architectures=["Qwen3TTSForConditionalGeneration"],
        model_type="qwen3_tts",
        tts_model_type=model_type,
        tts_model_size="tiny",
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        im_start_token_id=SPECIAL_TOKENS["<|im_start|>"],
        im_end_token_id=SPECIAL_TOKENS["<|im_end|>"],
        tts_pad_token_id=SPECIAL_TOKENS["<tts_pad>"],
        tts_bos_token_id=SPECIAL_TOKENS["<tts_text_bos>"],
        tts_eos_token_id=SPECIAL_TOKENS["<tts_text_eod>"],
        assistant_token_id=1,
        transformers_version="4.57.3",
        talker_config=talker,
    )
    if model_type == "base":
        # Written without model_type, as released files are: upstream's speaker config class
        # takes no **kwargs, so any extra key would break loading.
        cfg["speaker_encoder_config"] = dict(
            mel_dim=128,
            enc_dim=32,
            enc_channels=[32, 32, 32, 32, 96],
            enc_kernel_sizes=[5, 3, 3, 3, 1],
            enc_dilations=[1, 2, 3, 4, 1],
            enc_attention_channels=16,
            enc_res2net_scale=8,
            enc_se_channels=8,
            sample_rate=24000,
        )
    elif model_type == "custom_voice":
        talker["spk_id"] = {"alice": 40, "bob": 41, "carol": 42}
        talker["spk_is_dialect"] = {"alice": False, "bob": "beijing_dialect", "carol": False}
        talker["codec_language_id"]["beijing_dialect"] = 32
    return cfg


def tiny_speech_tokenizer_config() -> dict[str, Any]:
    return dict(
        model_type="qwen3_tts_tokenizer_12hz",
        architectures=["Qwen3TTSTokenizerV2Model"],
        encoder_valid_num_quantizers=4,
        input_sample_rate=24000,
        output_sample_rate=24000,
        decode_upsample_rate=1920,
        encode_downsample_rate=1920,
        encoder_config=dict(
            audio_channels=1,
            num_filters=8,
            kernel_size=7,
            residual_kernel_size=3,
            last_kernel_size=3,
            num_residual_layers=1,
            compress=2,
            upsampling_ratios=[8, 6, 5, 4],
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=32,
            hidden_act="gelu",
            norm_eps=1e-5,
            layer_scale_initial_scale=0.01,
            rope_theta=10000,
            max_position_embeddings=8000,
            sliding_window=250,
            num_quantizers=8,
            num_semantic_quantizers=1,
            codebook_size=16,
            codebook_dim=8,
            vector_quantization_hidden_dimension=8,
            pad_mode="constant",
            use_causal_conv=True,
            sampling_rate=24000,
            frame_rate=12.5,
            upsample_groups=16,
        ),
        decoder_config=dict(
            latent_dim=16,
            codebook_dim=8,
            codebook_size=16,
            decoder_dim=32,
            hidden_size=16,
            intermediate_size=32,
            hidden_act="silu",
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            rms_norm_eps=1e-5,
            layer_scale_initial_scale=0.01,
            rope_theta=10000,
            max_position_embeddings=8000,
            sliding_window=72,
            num_quantizers=4,
            upsample_rates=[8, 5, 4, 3],
            upsampling_ratios=[2, 2],
        ),
    )


# The released top-level preprocessor_config.json, and the feature extractor of speech_tokenizer/
# (upstream's tokenizer wrapper loads it with AutoFeatureExtractor).
PROCESSOR_CONFIG = {"processor_class": "Qwen3TTSProcessor"}
SPEECH_TOKENIZER_FEATURE_EXTRACTOR = dict(
    feature_size=1,
    sampling_rate=24000,
    padding_value=0.0,
    chunk_length_s=None,
    overlap=None,
    padding_side="right",
    return_attention_mask=True,
)

# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _is_head(name: str) -> bool:
    return name.endswith("codec_head.weight") or ".lm_head." in name


def _is_norm_weight(name: str) -> bool:
    return name.endswith(".weight") and ("norm" in name.rsplit(".", 2)[-2] or "layernorm" in name)


def init_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Draw one tensor so that it matters (see module docstring). Deterministic given ``gen``."""
    randn = lambda: torch.randn(shape, generator=gen)  # noqa: E731
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) == 0:
        return torch.tensor(1.0)
    if _is_norm_weight(name) or leaf == "gamma":
        return 1.0 + 0.2 * randn()
    if leaf == "bias":
        if name.startswith("speaker_encoder."):
            # Every speaker-encoder conv feeds a ReLU: a positive mean keeps most units alive.
            return 0.5 + 0.1 * randn()
        return 0.1 * randn()
    if leaf in ("alpha", "beta"):  # SnakeBeta, log-scale parameters
        return 0.2 * randn()
    if leaf == "scale":  # layer scale: upstream starts at 0.01, which would mute the transformer
        return 0.5 + 0.1 * randn()
    if leaf == "cluster_usage":
        return 0.5 + torch.rand(shape, generator=gen) * 1.5
    if leaf == "embed_sum":
        # The encoder's codebooks, at the scale of the projected encoder output (about 1.5 per
        # vector here), so that nearest-codebook search spreads over the codebook.
        return 0.4 * randn()
    if leaf == "embedding_sum":
        return randn()
    if leaf == "initialized":
        return torch.ones(shape)
    if "embedding" in name and len(shape) == 2:  # token embeddings: unit scale
        return randn()
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    gain = 1.0
    if _is_head(name):
        gain = 4.0
    elif name == "speaker_encoder.asp.conv.weight":
        gain = 3.0  # peaked attention over time, so the pooling weights are not uniform
    elif name.startswith("decoder.decoder.") and shape[0] == 1:
        gain = 0.02  # the codec's last conv: speech-like amplitude (RMS ~0.15), rarely clipped at +-1
    std = gain / math.sqrt(fan_in)
    return std * randn()


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite a module's floating-point tensors in place with the fixture initialiser."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.state_dict().items():
        if p.is_floating_point():
            p.copy_(init_tensor(name, p.shape, gen))
    return module


_DRAWN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _draw(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    return init_tensor(name, shape, gen).to(torch.float32).contiguous()


def random_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in module.state_dict().items():
        if tensor.dtype in _DRAWN_DTYPES:
            out[name] = _draw(name, tensor.shape, gen)
        else:
            out[name] = tensor.clone().contiguous()
    return out


# --------------------------------------------------------------------------------------------
# Tensor specs: the same weights without instantiating upstream's modules
# --------------------------------------------------------------------------------------------
# random_state_dict draws from one generator in the order of the module's state_dict, so the
# ordered (name, shape, dtype) list of upstream's tensors is all it needs. Recorded once from
# upstream (tensor_spec below, written by `python -m q3tts.verify.goldens`), that list lets the
# fast test tier write bit-identical fixtures without qwen_tts; the reference tier checks the
# recorded list against upstream's modules.

TENSOR_SPECS_FORMAT = "q3tts-fixture-tensor-specs"


class TensorSpecError(ValueError):
    """A recorded tensor spec that does not fit the fixture it is asked to write."""


def tensor_spec(module: torch.nn.Module) -> list[list]:
    """[[name, shape, dtype name], ...] of the module's state_dict, in its order."""
    return [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in module.state_dict().items()]


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of a config dict, independent of key order: ties a recorded spec to its config."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def state_dict_from_spec(spec: list[list], seed: int) -> dict[str, torch.Tensor]:
    """What random_state_dict gives for a module whose state_dict has this spec: the same
    generator, the same order, the same init_tensor."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, dtype in spec:
        if getattr(torch, dtype, None) not in _DRAWN_DTYPES:
            raise TensorSpecError(
                f"tensor {name} is {dtype}: its values come from upstream's init, a spec cannot give them"
            )
        out[name] = _draw(name, torch.Size(shape), gen)
    return out


def load_tensor_specs(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    specs = json.loads(path.read_text(encoding="utf-8"))
    if specs.get("format") != TENSOR_SPECS_FORMAT:
        raise TensorSpecError(f"{path}: not a fixture tensor-spec file (format {specs.get('format')!r})")
    return specs


def _spec_for(specs: dict[str, Any], part: str, config: dict[str, Any]) -> list[list]:
    entry = specs["parts"].get(part)
    if entry is None:
        raise TensorSpecError(f"no recorded tensor spec for {part!r}")
    if entry["config_sha256"] != config_digest(config):
        raise TensorSpecError(
            f"the recorded tensor spec for {part!r} was made for another config; "
            "regenerate it in the reference environment: python -m q3tts.verify.goldens"
        )
    return entry["tensors"]


def record_tensor_specs() -> dict[str, Any]:
    """The tensor specs of every fixture part, from upstream's own modules (needs qwen_tts)."""
    parts = {}
    for model_type in MODEL_TYPES:
        config = tiny_config(model_type)
        parts[f"talker.{model_type}"] = dict(
            config_sha256=config_digest(config), tensors=tensor_spec(build_upstream_modules(config))
        )
    codec_config = tiny_speech_tokenizer_config()
    parts["speech_tokenizer"] = dict(
        config_sha256=config_digest(codec_config), tensors=tensor_spec(build_upstream_codec(codec_config))
    )
    for model_type in MODEL_TYPES:
        parts[f"files.{model_type}"] = record_written_files(model_type)
    return dict(format=TENSOR_SPECS_FORMAT, format_version=1, parts=parts)


# --------------------------------------------------------------------------------------------
# Text tokenizer files
# --------------------------------------------------------------------------------------------

_CORPUS = (
    (
        "Hello world, this is a tiny text to speech model. The quick brown fox jumps over the lazy dog. "
        "Speak slowly and clearly, with a warm voice. 1234567890 numbers and 中文 字符 and emoji. "
    )
    * 4
    + "assistant\nuser\n" * 40
    + " HelloWorld CamelCase" * 30
)
# Roles must be single tokens (upstream slices the template by position); the camel-case words
# give merges across a case boundary, where the Qwen2 and Mistral split regexes disagree.


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2 / Qwen2)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _train_bpe(corpus: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiny deterministic byte-level BPE trainer (most frequent pair, ties by first seen)."""
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    words: dict[tuple[str, ...], int] = {}
    # Pre-split roughly as Qwen2's regex does: words with their leading space, punctuation, newlines.
    for piece in re.findall(r" ?[^\W\d]+| ?\d| ?[^\w\s]+|\s+", corpus):
        sym = tuple(b2u[b] for b in piece.encode("utf-8"))
        words[sym] = words.get(sym, 0) + 1
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        counts: dict[tuple[str, str], int] = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + c
        if not counts:
            break
        best = max(counts, key=lambda p: counts[p])
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def write_text_tokenizer(dst: Path, filler_tokens: int = 0) -> None:
    """vocab.json + merges.txt + tokenizer_config.json. ``filler_tokens`` pads the vocabulary
    with unreachable entries (a >100k vocabulary triggers upstream's fix_mistral_regex logic);
    the special tokens then follow the filler."""
    vocab, merges = _train_bpe(_CORPUS, _N_BPE - 256)
    for i in range(filler_tokens):
        vocab[f"<filler_{i}>"] = len(vocab)
    specials = {t: i - _N_BPE + len(vocab) for t, i in SPECIAL_TOKENS.items()}
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    added = {
        str(i): dict(content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        for t, i in specials.items()
    }
    tok_cfg = dict(
        add_bos_token=False,
        add_prefix_space=False,
        added_tokens_decoder=added,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        eos_token="<|im_end|>",
        errors="replace",
        model_max_length=32768,
        pad_token="<|endoftext|>",
        split_special_tokens=False,
        tokenizer_class="Qwen2Tokenizer",
        unk_token=None,
    )
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------------------------


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_upstream_modules(config: dict[str, Any]):
    """Instantiate upstream's talker model for ``config`` (fp32, default init)."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**copy.deepcopy(config)))


def build_upstream_codec(config: dict[str, Any]):
    """Instantiate upstream's 12 Hz speech tokenizer for ``config`` (fp32, default init)."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    return Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**copy.deepcopy(config)))


def _write_speech_tokenizer_from_spec(dst: Path, seed: int, tensor_specs: dict[str, Any]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    state = state_dict_from_spec(_spec_for(tensor_specs, "speech_tokenizer", tiny_speech_tokenizer_config()), seed)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


def save_with_upstream_classes(model: torch.nn.Module, dst: Path, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into upstream's ``model`` and let upstream's own save_pretrained write it:
    config.json (every key, as transformers serialises upstream's config class), weights, and the
    generation config the model carries."""
    model.load_state_dict(state, strict=True)
    model.save_pretrained(str(dst))


def drop_unloadable_speaker_model_type(config_path: Path) -> bool:
    """The one edit to what upstream writes. qwen-tts 0.1.1 saves a Base model's
    speaker_encoder_config with ``"model_type": ""`` (transformers serialises every sub-config's
    model_type), and its own from_pretrained then refuses the file: Qwen3TTSSpeakerEncoderConfig
    takes no **kwargs (TypeError: unexpected keyword argument 'model_type'). Released Base files
    carry no such key. Returns whether the key was there; tests/test_upstream_written_config.py
    shows the round trip failing without this edit, and the standalone reading the file with it."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    speaker = config.get("speaker_encoder_config")
    if not isinstance(speaker, dict) or "model_type" not in speaker:
        return False
    del speaker["model_type"]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


def _write_with_upstream_classes(
    dst: Path, model_type: str, seed: int, dtype: torch.dtype, config: dict[str, Any] | None = None
) -> None:
    """The reference fixture: every file written by upstream's classes (and the transformers classes
    upstream loads them with), from the fixture initialiser's weights."""
    from transformers import GenerationConfig

    talker = build_upstream_modules(config or tiny_config(model_type))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in random_state_dict(talker, seed).items()}
    talker.to(dtype)
    # Upstream reads generation_config.json raw; GenerationConfig keeps the subtalker_* keys as is.
    talker.generation_config = GenerationConfig(**GENERATION_CONFIG)
    save_with_upstream_classes(talker, dst, state)
    drop_unloadable_speaker_model_type(dst / "config.json")
    codec = build_upstream_codec(tiny_speech_tokenizer_config())
    save_with_upstream_classes(codec, dst / "speech_tokenizer", random_state_dict(codec, seed + 1))
    _write_side_files_with_upstream_classes(dst)


def _write_side_files_with_upstream_classes(dst: Path) -> None:
    """The text tokenizer (the tiny BPE, saved by upstream's processor), the speech tokenizer's
    feature extractor, and the released top-level preprocessor_config.json."""
    from qwen_tts.core.models import Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor, Qwen2Tokenizer

    EncodecFeatureExtractor(**SPEECH_TOKENIZER_FEATURE_EXTRACTOR).save_pretrained(str(dst / "speech_tokenizer"))
    with tempfile.TemporaryDirectory() as raw:
        write_text_tokenizer(Path(raw))
        Qwen3TTSProcessor(tokenizer=Qwen2Tokenizer.from_pretrained(raw)).save_pretrained(str(dst))
    # The processor writes no preprocessor_config.json; released repos carry this one.
    _dump(dst / "preprocessor_config.json", PROCESSOR_CONFIG)


def written_files(directory: str | Path) -> dict[str, str]:
    """{relative path: text} of every file of a checkpoint directory but the weights."""
    directory = Path(directory)
    return {
        p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix != ".safetensors"
    }


def _files_digest(model_type: str) -> str:
    return config_digest({"config": tiny_config(model_type), "speech_tokenizer": tiny_speech_tokenizer_config()})


def record_written_files(model_type: str) -> dict[str, Any]:
    """The files upstream's classes write for this fixture besides the weights (needs qwen_tts)."""
    with tempfile.TemporaryDirectory() as tmp:
        _write_with_upstream_classes(Path(tmp), model_type, 0, torch.float32)
        return dict(config_sha256=_files_digest(model_type), files=written_files(tmp))


def _write_recorded_files(dst: Path, model_type: str, tensor_specs: dict[str, Any]) -> None:
    part = f"files.{model_type}"
    entry = tensor_specs["parts"].get(part)
    if entry is None or entry["config_sha256"] != _files_digest(model_type):
        raise TensorSpecError(
            f"no files recorded from upstream's classes for {part!r} and this config; "
            "regenerate them in the reference environment: python -m q3tts.verify.goldens"
        )
    for rel, text in entry["files"].items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_text(text, encoding="utf-8")


def write_upstream_checkpoint(
    dst: str | Path,
    model_type: str = "base",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    tensor_specs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a complete tiny upstream checkpoint directory and return its path.

    ``config`` replaces tiny_config(model_type) (a variant such as the training fixture's; upstream's
    classes only).

    Without ``tensor_specs`` (the reference environment) upstream's own classes write every file
    through save_pretrained. With ``tensor_specs`` (see load_tensor_specs; the fast tier, without
    qwen_tts) the weights come from the recorded tensor specs and every other file is the recorded
    text upstream's classes wrote: the same bytes (tests/test_goldens.py checks it).

    ``dtype`` is the storage dtype of model.safetensors (released files are bf16; fp32 keeps the
    fp32 parity tests free of storage rounding); the spec writer records fp32 only. The speech
    tokenizer is always fp32, as released.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if tensor_specs is None:
        _write_with_upstream_classes(dst, model_type, seed, dtype, config)
        return dst
    if config is not None:
        raise TensorSpecError("a config variant needs upstream's classes; the recorded specs are for tiny_config")
    if dtype != torch.float32:
        raise TensorSpecError(f"the recorded fixture files are fp32; {dtype} needs upstream's classes")
    config = tiny_config(model_type)
    state = state_dict_from_spec(_spec_for(tensor_specs, f"talker.{model_type}", config), seed)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    _write_speech_tokenizer_from_spec(dst / "speech_tokenizer", seed + 1, tensor_specs)
    _write_recorded_files(dst, model_type, tensor_specs)
    return dst


def shard_checkpoint(directory: str | Path, n_shards: int) -> list[str]:
    """Rewrite ``model.safetensors`` of ``directory`` as ``n_shards`` shards plus an index, the
    way large released checkpoints are stored."""
    from safetensors.torch import load_file

    directory = Path(directory)
    state = load_file(str(directory / "model.safetensors"))
    names = list(state)
    per = math.ceil(len(names) / n_shards)
    weight_map, files = {}, []
    for i in range(n_shards):
        file = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: state[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
        files.append(file)
    total = sum(t.numel() * t.element_size() for t in state.values())
    _dump(directory / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    (directory / "model.safetensors").unlink()
    return files


def write_release_size_checkpoint(
    dst: str | Path,
    size: str = "0.6B",
    model_type: str = "custom_voice",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """An upstream checkpoint directory at a released size (config from verify/released.py, the
    fixture initialiser's weights, bf16 talker and fp32 codec as released, the tiny tokenizer),
    written by upstream's classes. Several GB: for verify-parity at real size, never for the suite."""
    from transformers import GenerationConfig

    from .released import released_config, released_speech_tokenizer_config

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    talker = randomize_(build_upstream_modules(released_config(size, model_type)), seed).to(dtype)
    talker.generation_config = GenerationConfig(**GENERATION_CONFIG)
    talker.save_pretrained(str(dst))
    drop_unloadable_speaker_model_type(dst / "config.json")
    del talker
    codec = randomize_(build_upstream_codec(released_speech_tokenizer_config()), seed + 1)
    codec.save_pretrained(str(dst / "speech_tokenizer"))
    del codec
    _write_side_files_with_upstream_classes(dst)
    return dst
