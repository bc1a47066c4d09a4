"""Text tokenizer without transformers: Qwen2 byte-level BPE from vocab.json + merges.txt.

It builds, with the `tokenizers` library, the same pipeline transformers' Qwen2 converter builds:
NFC normalisation, the Qwen2 split regex, byte-level mapping, BPE, and the added tokens of
tokenizer_config.json matched before anything else.

The `fix_mistral_regex` quirk: upstream loads its processor with `fix_mistral_regex=True`, and
transformers 4.57.3 then swaps in a different split regex for a local directory whose vocabulary
has more than 100k entries and whose config.json names a transformers_version that is missing or
in (4.57.2, 5.0) (or a Mistral model type). ``uses_mistral_regex`` reproduces that decision from
the upstream config.json that convert-ckpt keeps as ``upstream_config.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonfile import load_json_text

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
MISTRAL_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_MISTRAL_MODEL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")


class TokenizerError(ValueError):
    pass


def _version_key(v: str) -> tuple[tuple[int, ...], int]:
    """Release tuple plus 0 for pre/dev releases (they sort before the release), 1 otherwise."""
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)(.*)$", v)
    if not m:
        return ((0,), 0)
    release = tuple(int(x) for x in m.group(1).split("."))
    release = release + (0,) * (3 - len(release)) if len(release) < 3 else release
    rest = m.group(2).lower()
    pre = bool(re.match(r"^[.\-_]?(a|b|rc|alpha|beta|c|pre|preview|dev)", rest))
    return (release, 0 if pre else 1)


def uses_mistral_regex(vocab_size: int, upstream_config: dict[str, Any] | None) -> bool:
    if vocab_size <= 100000 or upstream_config is None:
        return False
    version = upstream_config.get("transformers_version")
    model_type = upstream_config.get("model_type")
    if version and _version_key(version) <= _version_key("4.57.2"):
        if model_type is not None and model_type not in _MISTRAL_MODEL_TYPES:
            return False
    elif version and _version_key(version) >= _version_key("5.0.0"):
        return False
    return True


class TextTokenizer:
    def __init__(self, tokenizer, mistral_regex: bool):
        self._tok = tokenizer
        self.mistral_regex = mistral_regex

    @classmethod
    def from_dir(cls, directory: str | Path) -> TextTokenizer:
        try:
            from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
            from tokenizers.models import BPE
        except ImportError as e:  # pragma: no cover - tokenizers is a dependency
            raise TokenizerError("the 'tokenizers' package is required for text input") from e
        d = Path(directory)
        vocab_path, merges_path = d / "vocab.json", d / "merges.txt"
        for p in (vocab_path, merges_path):
            if not p.is_file():
                raise TokenizerError(f"{p}: missing (text tokenizer files are copied by convert-ckpt)")
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = []
        for line in merges_path.read_text(encoding="utf-8").splitlines():
            if not line or line.startswith("#version"):
                continue
            a, _, b = line.partition(" ")
            merges.append((a, b))
        upstream_cfg = None
        for name in ("upstream_config.json",):
            if (d / name).is_file():
                upstream_cfg = load_json_text((d / name).read_text(encoding="utf-8"))
        mistral = uses_mistral_regex(len(vocab), upstream_cfg)

        tok = Tokenizer(
            BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                unk_token=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
                byte_fallback=False,
            )
        )
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(
                    Regex(MISTRAL_PATTERN if mistral else QWEN2_PATTERN), behavior="isolated", invert=False
                ),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()

        cfg_path = d / "tokenizer_config.json"
        added = {}
        if cfg_path.is_file():
            added = load_json_text(cfg_path.read_text(encoding="utf-8")).get("added_tokens_decoder", {}) or {}
        for id_str, spec in sorted(added.items(), key=lambda kv: int(kv[0])):
            token = AddedToken(
                spec["content"],
                single_word=spec.get("single_word", False),
                lstrip=spec.get("lstrip", False),
                rstrip=spec.get("rstrip", False),
                normalized=spec.get("normalized", not spec.get("special", False)),
                special=spec.get("special", False),
            )
            if spec.get("special", False):
                tok.add_special_tokens([token])
            else:
                tok.add_tokens([token])
            got = tok.token_to_id(spec["content"])
            if got != int(id_str):
                raise TokenizerError(
                    f"{cfg_path}: added token {spec['content']!r} should have id {id_str} but gets {got} "
                    "(ids must continue the vocabulary without gaps)"
                )
        return cls(tok, mistral)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    # Upstream's chat templates (qwen_tts inference wrapper).
    @staticmethod
    def assistant_text(text: str) -> str:
        return ASSISTANT.render(text)

    @staticmethod
    def ref_text(text: str) -> str:
        return REFERENCE.render(text)

    @staticmethod
    def instruct_text(text: str) -> str:
        return INSTRUCT.render(text)

    def check_template(self, template: ChatTemplate) -> None:
        """Raise if this vocabulary splits a template part into another number of tokens than the
        prompt builder slices by (it would silently feed the wrong ids to the talker)."""
        for part in (template.prefix, template.suffix):
            got = len(self._tok.encode(part.text, add_special_tokens=True).ids)
            if got != part.n_tokens:
                raise TokenizerError(
                    f"chat template part {part.text!r} is {got} tokens in this vocabulary; the prompt layout "
                    f"expects {part.n_tokens}"
                )


@dataclass(frozen=True)
class TemplatePart:
    text: str
    n_tokens: int  # its length in Qwen's vocabulary; checked against a loaded vocabulary by check_template


@dataclass(frozen=True)
class ChatTemplate:
    """One of upstream's chat templates as named parts, so the prompt builder slices token ids by
    part (``role``, ``body``) instead of by bare offsets."""

    prefix: TemplatePart
    suffix: TemplatePart

    def render(self, text: str) -> str:
        return f"{self.prefix.text}{text}{self.suffix.text}"

    def role(self, ids):
        """The role prefix of rendered ids [1, L] (``<|im_start|>assistant\\n``)."""
        return ids[:, : self.prefix.n_tokens]

    def body(self, ids):
        """The text between the role prefix and the suffix."""
        return ids[:, self.prefix.n_tokens : ids.shape[1] - self.suffix.n_tokens]

    def body_after(self, ids, n_skip: int):
        """The body without its first ``n_skip`` tokens (the streaming prompt carries the first one)."""
        return ids[:, self.prefix.n_tokens + n_skip : ids.shape[1] - self.suffix.n_tokens]


_ROLE_ASSISTANT = TemplatePart("<|im_start|>assistant\n", 3)
_END_TURN = TemplatePart("<|im_end|>\n", 2)
# Target text: the assistant turn, closed and followed by the next assistant turn's role prefix.
ASSISTANT = ChatTemplate(_ROLE_ASSISTANT, TemplatePart("<|im_end|>\n<|im_start|>assistant\n", 5))
# Transcript of a voice-clone reference: one closed assistant turn.
REFERENCE = ChatTemplate(_ROLE_ASSISTANT, _END_TURN)
# Voice description / style instruction: one closed user turn (embedded whole, never sliced).
INSTRUCT = ChatTemplate(TemplatePart("<|im_start|>user\n", 3), _END_TURN)
