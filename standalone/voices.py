"""Text-level methods that mirror upstream's `Qwen3TTSModel` wrapper: custom voice, voice design,
voice clone, and the voice-clone prompt. They return ``(list of float32 waveforms, sample_rate)``
like upstream's; ``return_codes=True`` returns the codes ([frames, G] per item) instead.

ICL cloning needs reference codes; the standalone speech-tokenizer encoder makes them from the
reference audio as upstream does (or pass ``ref_code=`` to reuse codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch

from .audio import as_waveform, check_rate, read_audio_file, resample, to_mono
from .generation import voice_method_options
from .prompt import strict_flag
from .text import ASSISTANT, REFERENCE, TextTokenizer

AudioLike = Union[str, "tuple[np.ndarray, int]"]


@dataclass
class VoiceClonePromptItem:
    ref_code: torch.Tensor | None  # [T, G] reference codes (ICL) or None (x-vector only)
    ref_spk_embedding: torch.Tensor  # [enc_dim]
    x_vector_only_mode: bool
    icl_mode: bool
    ref_text: str | None = None


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _texts(name: str, value, optional: bool = False) -> list:
    """A text or a list of texts, each checked: a str, valid Unicode (a lone surrogate cannot be
    tokenized), and not empty or whitespace only. Control characters and NUL are tokenized as
    upstream tokenizes them. ``optional`` texts (a custom-voice instruction, a reference
    transcript) may be None or "", which upstream reads as "none"; whitespace is then kept, as
    upstream tokenizes it."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{name} is an empty list")
    for i, t in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        if optional and (t is None or t == ""):
            continue
        if not isinstance(t, str):
            raise TypeError(f"{where} must be a str{' or None' if optional else ''}, got {type(t).__name__}")
        if not optional and not t.strip():
            raise ValueError(f"{where} is empty or whitespace only; there is nothing to say")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{where} is not valid Unicode ({e.reason} at position {e.start}: {t[e.start]!r})"
            ) from None
    return items


def _broadcast(name: str, values: list, n: int) -> list:
    if len(values) == 1 and n > 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"batch size mismatch: {n} texts but {len(values)} {name}")
    return values


class VoiceMethods:
    """Mixed into Qwen3TTS; needs ``config``, ``checkpoint_dir``, ``generate`` and
    ``extract_speaker_embedding``."""

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def text_tokenizer(self) -> TextTokenizer:
        tok = getattr(self, "_text_tokenizer", None)
        if tok is None:
            tok = TextTokenizer.from_dir(self.checkpoint_dir)
            for template in (ASSISTANT, REFERENCE):
                tok.check_template(template)
            self._text_tokenizer = tok
        return tok

    @property
    def generate_defaults(self) -> dict[str, Any]:
        d = getattr(self, "_generate_defaults", None)
        if d is None:
            path = self.checkpoint_dir / "generation_config.json"
            d = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            self._generate_defaults = d
        return d

    def _tokenize(self, text: str) -> torch.Tensor:
        return torch.tensor([self.text_tokenizer.encode(text)], dtype=torch.long, device=self.device)

    def _merge_generate_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return voice_method_options(self.generate_defaults, kwargs)

    def _require_type(self, model_type: str, method: str) -> None:
        if self.config.tts_model_type != model_type:
            raise ValueError(
                f"{method} needs a {model_type!r} checkpoint; this one is {self.config.tts_model_type!r} "
                f"(size {self.config.tts_model_size!r})"
            )

    def get_supported_speakers(self) -> list[str]:
        return sorted(s.lower() for s in self.config.talker.spk_id)

    def get_supported_languages(self) -> list[str]:
        return sorted(["auto"] + [k.lower() for k in self.config.talker.codec_language_id if "dialect" not in k])

    def _languages(self, language, n: int) -> list[str]:
        langs = (
            _as_list(language)
            if isinstance(language, list)
            else ([language] * n if language is not None else ["Auto"] * n)
        )
        langs = _broadcast("languages", langs, n)
        supported = set(self.get_supported_languages())
        bad = [lang for lang in langs if lang is None or str(lang).lower() not in supported]
        if bad:
            raise ValueError(f"unsupported languages: {bad}; supported: {sorted(supported)}")
        return langs

    def _instruct_ids(self, instructs: Sequence[str | None]) -> list[torch.Tensor | None]:
        return [None if not ins else self._tokenize(TextTokenizer.instruct_text(ins)) for ins in instructs]

    # --- modes -------------------------------------------------------------------------------
    def generate_custom_voice(
        self,
        text,
        speaker,
        language=None,
        instruct=None,
        non_streaming_mode: bool = True,
        return_codes: bool = False,
        **kwargs,
    ):
        self._require_type("custom_voice", "generate_custom_voice")
        texts = _texts("text", text)
        n = len(texts)
        languages = self._languages(language, n)
        speakers = _broadcast("speakers", _as_list(speaker), n)
        supported = set(self.get_supported_speakers())
        bad = [s for s in speakers if s not in (None, "") and str(s).lower() not in supported]
        if bad:
            raise ValueError(f"unsupported speakers: {bad}; supported: {sorted(supported)}")
        if self.config.tts_model_size in "0b6":  # upstream drops instructions for 0.6B (substring test kept)
            instruct = None
        instructs = _broadcast("instructs", _texts("instruct", "" if instruct is None else instruct, optional=True), n)
        codes, _ = self.generate(
            input_ids=[self._tokenize(TextTokenizer.assistant_text(t)) for t in texts],
            instruct_ids=self._instruct_ids(instructs),
            languages=languages,
            speakers=speakers,
            non_streaming_mode=non_streaming_mode,
            **self._merge_generate_kwargs(kwargs),
        )
        return codes if return_codes else self.decode_codes(codes)

    def generate_voice_design(
        self, text, instruct, language=None, non_streaming_mode: bool = True, return_codes: bool = False, **kwargs
    ):
        self._require_type("voice_design", "generate_voice_design")
        texts = _texts("text", text)
        n = len(texts)
        languages = self._languages(language, n)
        instructs = _broadcast("instructs", _texts("instruct", instruct), n)
        codes, _ = self.generate(
            input_ids=[self._tokenize(TextTokenizer.assistant_text(t)) for t in texts],
            instruct_ids=self._instruct_ids(instructs),
            languages=languages,
            non_streaming_mode=non_streaming_mode,
            **self._merge_generate_kwargs(kwargs),
        )
        return codes if return_codes else self.decode_codes(codes)

    def create_voice_clone_prompt(self, ref_audio, ref_text=None, x_vector_only_mode=False, ref_code=None):
        """Speaker embedding (and, for ICL, reference codes) of reference audio, as upstream.

        ``ref_audio``: a path, (waveform, sr), or a list; any sample rate (resampled as upstream).
        Reference codes come from the standalone speech-tokenizer encoder, computed the way
        upstream computes them: all items in one right-padded batch when they share a sample
        rate, else item by item. ``ref_code`` ([T, G] per item) skips encoding for an item.
        """
        self._require_type("base", "create_voice_clone_prompt")
        audios = _as_list(ref_audio) if isinstance(ref_audio, list) else [ref_audio]
        n = len(audios)
        texts = _broadcast("ref_texts", _texts("ref_text", ref_text, optional=True), n)
        flags = [strict_flag("x_vector_only_mode", x) for x in _as_list(x_vector_only_mode)]
        xvec = _broadcast("x_vector_only_mode flags", flags, n)
        codes = _broadcast("ref_codes", _as_list(ref_code) if isinstance(ref_code, list) else [ref_code], n)
        loaded = [_load_audio(a) for a in audios]
        for i, (rtext, xonly) in enumerate(zip(texts, xvec)):
            if not xonly and not rtext:
                raise ValueError(f"ref_text is required for ICL cloning (x_vector_only_mode=False); item {i} has none")
        if any(not x and c is None for x, c in zip(xvec, codes)):
            encoded = self._encode_references(loaded)
            codes = [enc if c is None else c for enc, c in zip(encoded, codes)]
        sample_rate = self.config.speaker_encoder.sample_rate
        items = []
        for i, ((wav, sr), rtext, xonly, code) in enumerate(zip(loaded, texts, xvec, codes)):
            if not xonly:
                code = self._check_ref_code(i, code)
            items.append(
                VoiceClonePromptItem(
                    ref_code=None if xonly else code,
                    ref_spk_embedding=self.extract_speaker_embedding(resample(wav, sr, sample_rate), sample_rate),
                    x_vector_only_mode=bool(xonly),
                    icl_mode=not xonly,
                    ref_text=rtext,
                )
            )
        return items

    def _check_ref_code(self, i: int, code) -> torch.Tensor:
        """Reference codes as int64 [T, G] in the codebook: a float would be truncated and a code
        outside it would fail deep inside an embedding."""
        groups, size = self.config.talker.num_code_groups, self.config.talker.code_predictor.vocab_size
        code = torch.as_tensor(code)
        if code.is_floating_point() or code.is_complex() or code.dtype == torch.bool:
            raise TypeError(f"item {i}: ref_code must hold integer codes, got dtype {code.dtype}")
        if code.dim() != 2 or code.shape[1] != groups:
            raise ValueError(f"item {i}: ref_code must be [T, {groups}], got {tuple(code.shape)}")
        if code.numel() and (int(code.min()) < 0 or int(code.max()) >= size):
            bad = int(code.min()) if int(code.min()) < 0 else int(code.max())
            raise ValueError(f"item {i}: ref_code has code {bad}; codes must be in 0..{size - 1}")
        return code.long()

    def _encode_references(self, loaded: list[tuple[np.ndarray, int]]) -> list[torch.Tensor]:
        """Upstream's batching of reference encoding: one padded batch if all rates are equal."""
        rates = {sr for _, sr in loaded}
        if len(rates) == 1:
            return self.encode_audio([w for w, _ in loaded], sr=loaded[0][1])
        return [self.encode_audio([w], sr=sr)[0] for w, sr in loaded]

    def generate_voice_clone(
        self,
        text,
        language=None,
        ref_audio=None,
        ref_text=None,
        x_vector_only_mode=False,
        voice_clone_prompt=None,
        non_streaming_mode: bool = False,
        ref_code=None,
        return_codes: bool = False,
        **kwargs,
    ):
        self._require_type("base", "generate_voice_clone")
        texts = _texts("text", text)
        n = len(texts)
        languages = self._languages(language, n)
        if voice_clone_prompt is None:
            if ref_audio is None:
                raise ValueError("generate_voice_clone needs voice_clone_prompt or ref_audio")
            voice_clone_prompt = self.create_voice_clone_prompt(ref_audio, ref_text, x_vector_only_mode, ref_code)
        items = _broadcast("voice clone prompts", _prompt_items(voice_clone_prompt), n)
        prompt = dict(
            ref_code=[it.ref_code for it in items],
            ref_spk_embedding=[it.ref_spk_embedding for it in items],
            x_vector_only_mode=[it.x_vector_only_mode for it in items],
            icl_mode=[it.icl_mode for it in items],
        )
        ref_ids = [None if not it.ref_text else self._tokenize(TextTokenizer.ref_text(it.ref_text)) for it in items]
        codes, _ = self.generate(
            input_ids=[self._tokenize(TextTokenizer.assistant_text(t)) for t in texts],
            ref_ids=ref_ids,
            voice_clone_prompt=prompt,
            languages=languages,
            non_streaming_mode=non_streaming_mode,
            **self._merge_generate_kwargs(kwargs),
        )
        if return_codes:
            return codes
        # As upstream: decode the reference codes together with the new ones, then cut the
        # reference's share of the samples (upstream's float formula, off by one sample at times).
        full = [
            c if it.ref_code is None else torch.cat([it.ref_code.to(c.device), c], dim=0) for c, it in zip(codes, items)
        ]
        wavs, sr = self.decode_codes(full)
        out = []
        for wav, it, total in zip(wavs, items, full):
            if it.ref_code is None:
                out.append(wav)
            else:
                cut = int(int(it.ref_code.shape[0]) / max(int(total.shape[0]), 1) * wav.shape[0])
                out.append(wav[cut:])
        return out, sr


def _prompt_items(prompt) -> list:
    """A list of prompt items (create_voice_clone_prompt's, or upstream's: the same fields)."""
    fields = ("ref_code", "ref_spk_embedding", "x_vector_only_mode", "icl_mode", "ref_text")
    items = prompt if isinstance(prompt, list) else None
    if not items or not all(all(hasattr(it, f) for f in fields) for it in items):
        raise TypeError(
            "voice_clone_prompt must be a non-empty list of VoiceClonePromptItem (from create_voice_clone_prompt), "
            f"got {type(prompt).__name__}" + (f" of {sorted({type(it).__name__ for it in items})}" if items else "")
        )
    return items


def _load_audio(audio) -> tuple[np.ndarray, int]:
    """(float32 mono waveform, its sample rate), the way upstream's wrapper reads references."""
    if isinstance(audio, tuple) and len(audio) == 2:
        wav, sr = audio
        rate = check_rate(sr, "reference audio")  # before any copy: a rate in kHz is refused at once
        wav = to_mono(as_waveform(wav, "reference audio")).astype(np.float32)
        if wav.ndim != 1 or wav.shape[0] == 0:
            raise ValueError(
                f"reference audio must be a non-empty 1-D (or [samples, channels]) waveform, got shape {wav.shape}"
            )
        return wav, rate
    if isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__"):
        return read_audio_file(audio if not isinstance(audio, bytes) else audio.decode())
    if isinstance(audio, np.ndarray):
        raise ValueError("for a numpy waveform pass a tuple (waveform, sample_rate)")
    raise TypeError(f"unsupported audio input type: {type(audio).__name__}")
