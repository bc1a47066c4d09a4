"""The bad-input catalogue of the runtime API: one row per case, its decided behaviour.

Each row is either ``raises`` (the error type and a pattern its message must match: it names the
argument, the bad value and what is allowed) or ``works``. A ``works`` row says how upstream
treats the same input: ``upstream=SAME`` (upstream's Qwen3TTSModel has the same method; the row's
call runs on both and the results must be equal), a callable ``(upstream wrapper, ours) -> result``
for an upstream API of another name, or ``Refuses(pattern)`` when upstream fails on the input
(the reference test checks that it does). Entries with no upstream counterpart (streaming,
training) say so in NO_UPSTREAM.

tests/test_bad_inputs.py runs every row (and the CLI rows of tests/bad_inputs_cli.py);
docs/bad-inputs.md is rendered from both tables (`python -m tests.bad_inputs` rewrites it, and a
test checks it is current).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from q3tts.standalone.checkpoint import CheckpointError
from q3tts.standalone.config import ConfigError
from q3tts.standalone.work_memory import WorkTooLarge

# Hypothesis examples per run of tests/test_fuzz_inputs.py: its properties times their max_examples
# (a test checks this number against the file).
FUZZ_EXAMPLES_PER_RUN = 480

SAME = "same"  # upstream's wrapper has the same method: run the row's call on it and compare


@dataclass(frozen=True)
class Refuses:
    """Upstream fails on this input (``call(upstream wrapper, ours)`` raises an error matching
    ``error``); ours decides otherwise."""

    error: str
    call: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Row:
    entry: str  # the public entry point
    case: str
    model_type: str  # the fixture it runs on
    call: Callable[[Any], Any]  # (model) -> result
    raises: type[Exception] | None  # None: it works
    match: str = ""  # pattern of the message (raises) or what it does (works)
    upstream: Any = None  # works rows: SAME, a callable (wrapper, ours) -> result, or Refuses


# Entry points upstream has no counterpart of: their works rows are not compared.
NO_UPSTREAM = ("stream_custom_voice", "stream_voice_design", "stream_voice_clone", "training_forward", "collate")


def _codes(m, frames=3):
    return torch.zeros(frames, m.config.talker.num_code_groups, dtype=torch.long)


def _wav(n=24000):
    t = np.arange(n) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


G = dict(max_new_tokens=3)  # keep generating cases short
GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=3)


def _ids(m, text="Hi there."):
    return [torch.tensor([m.text_tokenizer.encode(m.text_tokenizer.assistant_text(text))])]


def _load_edited(m, edit, name="manifest.json", then=None):
    """from_pretrained on a copy of m's checkpoint with one JSON file edited (tests/bad_inputs_edges.py);
    then(model), if given, runs on it while the copy exists."""
    from bad_inputs_edges import load_edited

    return load_edited(m, edit, name, then)


def _load_changed(m, change, **kwargs):
    """from_pretrained(**kwargs) on a copy of m's checkpoint changed by change(directory)."""
    from bad_inputs_edges import load_changed

    return load_changed(m, change, **kwargs)


def _flip_byte(rel):
    from bad_inputs_edges import flip_byte

    return flip_byte(rel)


def _codec_layers(c):
    c["decoder_config"]["num_hidden_layers"] = 10**7


def _encoder_layers(c):
    c["encoder_config"]["num_hidden_layers"] = 10**7


def _with_fifo(call):
    from bad_inputs_edges import with_fifo

    return with_fifo(call)


def _with_env(name, value, call):
    from bad_inputs_edges import with_env

    return with_env(name, value, call)


def _with_wav_file(call):
    from bad_inputs_edges import with_wav_file

    return with_wav_file(call, _wav())


def _manifest_entry(rel, entry=None):
    entry = {"sha256": "0" * 64, "size": 1} if entry is None else entry
    return lambda manifest: manifest["files"].__setitem__(rel, entry)


def _eos_of(m):
    """A group-0 code that greedy generation emits at frame 4: as the EOS id it ends the run early."""
    greedy = dict(languages=["auto"], do_sample=False, subtalker_dosample=False)
    (codes,), _ = m.generate(input_ids=_ids(m), max_new_tokens=8, **greedy)
    return int(codes[4, 0])


def _huge(m, ids=None, generate=None):
    greedy = dict(languages=["auto"], do_sample=False, subtalker_dosample=False)
    generate = generate or m.generate
    (out,), _ = generate(input_ids=ids or _ids(m), max_new_tokens=10**12, eos_token_id=_eos_of(m), **greedy)
    assert 1 <= out.shape[0] <= 5
    return [out]


def _cv(m, text="Hello.", **kw):
    return m.generate_custom_voice(text, speaker="alice", **{**G, **kw})


def _up_decode(up, codes):
    """Upstream's decode of the same codes: its speech tokenizer's decode([{"audio_codes": ...}])."""
    items = codes if isinstance(codes, list) else [codes]
    return up.model.speech_tokenizer.decode([{"audio_codes": c} for c in items])


def _padded(m):
    return torch.cat([_codes(m) + 3, _codes(m, 2) - 1])


def _encode_up(wav, sr=24000):
    return lambda up, m: up.model.speech_tokenizer.encode(wav, sr=sr).audio_codes


def _stream(method, m, *args, **kw):
    return list(getattr(m, method)(*args, **{**G, **kw}))


def _batch(m, frames=3):
    from q3tts.standalone.training import TrainingItem, collate, training_text_ids

    item = TrainingItem(training_text_ids(m.text_tokenizer, "Hello there."), _codes(m, frames) + 1)
    return collate([item], m.config)


def _item(m, codes=None, text_ids=None):
    from q3tts.standalone.training import TrainingItem, training_text_ids

    ids = training_text_ids(m.text_tokenizer, "Hello there.") if text_ids is None else text_ids
    return TrainingItem(ids, _codes(m) if codes is None else codes)


def _collate(m, *items):
    from q3tts.standalone.training import collate

    return collate(list(items), m.config)


def _forward(m, batch=None, spk=None, **kw):
    from q3tts.standalone.training import training_forward

    batch = _batch(m) if batch is None else batch
    hidden = m.config.talker.transformer.hidden_size
    spk = torch.zeros(1, hidden) if spk is None else spk
    with torch.no_grad():
        return training_forward(m, batch, spk, **kw)


def _options(**kw):
    from q3tts.standalone.finetune import FinetuneOptions

    return FinetuneOptions(**kw)


def _train(m, items=None, spk=None, **kw):
    from q3tts.standalone.finetune import train_epochs

    items = [_item(m)] if items is None else items
    spk = torch.zeros(len(items), m.config.talker.transformer.hidden_size) if spk is None else spk
    return train_epochs(m, items, spk, **kw)  # a generator: the row checks that the call itself raises


ROWS: tuple[Row, ...] = (
    # --- decode_codes ---------------------------------------------------------------------------
    Row(
        "decode_codes",
        "code past the codebook (99999)",
        "base",
        lambda m: m.decode_codes(_codes(m) + 99999),
        ValueError,
        r"has code 99999 at frame 0, group 0; codes must be in 0\.\.",
    ),
    Row(
        "decode_codes",
        "negative code (-3)",
        "base",
        lambda m: m.decode_codes(_codes(m) - 3),
        ValueError,
        r"has code -3",
    ),
    Row(
        "decode_codes",
        "float codes (1.5)",
        "base",
        lambda m: m.decode_codes(_codes(m).float() + 1.5),
        TypeError,
        r"must hold integer codes, got dtype torch.float32",
    ),
    Row(
        "decode_codes",
        "wrong group count",
        "base",
        lambda m: m.decode_codes(_codes(m)[:, :2]),
        ValueError,
        r"must be \[frames, \d+\], got shape \(3, 2\)",
    ),
    Row(
        "decode_codes",
        "1-D codes",
        "base",
        lambda m: m.decode_codes(_codes(m)[:, 0]),
        ValueError,
        r"must be \[frames, G\], \[batch, frames, G\] or a list",
    ),
    Row(
        "decode_codes",
        "empty [0, G]",
        "base",
        lambda m: m.decode_codes(_codes(m, 0)),
        None,
        "decodes to 0 samples, as upstream does for an empty item of a batch (alone, upstream fails in torch.cat)",
        Refuses(r"torch.cat\(\): expected a non-empty list of Tensors", lambda up, m: _up_decode(up, _codes(m, 0))),
    ),
    Row(
        "decode_codes",
        "empty item beside a real one",
        "base",
        lambda m: m.decode_codes([_codes(m) + 2, _codes(m, 0)]),
        None,
        "the empty item decodes to 0 samples, as upstream",
        lambda up, m: _up_decode(up, [_codes(m) + 2, _codes(m, 0)]),
    ),
    Row(
        "decode_codes",
        "int32 codes",
        "base",
        lambda m: m.decode_codes((_codes(m) + 5).int()),
        None,
        "read as int64, as upstream",
        lambda up, m: _up_decode(up, (_codes(m) + 5).int()),
    ),
    Row(
        "decode_codes",
        "more frames than max_frames",
        "base",
        lambda m: m.decode_codes(_codes(m, 5), max_frames=4),
        ValueError,
        r"codes have 5 frames \(\d+ s of audio\), above max_frames=4; decode them in parts or raise max_frames",
    ),
    Row(
        "decode_codes",
        "max_frames 0",
        "base",
        lambda m: m.decode_codes(_codes(m), max_frames=0),
        ValueError,
        r"max_frames must be a positive integer or None, got 0",
    ),
    Row(
        "decode_codes",
        "max_frames equal to the length",
        "base",
        lambda m: m.decode_codes(_codes(m) + 5, max_frames=3),
        None,
        "decodes, as upstream (which has no cap)",
        lambda up, m: _up_decode(up, _codes(m) + 5),
    ),
    Row(
        "decode_codes",
        "codes not a tensor, array or list (None)",
        "base",
        lambda m: m.decode_codes(None),
        TypeError,
        r"codes must be a tensor, an array or a list of them, got NoneType",
    ),
    Row(
        "decode_codes",
        "empty list",
        "base",
        lambda m: m.decode_codes([]),
        ValueError,
        r"codes is empty: give at least one \[frames, G\] item",
    ),
    Row(
        "decode_codes",
        "-1 padding before real frames",
        "base",
        lambda m: m.decode_codes(torch.cat([_codes(m, 1) - 1, _codes(m)])),
        ValueError,
        r"has code -1 at frame 0, group 0; codes must be in 0\.\.\d+ \(-1 only as whole trailing padding frames\)",
    ),
    Row(
        "decode_codes",
        "bool codes",
        "base",
        lambda m: m.decode_codes(_codes(m).bool()),
        TypeError,
        r"must hold integer codes, got dtype torch.bool",
    ),
    Row(
        "decode_codes",
        "trailing -1 padding frames",
        "base",
        lambda m: m.decode_codes(_padded(m)),
        None,
        "upstream's padding: decoded as code 0 and cut, as upstream",
        lambda up, m: _up_decode(up, _padded(m)),
    ),
    Row(
        "decode_codes",
        "10**7 frames (estimated memory above the default cap, half the RAM)",
        "base",
        lambda m: m.decode_codes(torch.zeros(1, 4, dtype=torch.long).expand(10**7, 4)),
        WorkTooLarge,
        r"decoding 1 item\(s\) of up to 10000000 frames: needs about 215\.7 GiB of memory \(estimated before starting\), "
        r"above the [0-9.]+ GiB cap; split the input, or raise the cap: Q3TTS_MAX_WORK_BYTES=216G \(or max_work_bytes=",
    ),
    Row(
        "decode_codes",
        "max_work_bytes='1M' below the estimate",
        "base",
        lambda m: m.decode_codes(_codes(m, 2000), max_work_bytes="1M"),
        WorkTooLarge,
        r"decoding 1 item\(s\) of up to 2000 frames: needs about [0-9.]+ MiB .* above the 1\.0 MiB cap",
    ),
    Row(
        "decode_codes",
        "max_work_bytes not a size",
        "base",
        lambda m: m.decode_codes(_codes(m), max_work_bytes="huge"),
        ValueError,
        r"max_work_bytes='huge' is not a size in bytes \(examples: 4000000000, 512M, 8G\)",
    ),
    Row(
        "decode_codes",
        "Q3TTS_MAX_WORK_BYTES not a size",
        "base",
        lambda m: _with_env("Q3TTS_MAX_WORK_BYTES", "lots", lambda: m.decode_codes(_codes(m))),
        ValueError,
        r"Q3TTS_MAX_WORK_BYTES='lots' is not a size in bytes",
    ),
    Row(
        "decode_codes",
        "speech_tokenizer config with decoder num_hidden_layers 10**7 over 1-layer weights",
        "base",
        lambda m: _load_edited(m, _codec_layers, "speech_tokenizer/config.json", lambda x: x.decode_codes(_codes(m))),
        ConfigError,
        r"speech_tokenizer/config\.json: decoder_config\.num_hidden_layers = 10000000, but the weights hold 1 of "
        r"decoder\.transformer\.layers\.N\.\* \(the config implies 10000000\); config\.json and the weights disagree",
    ),
    # --- sampling arguments -----------------------------------------------------------------------
    Row(
        "generate_custom_voice",
        "temperature 0 while sampling",
        "custom_voice",
        lambda m: _cv(m, temperature=0),
        ValueError,
        r"temperature must be > 0 when sampling \(do_sample=True\), got 0",
    ),
    Row(
        "generate_custom_voice",
        "negative subtalker_temperature",
        "custom_voice",
        lambda m: _cv(m, subtalker_temperature=-1.0),
        ValueError,
        r"subtalker_temperature must be > 0",
    ),
    Row(
        "generate_custom_voice",
        "top_k < 0",
        "custom_voice",
        lambda m: _cv(m, top_k=-1),
        ValueError,
        r"top_k must be >= 0, got -1",
    ),
    Row(
        "generate_custom_voice",
        "top_k not an integer",
        "custom_voice",
        lambda m: _cv(m, top_k=2.5),
        TypeError,
        r"top_k must be an integer, got 2.5",
    ),
    Row(
        "generate_custom_voice",
        "top_p above 1",
        "custom_voice",
        lambda m: _cv(m, top_p=1.5),
        ValueError,
        r"top_p must be in \[0, 1\], got 1.5",
    ),
    Row(
        "generate_custom_voice",
        "subtalker_top_p negative",
        "custom_voice",
        lambda m: _cv(m, subtalker_top_p=-0.1),
        ValueError,
        r"subtalker_top_p must be in \[0, 1\]",
    ),
    Row(
        "generate_custom_voice",
        "top_p 0",
        "custom_voice",
        lambda m: _cv(m, top_p=0.0),
        None,
        "as transformers' TopPLogitsWarper: keeps the single most likely id",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "repetition_penalty 0",
        "custom_voice",
        lambda m: _cv(m, repetition_penalty=0),
        ValueError,
        r"repetition_penalty must be > 0",
    ),
    Row(
        "generate_custom_voice",
        "NaN temperature",
        "custom_voice",
        lambda m: _cv(m, temperature=float("nan")),
        ValueError,
        r"temperature must be finite",
    ),
    Row(
        "generate_custom_voice",
        "temperature finite as a double, inf in fp32 (hypothesis found it: the sampler's -inf / inf = NaN)",
        "custom_voice",
        lambda m: _cv(m, temperature=3.4028235677973366e38, top_k=50),
        ValueError,
        r"temperature must be finite in float32, the dtype sampling runs in .*got 3.4028235677973366e\+38",
    ),
    Row(
        "generate_custom_voice",
        "max_new_tokens 0",
        "custom_voice",
        lambda m: _cv(m, max_new_tokens=0),
        ValueError,
        r"max_new_tokens must be >= 1, got 0",
    ),
    Row(
        "generate_custom_voice",
        "max_new_tokens not an integer",
        "custom_voice",
        lambda m: _cv(m, max_new_tokens="9"),
        TypeError,
        r"max_new_tokens must be an integer",
    ),
    Row(
        "generate",
        "max_new_tokens huge (10**12)",
        "custom_voice",
        lambda m: _huge(m),
        None,
        "buffers grow as frames come: nothing is allocated up front; runs until EOS, as upstream",
        lambda up, m: _huge(m, generate=up.model.generate),
    ),
    Row(
        "generate",
        "eos_token_id outside the codec vocabulary",
        "custom_voice",
        lambda m: m.generate(input_ids=[torch.tensor([[1] * 12])], languages=["auto"], eos_token_id=10**6),
        ValueError,
        r"eos_token_id must be a codec id below",
    ),
    Row(
        "generate",
        "unknown keyword",
        "custom_voice",
        lambda m: m.generate(input_ids=[torch.tensor([[1] * 12])], languages=["auto"], temprature=0.5),
        ValueError,
        r"unknown keyword argument\(s\) \['temprature'\]",
    ),
    # --- texts ------------------------------------------------------------------------------------
    Row(
        "generate_custom_voice",
        "empty text",
        "custom_voice",
        lambda m: _cv(m, text=""),
        ValueError,
        r"text is empty or whitespace only",
    ),
    Row(
        "generate_custom_voice",
        "whitespace-only text",
        "custom_voice",
        lambda m: _cv(m, text=" \n\t"),
        ValueError,
        r"text is empty",
    ),
    Row(
        "generate_custom_voice",
        "text not a str",
        "custom_voice",
        lambda m: _cv(m, text=42),
        TypeError,
        r"text must be a str, got int",
    ),
    Row(
        "generate_custom_voice",
        "lone surrogate",
        "custom_voice",
        lambda m: _cv(m, text="Hi \ud800 there"),
        ValueError,
        r"text is not valid Unicode \(surrogates not allowed at position 3",
    ),
    Row(
        "generate_custom_voice",
        "control characters and NUL",
        "custom_voice",
        lambda m: _cv(m, text="Hi\x00\x07 there"),
        None,
        "tokenized as upstream's tokenizer does",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "empty list of texts",
        "custom_voice",
        lambda m: _cv(m, text=[]),
        ValueError,
        r"text is an empty list",
    ),
    Row(
        "generate_voice_design",
        "empty instruct",
        "voice_design",
        lambda m: m.generate_voice_design("Hi.", instruct="", **G),
        ValueError,
        r"instruct is empty",
    ),
    # --- batches and model types ------------------------------------------------------------------
    Row(
        "generate_custom_voice",
        "2 texts, 3 speakers",
        "custom_voice",
        lambda m: m.generate_custom_voice(["a b", "c d"], speaker=["alice", "bob", "carol"], **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 speakers",
    ),
    Row(
        "generate_custom_voice",
        "2 texts, 3 languages",
        "custom_voice",
        lambda m: m.generate_custom_voice(["a b", "c d"], speaker="alice", language=["english"] * 3, **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 languages",
    ),
    Row(
        "generate_custom_voice",
        "unknown speaker",
        "custom_voice",
        lambda m: m.generate_custom_voice("Hi.", speaker="zed", **G),
        ValueError,
        r"unsupported speakers: \['zed'\]; supported",
    ),
    Row(
        "generate_custom_voice",
        "unknown language",
        "custom_voice",
        lambda m: _cv(m, language="klingon"),
        ValueError,
        r"unsupported languages: \['klingon'\]; supported",
    ),
    Row(
        "generate_custom_voice",
        "on a base model",
        "base",
        lambda m: m.generate_custom_voice("Hi.", speaker="alice"),
        ValueError,
        r"generate_custom_voice needs a 'custom_voice' checkpoint; this one is 'base'",
    ),
    Row(
        "generate_voice_design",
        "on a custom-voice model",
        "custom_voice",
        lambda m: m.generate_voice_design("Hi.", instruct="x"),
        ValueError,
        r"needs a 'voice_design' checkpoint",
    ),
    Row(
        "create_voice_clone_prompt",
        "on a voice-design model",
        "voice_design",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), x_vector_only_mode=True),
        ValueError,
        r"needs a 'base' checkpoint",
    ),
    # --- audio ------------------------------------------------------------------------------------
    Row(
        "extract_speaker_embedding",
        "120 s with Q3TTS_MAX_WORK_BYTES=64M (estimated memory above the cap)",
        "base",
        lambda m: _with_env(
            "Q3TTS_MAX_WORK_BYTES", "64M", lambda: m.extract_speaker_embedding(_wav(24000 * 120), 24000)
        ),
        WorkTooLarge,
        r"extract_speaker_embedding: needs about [0-9.]+ MiB of memory \(estimated before starting\), above the 64\.0 MiB "
        r"cap; split the input, or raise the cap: Q3TTS_MAX_WORK_BYTES=1G",
    ),
    Row(
        "extract_speaker_embedding",
        "NaN samples",
        "base",
        lambda m: m.extract_speaker_embedding(np.full(24000, np.nan, np.float32), 24000),
        ValueError,
        r"NaN or infinite",
    ),
    Row(
        "extract_speaker_embedding",
        "inf samples",
        "base",
        lambda m: m.extract_speaker_embedding(np.full(24000, np.inf, np.float32), 24000),
        ValueError,
        r"NaN or infinite",
    ),
    Row(
        "extract_speaker_embedding",
        "empty waveform",
        "base",
        lambda m: m.extract_speaker_embedding(np.zeros(0, np.float32), 24000),
        ValueError,
        r"waveform is empty",
    ),
    Row(
        "extract_speaker_embedding",
        "a single sample",
        "base",
        lambda m: m.extract_speaker_embedding(np.zeros(1, np.float32), 24000),
        ValueError,
        r"too short .* at least \d+ samples",
    ),
    Row(
        "extract_speaker_embedding",
        "sample rate 0",
        "base",
        lambda m: m.extract_speaker_embedding(_wav(), 0),
        ValueError,
        r"sample rate must be a positive integer, got 0",
    ),
    Row(
        "create_voice_clone_prompt",
        "negative sample rate",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), -24000), x_vector_only_mode=True),
        ValueError,
        r"sample rate must be a positive integer",
    ),
    Row(
        "create_voice_clone_prompt",
        "sample rate in kHz (24)",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(5 * 24000), 24), x_vector_only_mode=True),
        ValueError,
        r"reference audio: sample rate 24 Hz is outside 1000\.\.384000 Hz \(did you pass kHz\? 24 kHz is sr=24000\)",
    ),
    Row(
        "create_voice_clone_prompt",
        "sample rate 1",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 1), x_vector_only_mode=True),
        ValueError,
        r"sample rate 1 Hz is outside 1000\.\.384000 Hz \(did you pass kHz\?",
    ),
    Row(
        "create_voice_clone_prompt",
        "channels-first stereo [2, T]",
        "base",
        lambda m: m.create_voice_clone_prompt((np.stack([_wav(), _wav()], 0), 24000), x_vector_only_mode=True),
        None,
        "recognised: mixed over the first axis (up to 8 channels, more samples than channels)",
        Refuses(
            r"'tuple' object does not support item assignment",
            lambda up, m: up.create_voice_clone_prompt((np.stack([_wav(), _wav()], 0), 24000), x_vector_only_mode=True),
        ),
    ),
    Row(
        "create_voice_clone_prompt",
        "a FIFO as the reference audio",
        "base",
        lambda m: _with_fifo(lambda p: m.create_voice_clone_prompt(p, x_vector_only_mode=True)),
        ValueError,
        r"ref.wav: cannot read audio from a FIFO; give a regular audio file",
    ),
    Row(
        "create_voice_clone_prompt",
        "float sample rate",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000.5), x_vector_only_mode=True),
        ValueError,
        r"sample rate must be a positive integer",
    ),
    Row(
        "create_voice_clone_prompt",
        "array without sample rate",
        "base",
        lambda m: m.create_voice_clone_prompt(_wav(), x_vector_only_mode=True),
        ValueError,
        r"pass a tuple \(waveform, sample_rate\)",
    ),
    Row(
        "create_voice_clone_prompt",
        "stereo [T, 2]",
        "base",
        lambda m: m.create_voice_clone_prompt((np.stack([_wav(), _wav()], 1), 24000), x_vector_only_mode=True),
        None,
        "averaged over the last axis, as upstream's code means to (it fails assigning into the tuple)",
        Refuses(
            r"'tuple' object does not support item assignment",
            lambda up, m: up.create_voice_clone_prompt((np.stack([_wav(), _wav()], 1), 24000), x_vector_only_mode=True),
        ),
    ),
    Row(
        "create_voice_clone_prompt",
        "int16 PCM",
        "base",
        lambda m: m.create_voice_clone_prompt(((_wav() * 32767).astype(np.int16), 24000), x_vector_only_mode=True),
        None,
        "cast to float32 unscaled, as upstream (a warning says it exceeds [-1, 1])",
        SAME,
    ),
    Row(
        "encode_audio",
        "NaN samples",
        "base",
        lambda m: m.encode_audio((np.full(4000, np.nan, np.float32), 24000)),
        ValueError,
        r"NaN or infinite",
    ),
    Row(
        "encode_audio",
        "sample rate 0",
        "base",
        lambda m: m.encode_audio((_wav(), 0)),
        ValueError,
        r"sample rate must be a positive integer",
    ),
    Row(
        "encode_audio",
        "unreadable file",
        "base",
        lambda m: m.encode_audio("/nonexistent/ref.wav"),
        ValueError,
        r"cannot read audio",
    ),
    Row(
        "encode_audio",
        "empty waveform",
        "base",
        lambda m: m.encode_audio((np.zeros(0, np.float32), 24000)),
        ValueError,
        r"audio: waveform is empty",
    ),
    Row(
        "encode_audio",
        "a single sample",
        "base",
        lambda m: m.encode_audio((np.full(1, 0.1, np.float32), 24000)),
        None,
        "one frame of codes, as upstream",
        _encode_up(np.full(1, 0.1, np.float32)),
    ),
    Row(
        "encode_audio",
        "inf samples",
        "base",
        lambda m: m.encode_audio((np.full(4000, np.inf, np.float32), 24000)),
        ValueError,
        r"audio: waveform has NaN or infinite samples",
    ),
    Row(
        "encode_audio",
        "int16 PCM",
        "base",
        lambda m: m.encode_audio(((_wav() * 32767).astype(np.int16), 24000)),
        None,
        "cast to float32 unscaled, as upstream",
        _encode_up((_wav() * 32767).astype(np.int16)),
    ),
    Row(
        "encode_audio",
        "stereo [T, 2]",
        "base",
        lambda m: m.encode_audio((np.stack([_wav(), _wav() * 0.5], 1), 24000)),
        None,
        "averaged over the last axis, as upstream",
        _encode_up(np.stack([_wav(), _wav() * 0.5], 1)),
    ),
    Row(
        "encode_audio",
        "negative sample rate",
        "base",
        lambda m: m.encode_audio((_wav(), -24000)),
        ValueError,
        r"audio: sample rate must be a positive integer, got -24000",
    ),
    Row(
        "encode_audio",
        "sample rate in kHz (24)",
        "base",
        lambda m: m.encode_audio((_wav(5 * 24000), 24)),
        ValueError,
        r"audio: sample rate 24 Hz is outside 1000\.\.384000 Hz \(did you pass kHz\? 24 kHz is sr=24000\)",
    ),
    Row(
        "encode_audio",
        "sample rate above 384 kHz",
        "base",
        lambda m: m.encode_audio((_wav(), 480_000_000)),
        ValueError,
        r"audio: sample rate 480000000 Hz is outside 1000\.\.384000 Hz$",
    ),
    Row(
        "encode_audio",
        "audio longer than the Q3TTS_MAX_AUDIO_SECONDS cap (0.5 s)",
        "base",
        lambda m: _with_env("Q3TTS_MAX_AUDIO_SECONDS", "0.5", lambda: m.encode_audio((_wav(), 24000))),
        ValueError,
        r"audio: 1 s of audio \(0\.0 GB as float32\) is above the 0\.5 s cap; split it, or raise the cap with Q3TTS_MAX_AUDIO_SECONDS",
    ),
    Row(
        "encode_audio",
        "60 s with Q3TTS_MAX_WORK_BYTES=100M (estimated memory above the cap)",
        "base",
        lambda m: _with_env("Q3TTS_MAX_WORK_BYTES", "100M", lambda: m.encode_audio((_wav(24000 * 60), 24000))),
        WorkTooLarge,
        r"encoding 1 item\(s\) of up to 60 s: needs about [0-9.]+ MiB of memory \(estimated before starting\), above "
        r"the 100\.0 MiB cap; split the input, or raise the cap: Q3TTS_MAX_WORK_BYTES=1G",
    ),
    Row(
        "encode_audio",
        "speech_tokenizer config with encoder num_hidden_layers 10**7 over 1-layer weights",
        "base",
        lambda m: _load_edited(
            m, _encoder_layers, "speech_tokenizer/config.json", lambda x: x.encode_audio((_wav(), 24000))
        ),
        ConfigError,
        r"speech_tokenizer/config\.json: encoder_config\.num_hidden_layers = 10000000, but the weights hold 1 of "
        r"encoder\.transformer\.layers\.N\.\* \(the config implies 10000000\)",
    ),
    Row(
        "encode_audio",
        "max_work_bytes=1024",
        "base",
        lambda m: m.encode_audio((_wav(), 24000), max_work_bytes=1024),
        WorkTooLarge,
        r"encoding 1 item\(s\) of up to 1 s: needs about [0-9.]+ MiB .* above the 1\.0 KiB cap",
    ),
    Row(
        "encode_audio",
        "60 s at 44.1 kHz with Q3TTS_MAX_WORK_BYTES=40M (resampling above the cap)",
        "base",
        lambda m: _with_env(
            "Q3TTS_MAX_WORK_BYTES", "40M", lambda: m.encode_audio((np.zeros(44100 * 60, np.float32), 44100))
        ),
        WorkTooLarge,
        r"resampling 44100 Hz -> 24000 Hz: needs about 45\.7 MiB of memory .* above the 40\.0 MiB cap",
    ),
    Row(
        "encode_audio",
        "a file longer than the cap",
        "base",
        lambda m: _with_env("Q3TTS_MAX_AUDIO_SECONDS", "0.5", lambda: _with_wav_file(m.encode_audio)),
        ValueError,
        r"ref.wav: 1 s of audio .* is above the 0\.5 s cap",
    ),
    Row(
        "encode_audio",
        "channels-first stereo [2, T]",
        "base",
        lambda m: m.encode_audio((np.stack([_wav(), _wav() * 0.5], 0), 24000)),
        None,
        "recognised: mixed over the first axis; the codes of the same audio given as [T, 2]",
        _encode_up(np.stack([_wav(), _wav() * 0.5], 1)),
    ),
    Row(
        "encode_audio",
        "a FIFO",
        "base",
        lambda m: _with_fifo(m.encode_audio),
        ValueError,
        r"ref.wav: cannot read audio from a FIFO; give a regular audio file",
    ),
    Row(
        "encode_audio",
        "fractional sample rate (24000.5)",
        "base",
        lambda m: m.encode_audio((_wav(), 24000.5)),
        ValueError,
        r"audio: sample rate must be a positive integer, got 24000.5",
    ),
    Row(
        "encode_audio",
        "integral float sample rate (24000.0)",
        "base",
        lambda m: m.encode_audio((_wav(), 24000.0)),
        None,
        "taken as 24000, as upstream",
        _encode_up(_wav(), 24000.0),
    ),
    Row(
        "encode_audio",
        "bool sample rate (True)",
        "base",
        lambda m: m.encode_audio((_wav(), True)),
        ValueError,
        r"audio: sample rate must be a positive integer, got True",
    ),
    Row(
        "encode_audio",
        "array without a sample rate",
        "base",
        lambda m: m.encode_audio(_wav()),
        ValueError,
        r"a waveform array needs its sample rate: pass sr=\.\.\. or \(waveform, sr\)",
    ),
    Row(
        "encode_audio",
        "complex samples",
        "base",
        lambda m: m.encode_audio((_wav().astype(np.complex64), 24000)),
        TypeError,
        r"waveform must be real numbers, got dtype complex64",
    ),
    Row(
        "encode_audio",
        "empty list",
        "base",
        lambda m: m.encode_audio([]),
        ValueError,
        r"no audio given \(empty list\)",
    ),
    Row(
        "encode_audio",
        "None",
        "base",
        lambda m: m.encode_audio(None),
        ValueError,
        r"unsupported input type NoneType \(path, array or \(array, sr\)\)",
    ),
    Row(
        "encode_audio",
        "on a custom-voice model",
        "custom_voice",
        lambda m: m.encode_audio((_wav(), 24000)),
        None,
        "every checkpoint ships the speech tokenizer; encodes as upstream's tokenizer of that checkpoint",
        _encode_up(_wav()),
    ),
    # --- more audio ----------------------------------------------------------------------------
    Row(
        "extract_speaker_embedding",
        "on a custom-voice model",
        "custom_voice",
        lambda m: m.extract_speaker_embedding(_wav(), 24000),
        ValueError,
        r"tts_model_type='custom_voice'\) has no speaker encoder; only 'base' models",
    ),
    Row(
        "extract_speaker_embedding",
        "not an array (a path string)",
        "base",
        lambda m: m.extract_speaker_embedding("ref.wav", 24000),
        TypeError,
        r"extract_speaker_embedding: expected a waveform array, got str",
    ),
    Row(
        "extract_speaker_embedding",
        "stereo [T, 2]",
        "base",
        lambda m: m.extract_speaker_embedding(np.stack([_wav(), _wav()], 1), 24000),
        ValueError,
        r"expected a 1-D mono waveform, got shape \(24000, 2\)",
    ),
    Row(
        "extract_speaker_embedding",
        "16 kHz audio",
        "base",
        lambda m: m.extract_speaker_embedding(_wav(16000), 16000),
        ValueError,
        r"audio must be 24000 Hz, got sr=16000",
    ),
    Row(
        "extract_speaker_embedding",
        "int16 PCM",
        "base",
        lambda m: m.extract_speaker_embedding((_wav() * 32767).astype(np.int16), 24000),
        None,
        "cast to float32 unscaled, as upstream's model method (a warning says it exceeds [-1, 1])",
        lambda up, m: up.model.extract_speaker_embedding((_wav() * 32767).astype(np.int16).astype(np.float32), 24000),
    ),
    Row(
        "create_voice_clone_prompt",
        "integral float sample rate (24000.0)",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000.0), x_vector_only_mode=True),
        None,
        "taken as 24000, as upstream",
        SAME,
    ),
    Row(
        "create_voice_clone_prompt",
        "bool sample rate",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), True), x_vector_only_mode=True),
        ValueError,
        r"reference audio: sample rate must be a positive integer, got True",
    ),
    Row(
        "create_voice_clone_prompt",
        "empty waveform",
        "base",
        lambda m: m.create_voice_clone_prompt((np.zeros(0, np.float32), 24000), x_vector_only_mode=True),
        ValueError,
        r"reference audio must be a non-empty 1-D",
    ),
    Row(
        "create_voice_clone_prompt",
        "waveform of strings",
        "base",
        lambda m: m.create_voice_clone_prompt((np.array(["a", "b"]), 24000), x_vector_only_mode=True),
        TypeError,
        r"reference audio: waveform must be real numbers, got dtype <U1",
    ),
    Row(
        "create_voice_clone_prompt",
        "ICL without ref_text",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000)),
        ValueError,
        r"ref_text is required for ICL cloning \(x_vector_only_mode=False\); item 0 has none",
    ),
    Row(
        "create_voice_clone_prompt",
        "ref_text not a str",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text=5, ref_code=_codes(m)),
        TypeError,
        r"ref_text must be a str or None, got int",
    ),
    Row(
        "create_voice_clone_prompt",
        "ref_text with a lone surrogate",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text="a\ud800", ref_code=_codes(m)),
        ValueError,
        r"ref_text is not valid Unicode \(surrogates not allowed at position 1",
    ),
    Row(
        "create_voice_clone_prompt",
        "2 audios, 3 ref_texts",
        "base",
        lambda m: m.create_voice_clone_prompt([(_wav(), 24000)] * 2, ref_text=["a", "b", "c"]),
        ValueError,
        r"batch size mismatch: 2 texts but 3 ref_texts",
    ),
    Row(
        "create_voice_clone_prompt",
        "ref_code past the codebook",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text="a b", ref_code=_codes(m) + 99999),
        ValueError,
        r"item 0: ref_code has code 99999; codes must be in 0\.\.\d+",
    ),
    Row(
        "create_voice_clone_prompt",
        "negative ref_code",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text="a b", ref_code=_codes(m) - 5),
        ValueError,
        r"item 0: ref_code has code -5",
    ),
    Row(
        "create_voice_clone_prompt",
        "float ref_code",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text="a b", ref_code=_codes(m).float() + 1.5),
        TypeError,
        r"item 0: ref_code must hold integer codes, got dtype torch.float32",
    ),
    Row(
        "create_voice_clone_prompt",
        "ref_code with the wrong group count",
        "base",
        lambda m: m.create_voice_clone_prompt((_wav(), 24000), ref_text="a b", ref_code=_codes(m)[:, :2]),
        ValueError,
        r"item 0: ref_code must be \[T, \d+\], got \(3, 2\)",
    ),
    # --- voice clone -----------------------------------------------------------------------------
    Row(
        "generate_voice_clone",
        "on a custom-voice model",
        "custom_voice",
        lambda m: m.generate_voice_clone("Hi.", ref_audio=(_wav(), 24000), x_vector_only_mode=True, **G),
        ValueError,
        r"generate_voice_clone needs a 'base' checkpoint; this one is 'custom_voice'",
    ),
    Row(
        "generate_voice_clone",
        "neither ref_audio nor voice_clone_prompt",
        "base",
        lambda m: m.generate_voice_clone("Hi.", **G),
        ValueError,
        r"generate_voice_clone needs voice_clone_prompt or ref_audio",
    ),
    Row(
        "generate_voice_clone",
        "3 texts, 2 reference audios",
        "base",
        lambda m: m.generate_voice_clone(["a b", "c d", "e"], ref_audio=[(_wav(), 24000)] * 2, x_vector_only_mode=True),
        ValueError,
        r"batch size mismatch: 3 texts but 2 voice clone prompts",
    ),
    Row(
        "generate_voice_clone",
        "voice_clone_prompt a dict",
        "base",
        lambda m: m.generate_voice_clone("Hi.", voice_clone_prompt={"ref_code": None}, **G),
        TypeError,
        r"voice_clone_prompt must be a non-empty list of VoiceClonePromptItem .*got dict",
    ),
    Row(
        "generate_voice_clone",
        "voice_clone_prompt of other objects",
        "base",
        lambda m: m.generate_voice_clone("Hi.", voice_clone_prompt=[1, 2], **G),
        TypeError,
        r"got list of \['int'\]",
    ),
    Row(
        "generate_voice_clone",
        "ref_code out of range",
        "base",
        lambda m: m.generate_voice_clone("Hi.", ref_audio=(_wav(), 24000), ref_text="a b", ref_code=_codes(m) + 99999),
        ValueError,
        r"item 0: ref_code has code 99999",
    ),
    # --- more texts, sampling, batches -------------------------------------------------------
    Row(
        "generate_custom_voice",
        "text longer than the model's positions",
        "custom_voice",
        lambda m: m.generate_custom_voice("word " * 600, speaker="alice", **GREEDY),
        None,
        "rotary positions have no table to overflow: generates, as upstream",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "negative temperature",
        "custom_voice",
        lambda m: _cv(m, temperature=-1),
        ValueError,
        r"temperature must be > 0 when sampling \(do_sample=True\), got -1",
    ),
    Row(
        "generate_custom_voice",
        "negative temperature, greedy",
        "custom_voice",
        lambda m: m.generate_custom_voice("Hello.", speaker="alice", temperature=-1, **GREEDY),
        None,
        "temperature is not used when greedy, as upstream (transformers ignores it)",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "top_k larger than the vocabulary",
        "custom_voice",
        lambda m: _cv(m, top_k=10**9),
        None,
        "clamped to the vocabulary, as transformers' TopKLogitsWarper",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "repetition_penalty negative",
        "custom_voice",
        lambda m: _cv(m, repetition_penalty=-1),
        ValueError,
        r"repetition_penalty must be > 0 \(1\.0 = off\), got -1",
    ),
    Row(
        "generate_custom_voice",
        "do_sample not a bool",
        "custom_voice",
        lambda m: _cv(m, do_sample=1),
        TypeError,
        r"do_sample must be True or False, got 1",
    ),
    Row(
        "generate_custom_voice",
        "speaker None",
        "custom_voice",
        lambda m: m.generate_custom_voice("Hello.", speaker=None, **GREEDY),
        None,
        "no speaker embedding in the prompt, as upstream",
        SAME,
    ),
    Row(
        "generate_custom_voice",
        "2 texts, 3 instructions",
        "custom_voice",
        lambda m: m.generate_custom_voice(["a b", "c d"], speaker="alice", instruct=["x", "y", "z"], **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 instructs",
    ),
    Row(
        "generate_custom_voice",
        "instruction not a str",
        "custom_voice",
        lambda m: _cv(m, instruct=5),
        TypeError,
        r"instruct must be a str or None, got int",
    ),
    Row(
        "generate_custom_voice",
        "instruction with a lone surrogate",
        "custom_voice",
        lambda m: _cv(m, instruct="calm \udcff"),
        ValueError,
        r"instruct is not valid Unicode \(surrogates not allowed at position 5",
    ),
    Row(
        "generate_custom_voice",
        "whitespace-only instruction",
        "custom_voice",
        lambda m: m.generate_custom_voice("Hello.", speaker="alice", instruct="  ", **GREEDY),
        None,
        "tokenized, as upstream (only None and '' mean no instruction)",
        SAME,
    ),
    Row(
        "generate_voice_design",
        "2 texts, 3 instructions",
        "voice_design",
        lambda m: m.generate_voice_design(["a b", "c d"], instruct=["x", "y", "z"], **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 instructs",
    ),
    Row(
        "generate_voice_design",
        "instruction None",
        "voice_design",
        lambda m: m.generate_voice_design("Hi.", instruct=None, **G),
        TypeError,
        r"instruct must be a str, got NoneType",
    ),
    Row(
        "generate_voice_design",
        "2 texts, 3 languages",
        "voice_design",
        lambda m: m.generate_voice_design(["a b", "c d"], instruct="calm", language=["english"] * 3, **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 languages",
    ),
    Row(
        "generate_voice_design",
        "on a base model",
        "base",
        lambda m: m.generate_voice_design("Hi.", instruct="x"),
        ValueError,
        r"generate_voice_design needs a 'voice_design' checkpoint; this one is 'base'",
    ),
    Row(
        "generate",
        "input_ids missing",
        "custom_voice",
        lambda m: m.generate(languages=["auto"]),
        ValueError,
        r"generate: input_ids is required",
    ),
    Row(
        "generate",
        "input_ids a tensor, not a list",
        "custom_voice",
        lambda m: m.generate(input_ids=_ids(m)[0], languages=["auto"]),
        ValueError,
        r"input_ids must be a list of \[1, L\] tensors \(one per batch item\), got Tensor",
    ),
    Row(
        "generate",
        "float input_ids",
        "custom_voice",
        lambda m: m.generate(input_ids=[_ids(m)[0].float()], languages=["auto"]),
        ValueError,
        r"input_ids\[0\] must hold integer token ids, got dtype torch.float32",
    ),
    Row(
        "generate",
        "input_ids past the text vocabulary",
        "custom_voice",
        lambda m: m.generate(input_ids=[_ids(m)[0] + 10**7], languages=["auto"]),
        ValueError,
        r"input_ids\[0\] has token id \d+; ids must be in 0\.\.\d+",
    ),
    Row(
        "generate",
        "1-D input_ids",
        "custom_voice",
        lambda m: m.generate(input_ids=[_ids(m)[0][0]], languages=["auto"]),
        ValueError,
        r"input_ids\[0\] must have shape \[1, L\], got \(\d+,\)",
    ),
    Row(
        "generate",
        "shorter than the assistant template",
        "custom_voice",
        lambda m: m.generate(input_ids=[_ids(m)[0][:, :3]], languages=["auto"]),
        ValueError,
        r"input_ids\[0\] has 3 tokens; the assistant template alone has",
    ),
    Row(
        "generate",
        "1 input, 2 languages",
        "custom_voice",
        lambda m: m.generate(input_ids=_ids(m), languages=["auto", "auto"]),
        ValueError,
        r"languages must give one language per input \(1\)",
    ),
    Row(
        "generate",
        "instruct_ids out of range",
        "custom_voice",
        lambda m: m.generate(input_ids=_ids(m), instruct_ids=[_ids(m)[0] - 10**7], languages=["auto"]),
        ValueError,
        r"instruct_ids\[0\] has token id -\d+; ids must be in 0\.\.\d+",
    ),
    # --- from_pretrained ---------------------------------------------------------------------------
    Row(
        "from_pretrained",
        "no such directory",
        "base",
        lambda m: type(m).from_pretrained("/nonexistent/ckpt"),
        CheckpointError,
        r"/nonexistent/ckpt: no such directory \(and not a hub repo id of the form owner/name\)",
    ),
    Row(
        "from_pretrained",
        "a file instead of a directory",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir / "config.json"),
        CheckpointError,
        r"config.json is a file, expected a checkpoint directory",
    ),
    Row(
        "from_pretrained",
        "path None",
        "base",
        lambda m: type(m).from_pretrained(None),
        TypeError,
        r"path must be a directory or a hub repo id \(str or os.PathLike\), got NoneType",
    ),
    Row(
        "from_pretrained",
        "dtype an unknown mode name ('bf8-mixed')",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir, dtype="bf8-mixed"),
        ValueError,
        r"dtype 'bf8-mixed' is not a precision mode; use one of fp32, bf16, fp16, bf16-mixed, fp16-mixed",
    ),
    Row(
        "from_pretrained",
        "integer dtype",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir, dtype=torch.int32),
        TypeError,
        r"dtype must be None .* got torch.int32",
    ),
    Row(
        "from_pretrained",
        "unknown device",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir, device="gpu0"),
        ValueError,
        r"device 'gpu0' is not a torch device",
    ),
    Row(
        "from_pretrained",
        "device 'meta'",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir, device="meta"),
        ValueError,
        r"device 'meta' holds shapes, not weights: a model loaded there cannot run; load on 'cpu' or 'cuda'",
    ),
    Row(
        "from_pretrained",
        "manifest entry leaving the directory ('../../etc/passwd')",
        "base",
        lambda m: _load_edited(m, _manifest_entry("../../etc/passwd")),
        CheckpointError,
        r"manifest.json: damaged manifest \(entry '\.\./\.\./etc/passwd' leaves the directory",
    ),
    Row(
        "from_pretrained",
        "manifest entry an absolute path ('/etc/passwd')",
        "base",
        lambda m: _load_edited(m, _manifest_entry("/etc/passwd")),
        CheckpointError,
        r"damaged manifest \(entry '/etc/passwd' is an absolute path; entries must stay inside the directory\)",
    ),
    Row(
        "from_pretrained",
        "manifest entry not an object",
        "base",
        lambda m: _load_edited(m, _manifest_entry("config.json", ["x"])),
        CheckpointError,
        r"damaged manifest \(entry 'config.json' is a list, expected an object with size and sha256\)",
    ),
    Row(
        "from_pretrained",
        "manifest entry with a size that is not an integer",
        "base",
        lambda m: _load_edited(m, _manifest_entry("config.json", {"size": "12", "sha256": "0" * 64})),
        CheckpointError,
        r"damaged manifest \(entry 'config.json': size '12' is not a non-negative integer\)",
    ),
    Row(
        "from_pretrained",
        "config with num_hidden_layers 10**7",
        "base",
        lambda m: _load_edited(
            m, lambda c: c["talker"]["transformer"].__setitem__("num_hidden_layers", 10**7), "config.json"
        ),
        ConfigError,
        r"config.json: talker.transformer.num_hidden_layers = 10000000 is not a whole number in 1\.\.1024",
    ),
    Row(
        "from_pretrained",
        "config with a NaN rms_norm_eps",
        "base",
        lambda m: _load_edited(
            m, lambda c: c["talker"]["transformer"].__setitem__("rms_norm_eps", float("nan")), "config.json"
        ),
        ConfigError,
        r"config.json: talker.transformer.rms_norm_eps = nan must be a finite number > 0",
    ),
    Row(
        "from_pretrained",
        "config.json nested 100000 deep",
        "base",
        lambda m: _load_edited(m, lambda c: '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "config.json"),
        CheckpointError,
        r"config.json: invalid JSON \(nested deeper than 64 levels: line 1 column 70",
    ),
    Row(
        "from_pretrained",
        "config with num_hidden_layers 1000 over 2-layer weights",
        "base",
        lambda m: _load_edited(
            m, lambda c: c["talker"]["transformer"].__setitem__("num_hidden_layers", 1000), "config.json"
        ),
        ConfigError,
        r"config.json: talker\.transformer\.num_hidden_layers = 1000, but the weights hold 2 of talker\.decoder\.layers\.N\.\* "
        r"\(the config implies 1000\); config\.json and the weights disagree \(a config of another model, or edited weights\?\)",
    ),
    Row(
        "from_pretrained",
        "config vocab_size not the codec embedding's rows",
        "base",
        lambda m: _load_edited(m, lambda c: c["talker"].__setitem__("vocab_size", 2000), "config.json"),
        ConfigError,
        r"config.json: talker\.vocab_size = 2000, but tensor talker\.codec_embedding\.weight has shape \[1040, 32\]: "
        r"dimension 0 is 1040, the config implies 2000",
    ),
    Row(
        "from_pretrained",
        "config num_attention_heads not the attention's width",
        "base",
        lambda m: _load_edited(
            m, lambda c: c["talker"]["transformer"].__setitem__("num_attention_heads", 8), "config.json"
        ),
        ConfigError,
        r"num_attention_heads = 8, but tensor talker\.decoder\.layers\.0\.attn\.wo\.weight has shape \[32, 32\]: "
        r"dimension 1 is 32, the config implies 64 = num_attention_heads 8 x head_dim 8",
    ),
    Row(
        "from_pretrained",
        "verify='sha256' with a flipped byte in model.safetensors",
        "base",
        lambda m: _load_changed(m, _flip_byte("model.safetensors"), verify="sha256"),
        CheckpointError,
        r"model\.safetensors: sha256 differs from the manifest \(same size: the content changed; a flipped bit or an edit\); "
        r"convert the checkpoint again or restore the file$",
    ),
    Row(
        "from_pretrained",
        "verify='sha256' without a manifest",
        "base",
        lambda m: _load_changed(m, lambda d: (d / "manifest.json").unlink(), verify="sha256"),
        CheckpointError,
        r"ckpt: verify='sha256' needs manifest\.json \(convert-ckpt's record of every file's hash\), and there is none",
    ),
    Row(
        "from_pretrained",
        "verify='md5'",
        "base",
        lambda m: type(m).from_pretrained(m.checkpoint_dir, verify="md5"),
        ValueError,
        r"verify must be None, 'size' or 'sha256', got 'md5'",
    ),
    # --- streaming -------------------------------------------------------------------------------
    Row(
        "stream_custom_voice",
        "chunk_frames 0",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", chunk_frames=0, **G),
        ValueError,
        r"chunk_frames must be a positive integer, got 0",
    ),
    Row(
        "stream_custom_voice",
        "chunk_frames not an integer",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", chunk_frames=2.5, **G),
        ValueError,
        r"chunk_frames must be a positive integer, got 2.5",
    ),
    Row(
        "stream_custom_voice",
        "chunk_frames True",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", chunk_frames=True, **G),
        ValueError,
        r"chunk_frames must be a positive integer, got True",
    ),
    Row(
        "stream_custom_voice",
        "first_chunk_frames -1",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", first_chunk_frames=-1, **G),
        ValueError,
        r"first_chunk_frames must be a positive integer, got -1",
    ),
    Row(
        "stream_custom_voice",
        "first_chunk_frames None",
        "custom_voice",
        lambda m: _stream("stream_custom_voice", m, "Hi.", speaker="alice", first_chunk_frames=None),
        None,
        "the first chunk has chunk_frames frames",
    ),
    Row(
        "stream_custom_voice",
        "return_codes",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", return_codes=True, **G),
        ValueError,
        r"streaming methods yield audio; return_codes is not supported",
    ),
    Row(
        "stream_custom_voice",
        "empty text",
        "custom_voice",
        lambda m: m.stream_custom_voice("", speaker="alice", **G),
        ValueError,
        r"text is empty or whitespace only",
    ),
    Row(
        "stream_custom_voice",
        "temperature 0 while sampling",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", temperature=0, **G),
        ValueError,
        r"temperature must be > 0 when sampling",
    ),
    Row(
        "stream_custom_voice",
        "max_new_tokens 0",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", max_new_tokens=0),
        ValueError,
        r"max_new_tokens must be >= 1, got 0",
    ),
    Row(
        "stream_custom_voice",
        "unknown keyword",
        "custom_voice",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", temprature=0.5, **G),
        ValueError,
        r"unknown keyword argument\(s\) \['temprature'\]",
    ),
    Row(
        "stream_custom_voice",
        "2 texts, 3 speakers",
        "custom_voice",
        lambda m: m.stream_custom_voice(["a b", "c d"], speaker=["alice", "bob", "carol"], **G),
        ValueError,
        r"batch size mismatch: 2 texts but 3 speakers",
    ),
    Row(
        "stream_custom_voice",
        "on a base model",
        "base",
        lambda m: m.stream_custom_voice("Hi.", speaker="alice", **G),
        ValueError,
        r"generate_custom_voice needs a 'custom_voice' checkpoint; this one is 'base'",
    ),
    Row(
        "stream_voice_design",
        "on a custom-voice model",
        "custom_voice",
        lambda m: m.stream_voice_design("Hi.", instruct="calm", **G),
        ValueError,
        r"generate_voice_design needs a 'voice_design' checkpoint",
    ),
    Row(
        "stream_voice_design",
        "empty instruction",
        "voice_design",
        lambda m: m.stream_voice_design("Hi.", instruct=" ", **G),
        ValueError,
        r"instruct is empty or whitespace only",
    ),
    Row(
        "stream_voice_design",
        "chunk_frames 0",
        "voice_design",
        lambda m: m.stream_voice_design("Hi.", instruct="calm", chunk_frames=0, **G),
        ValueError,
        r"chunk_frames must be a positive integer, got 0",
    ),
    Row(
        "stream_voice_clone",
        "on a voice-design model",
        "voice_design",
        lambda m: m.stream_voice_clone("Hi.", ref_audio=(_wav(), 24000), x_vector_only_mode=True, **G),
        ValueError,
        r"generate_voice_clone needs a 'base' checkpoint",
    ),
    Row(
        "stream_voice_clone",
        "no reference",
        "base",
        lambda m: m.stream_voice_clone("Hi.", **G),
        ValueError,
        r"generate_voice_clone needs voice_clone_prompt or ref_audio",
    ),
    Row(
        "stream_voice_clone",
        "NaN reference audio",
        "base",
        lambda m: m.stream_voice_clone(
            "Hi.", ref_audio=(np.full(24000, np.nan, np.float32), 24000), x_vector_only_mode=True
        ),
        ValueError,
        r"NaN or infinite",
    ),
    Row(
        "stream_voice_clone",
        "ref_code out of range",
        "base",
        lambda m: m.stream_voice_clone("Hi.", ref_audio=(_wav(), 24000), ref_text="a b", ref_code=_codes(m) + 99999),
        ValueError,
        r"item 0: ref_code has code 99999",
    ),
    Row(
        "stream_voice_clone",
        "first_chunk_frames 0",
        "base",
        lambda m: m.stream_voice_clone(
            "Hi.", ref_audio=(_wav(), 24000), x_vector_only_mode=True, first_chunk_frames=0, **G
        ),
        ValueError,
        r"first_chunk_frames must be a positive integer, got 0",
    ),
    # --- training forward, collate and the fine-tuning loop ---------------------------------------
    Row(
        "training_forward",
        "unknown recipe",
        "base",
        lambda m: _forward(m, recipe="fast"),
        ValueError,
        r"unknown recipe 'fast'; choose one of \['aligned', 'upstream'\]",
    ),
    Row(
        "training_forward",
        "batch not a TrainingBatch",
        "base",
        lambda m: _forward(m, batch={"input_ids": None}),
        TypeError,
        r"batch must be a TrainingBatch \(from collate\), got dict",
    ),
    Row(
        "training_forward",
        "speaker_embedding 1-D",
        "base",
        lambda m: _forward(m, spk=torch.zeros(m.config.talker.transformer.hidden_size)),
        ValueError,
        r"speaker_embedding must be \[batch, hidden\] = \[1, \d+\], got \(\d+,\)",
    ),
    Row(
        "training_forward",
        "speaker_embedding of the wrong width",
        "base",
        lambda m: _forward(m, spk=torch.zeros(1, 3)),
        ValueError,
        r"speaker_embedding must be \[batch, hidden\] = \[1, \d+\], got \(1, 3\)",
    ),
    Row(
        "training_forward",
        "speaker_embedding not a float tensor",
        "base",
        lambda m: _forward(m, spk=[[0.0]]),
        TypeError,
        r"speaker_embedding must be a float tensor",
    ),
    Row(
        "collate",
        "empty batch",
        "base",
        lambda m: _collate(m),
        ValueError,
        r"collate: empty batch",
    ),
    Row(
        "collate",
        "codes past the codebook",
        "base",
        lambda m: _collate(m, _item(m, codes=_codes(m) + 99999)),
        ValueError,
        r"item 0: codes has id 99999; ids must be in 0\.\.\d+",
    ),
    Row(
        "collate",
        "negative codes",
        "base",
        lambda m: _collate(m, _item(m, codes=_codes(m) - 1)),
        ValueError,
        r"item 0: codes has id -1",
    ),
    Row(
        "collate",
        "float codes",
        "base",
        lambda m: _collate(m, _item(m, codes=_codes(m).float())),
        TypeError,
        r"item 0: codes must be an integer tensor, got torch.float32",
    ),
    Row(
        "collate",
        "codes with the wrong group count",
        "base",
        lambda m: _collate(m, _item(m, codes=_codes(m)[:, :2])),
        ValueError,
        r"item 0: codes must be \[frames, \d+\], got \(3, 2\)",
    ),
    Row(
        "collate",
        "no frames",
        "base",
        lambda m: _collate(m, _item(m, codes=_codes(m, 0))),
        ValueError,
        r"item 0: no frames",
    ),
    Row(
        "collate",
        "text ids past the vocabulary",
        "base",
        lambda m: _collate(m, _item(m, text_ids=torch.full((6,), 10**7))),
        ValueError,
        r"item 0: text_ids has id 10000000",
    ),
    Row(
        "training_text_ids",
        "text not a str",
        "base",
        lambda m: __import__("q3tts.standalone.training", fromlist=["x"]).training_text_ids(m.text_tokenizer, 5),
        TypeError,
        r"text must be a str, got int",
    ),
    Row(
        "FinetuneOptions",
        "epochs 0",
        "base",
        lambda m: _options(epochs=0),
        ValueError,
        r"epochs must be >= 1, got 0",
    ),
    Row(
        "FinetuneOptions",
        "batch_size not an integer",
        "base",
        lambda m: _options(batch_size=2.5),
        TypeError,
        r"batch_size must be an integer, got 2.5",
    ),
    Row(
        "FinetuneOptions",
        "lr infinite",
        "base",
        lambda m: _options(lr=float("inf")),
        ValueError,
        r"lr must be finite and > 0, got inf",
    ),
    Row(
        "FinetuneOptions",
        "lr NaN",
        "base",
        lambda m: _options(lr=float("nan")),
        ValueError,
        r"lr must be finite and > 0, got nan",
    ),
    Row(
        "FinetuneOptions",
        "seed past torch's range",
        "base",
        lambda m: _options(seed=2**64),
        ValueError,
        r"seed must be in \[-9223372036854775808, 18446744073709551615\]",
    ),
    Row(
        "FinetuneOptions",
        "dtype fp16",
        "base",
        lambda m: _options(dtype="fp16"),
        ValueError,
        r"dtype must be 'fp32' or 'bf16', got 'fp16'",
    ),
    Row(
        "FinetuneOptions",
        "unknown recipe",
        "base",
        lambda m: _options(recipe="fast"),
        ValueError,
        r"unknown recipe 'fast'",
    ),
    Row(
        "train_epochs",
        "no items",
        "base",
        lambda m: _train(m, items=[], spk=torch.zeros(0, 4)),
        ValueError,
        r"no training items",
    ),
    Row(
        "train_epochs",
        "1 item, 2 speaker embeddings",
        "base",
        lambda m: _train(m, spk=torch.zeros(2, m.config.talker.transformer.hidden_size)),
        ValueError,
        r"1 items but 2 speaker embeddings",
    ),
    Row(
        "train_epochs",
        "an item with codes past the codebook",
        "base",
        lambda m: _train(m, items=[_item(m, codes=_codes(m) + 99999)]),
        ValueError,
        r"item 0: codes has id 99999",
    ),
    Row(
        "train_epochs",
        "options not a FinetuneOptions",
        "base",
        lambda m: _train(m, options={"epochs": 1}),
        TypeError,
        r"options must be a FinetuneOptions, got dict",
    ),
)


def render_markdown() -> str:
    from bad_inputs_cli import CLI_ROWS

    lines = [
        "# Bad inputs to the runtime API and the CLI: the decided behaviour of each",
        "",
        "Rendered from `tests/bad_inputs.py` and `tests/bad_inputs_cli.py` (`python -m tests.bad_inputs`);",
        "`tests/test_bad_inputs.py` runs every row. Errors name the argument, the bad value and what is allowed.",
        "A *works* row says how upstream treats the input: *as upstream* rows are run on upstream's",
        "`Qwen3TTSModel` too and must give the same result (reference tier); *upstream fails* rows check",
        "that upstream raises. The fuzzer (`tests/test_fuzz_inputs.py`) tries "
        f"{FUZZ_EXAMPLES_PER_RUN} examples per run over these arguments.",
        "",
        "| entry point | input | behaviour | upstream |",
        "|---|---|---|---|",
    ]
    for r in ROWS:
        what = f"works: {r.match}" if r.raises is None else f"`{r.raises.__name__}`: `{r.match}`"
        lines.append(f"| `{r.entry}` | {_cell(r.case)} | {_cell(what)} | {_upstream_cell(r)} |")
    lines += [
        "",
        "## The `q3tts` CLI",
        "",
        "Usage errors print one line, `q3tts: error: ...`, and exit 2; an input that cannot be used (a missing",
        "checkpoint, an unreadable file, bad data) exits 1; `--debug` lets the exception through with its traceback.",
        "Every option of the four commands has a row (a test checks it).",
        "",
        "| command | input | exit | stderr |",
        "|---|---|---|---|",
    ]
    for r in CLI_ROWS:
        what = f"works: {r.match}" if r.exit_code == 0 else f"`{r.match}`"
        lines.append(f"| `{r.command}` | {_cell(r.case)} | {r.exit_code} | {_cell(what)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "&#124;").encode("ascii", "backslashreplace").decode()


def _upstream_cell(r: Row) -> str:
    if r.raises is not None:
        return ""
    if r.entry in NO_UPSTREAM:
        return "no counterpart"
    if isinstance(r.upstream, Refuses):
        return f"upstream fails: `{_cell(r.upstream.error)}`"
    return "as upstream (compared)"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bad_inputs_cli, as pytest imports it
    out = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {out}")
