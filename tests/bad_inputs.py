"""The bad-input catalogue of the runtime API: one row per case, its decided behaviour.

Each row is either ``raises`` (the error type and a pattern its message must match: it names the
argument, the bad value and what is allowed) or ``works`` (upstream accepts it; we do the same).
tests/test_bad_inputs.py runs every row; docs/bad-inputs.md is rendered from this table
(`python -m tests.bad_inputs` rewrites it, and a test checks it is current).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Row:
    entry: str  # the public entry point
    case: str
    model_type: str  # the fixture it runs on
    call: Callable[[Any], Any]  # (model) -> result
    raises: type[Exception] | None  # None: it works, as upstream
    match: str = ""  # pattern of the message (raises) or why it works (works)


def _codes(m, frames=3):
    return torch.zeros(frames, m.config.talker.num_code_groups, dtype=torch.long)


def _wav(n=24000):
    t = np.arange(n) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


G = dict(max_new_tokens=3)  # keep generating cases short


def _ids(m, text="Hi there."):
    return [torch.tensor([m.text_tokenizer.encode(m.text_tokenizer.assistant_text(text))])]


def _huge(m):
    greedy = dict(languages=["auto"], do_sample=False, subtalker_dosample=False)
    (codes,), _ = m.generate(input_ids=_ids(m), max_new_tokens=8, **greedy)
    (out,), _ = m.generate(input_ids=_ids(m), max_new_tokens=10**12, eos_token_id=int(codes[4, 0]), **greedy)
    assert 1 <= out.shape[0] <= 5
    return out


def _cv(m, text="Hello.", **kw):
    return m.generate_custom_voice(text, speaker="alice", **{**G, **kw})


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
        "decodes to 0 samples (upstream returns an empty array for an empty item of a batch)",
    ),
    Row(
        "decode_codes",
        "trailing -1 padding frames",
        "base",
        lambda m: m.decode_codes(torch.cat([_codes(m), _codes(m, 2) - 1])),
        None,
        "upstream's padding: cut",
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
        "buffers grow as frames come: nothing is allocated up front; runs until EOS",
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
        "averaged over the last axis, as upstream",
    ),
    Row(
        "create_voice_clone_prompt",
        "int16 PCM",
        "base",
        lambda m: m.create_voice_clone_prompt(((_wav() * 32767).astype(np.int16), 24000), x_vector_only_mode=True),
        None,
        "cast to float32 unscaled, as upstream (a warning says it exceeds [-1, 1])",
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
)


def render_markdown() -> str:
    lines = [
        "# Bad inputs to the runtime API: the decided behaviour of each",
        "",
        "Rendered from `tests/bad_inputs.py` (`python -m tests.bad_inputs`); `tests/test_bad_inputs.py` runs every row.",
        "Errors name the argument, the bad value and what is allowed. CLIs print the same message on one line",
        "(`q3tts: error: ...`); bad option values are usage errors (exit 2), unusable inputs exit 1.",
        "",
        "| entry point | input | behaviour |",
        "|---|---|---|",
    ]
    for r in ROWS:
        what = f"works: {r.match}" if r.raises is None else f"`{r.raises.__name__}`: `{r.match}`"
        lines.append(f"| `{r.entry}` | {r.case} | {what.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pathlib import Path

    out = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {out}")
