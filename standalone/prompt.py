"""Talker prompt construction: the embeddings upstream's `generate` feeds the talker.

Layout per sample (T = text embedding + projection, C = codec embedding), one step per part:

    instruct       T(instruct ids)                                  optional (voice design / custom voice)
    role prefix    T(<|im_start|> assistant \\n)                      ASSISTANT.role(ids)
    codec prefix   T(tts_pad) x (n-2), T(tts_bos)  +  C(prefix)[:-1]  prefix = think tags [+ language],
                                                                      [speaker], pad, bos
    then one text body:
      streaming      T(first body token) + C(bos); the rest of the body trails, one token per frame
      non-streaming  T(body), T(tts_eos)  + C(pad) each; then T(tts_pad) + C(bos)
      ICL (clone)    T(ref body + body), T(tts_eos) over C(bos) and the reference codes

Token ids are sliced by the named parts of the chat templates in text.py (``ASSISTANT.role``,
``ASSISTANT.body``, ``REFERENCE.body``), never by bare offsets. Each embedding is computed with
the same call shapes as upstream (the three tts special tokens in one [1, 3] lookup, the role as
one 3-token call, ...), so fp32 results are bit-identical.

A batch is left-padded with zeros; the trailing text is right-padded with T(tts_pad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .text import ASSISTANT, REFERENCE

Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TalkerPrompt:
    inputs_embeds: torch.Tensor  # [B, L, H], left-padded
    attention_mask: torch.Tensor  # [B, L] long, 0 on padding
    trailing_text: torch.Tensor  # [B, T, H], right-padded with tts_pad
    tts_pad_embed: torch.Tensor  # [1, 1, H]


@dataclass(frozen=True)
class TtsSpecials:
    """T() of the three tts special tokens, each [1, 1, H]."""

    bos: torch.Tensor
    eos: torch.Tensor
    pad: torch.Tensor


class PromptError(ValueError):
    pass


def _ids(values: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([values], dtype=like.dtype, device=like.device)


# --- the parts, one function each ------------------------------------------------------------


def tts_specials(model, like: torch.Tensor) -> TtsSpecials:
    cfg = model.config
    bos, eos, pad = model.talker.embed_text(
        _ids([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id], like)
    ).chunk(3, dim=1)
    return TtsSpecials(bos, eos, pad)


def resolve_language_id(tcfg, language: str | None, speaker: str | None, i: int) -> int | None:
    """The codec language id, or None for "auto". A dialect speaker overrides the language when
    it is Chinese or auto (upstream's rule)."""
    if language is None:
        raise PromptError(f"languages[{i}] is None")
    if language.lower() == "auto":
        language_id = None
    else:
        if language.lower() not in tcfg.codec_language_id:
            raise PromptError(f"language {language!r} is not supported; known: {sorted(tcfg.codec_language_id)}")
        language_id = tcfg.codec_language_id[language.lower()]
    if (
        language.lower() in ("chinese", "auto")
        and speaker not in (None, "")
        and tcfg.spk_is_dialect.get(speaker.lower(), False) is not False
    ):
        language_id = tcfg.codec_language_id[tcfg.spk_is_dialect[speaker.lower()]]
    return language_id


def speaker_embedding(
    model, speaker: str | None, clone: dict[str, Any] | None, spk_embeds, i: int, like: torch.Tensor
) -> torch.Tensor | None:
    """The speaker slot of the codec prefix: a named speaker's codec embedding, a clone prompt's
    x-vector, or nothing."""
    tcfg = model.config.talker
    if clone is not None:
        return spk_embeds[i] if (clone["x_vector_only_mode"][i] or clone["icl_mode"][i]) else None
    if speaker is None or speaker == "":
        return None
    if speaker.lower() not in tcfg.spk_id:
        raise PromptError(f"speaker {speaker!r} is not supported; known: {sorted(tcfg.spk_id)}")
    return model.talker.codec_embedding(
        torch.tensor(tcfg.spk_id[speaker.lower()], dtype=like.dtype, device=model.device)
    )


def codec_prefix(
    model, language_id: int | None, speaker_embed: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """C(think tags [+ language]) [+ speaker] + C(pad, bos): [1, n, H]."""
    tcfg = model.config.talker
    C = model.talker.codec_embedding
    if language_id is None:
        tags = [tcfg.codec_nothink_id, tcfg.codec_think_bos_id, tcfg.codec_think_eos_id]
    else:
        tags = [tcfg.codec_think_id, tcfg.codec_think_bos_id, language_id, tcfg.codec_think_eos_id]
    parts = [C(_ids(tags, like))]
    if speaker_embed is not None:
        parts.append(speaker_embed.view(1, 1, -1))
    parts.append(C(_ids([tcfg.codec_pad_id, tcfg.codec_bos_id], like)))
    return torch.cat(parts, dim=1)


def role_and_codec_prefix(model, ids: torch.Tensor, prefix: torch.Tensor, specials: TtsSpecials) -> torch.Tensor:
    """T(role) followed by the codec prefix (without its final bos) over T(tts_pad)... T(tts_bos)."""
    role = model.talker.embed_text(ASSISTANT.role(ids))
    text_channel = torch.cat((specials.pad.expand(-1, prefix.shape[1] - 2, -1), specials.bos), dim=1)
    return torch.cat((role, text_channel + prefix[:, :-1]), dim=1)


def streaming_body(model, ids, prefix, specials) -> tuple[torch.Tensor, torch.Tensor]:
    """(first body token over the codec bos, the rest of the body + tts_eos to trail)."""
    T = model.talker.embed_text
    first = T(ASSISTANT.body(ids)[:, :1]) + prefix[:, -1:]
    trailing = torch.cat((T(ASSISTANT.body_after(ids, 1)), specials.eos), dim=1)
    return first, trailing


def non_streaming_body(model, ids, specials) -> tuple[torch.Tensor, torch.Tensor]:
    """(the whole body + tts_eos over codec pads, then tts_pad over the codec bos; nothing trails)."""
    tcfg = model.config.talker
    T, C = model.talker.embed_text, model.talker.codec_embedding
    body = ASSISTANT.body(ids)
    text = torch.cat((T(body), specials.eos), dim=1) + C(_ids([tcfg.codec_pad_id] * (body.shape[1] + 1), ids))
    return torch.cat([text, specials.pad + C(_ids([tcfg.codec_bos_id], ids))], dim=1), specials.pad


def icl_body(model, ids, ref_ids, ref_code, specials, non_streaming_mode) -> tuple[torch.Tensor, torch.Tensor]:
    """In-context cloning: reference + target text over C(bos) and the summed reference codes."""
    tcfg = model.config.talker
    talker, cp = model.talker, model.code_predictor
    C = talker.codec_embedding
    text_id = ASSISTANT.body(ids)
    text_embed = talker.embed_text(torch.cat([REFERENCE.body(ref_ids), text_id], dim=-1))
    text_embed = torch.cat([text_embed, specials.eos], dim=1)
    groups = [C(ref_code[:, :1])] + [cp.embed(g, ref_code[:, g : g + 1]) for g in range(1, tcfg.num_code_groups)]
    codec_embed = torch.cat(groups, dim=1).sum(1).unsqueeze(0)
    codec_embed = torch.cat([C(_ids([tcfg.codec_bos_id], text_id)), codec_embed], dim=1)
    text_len, codec_len = text_embed.shape[1], codec_embed.shape[1]
    if non_streaming_mode:
        embed = text_embed + C(_ids([tcfg.codec_pad_id] * text_len, text_id))
        return torch.cat([embed, codec_embed + specials.pad], dim=1), specials.pad
    if text_len > codec_len:
        return text_embed[:, :codec_len] + codec_embed, text_embed[:, codec_len:]
    text_embed = torch.cat([text_embed] + [specials.pad] * (codec_len - text_len), dim=1)
    return text_embed + codec_embed, specials.pad


def left_pad(sequences: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, H] each -> (embeds [B, L, H] left-padded with zeros, attention mask [B, L])."""
    max_len = max(s.shape[0] for s in sequences)
    embeds = sequences[0].new_zeros(len(sequences), max_len, sequences[0].shape[-1])
    mask = torch.zeros(len(sequences), max_len, dtype=torch.long, device=device)
    for i, s in enumerate(sequences):
        embeds[i, max_len - s.shape[0] :] = s
        mask[i, max_len - s.shape[0] :] = 1
    return embeds, mask


def right_pad_trailing(trailing: list[torch.Tensor], pad: torch.Tensor) -> torch.Tensor:
    """[1, T_i, H] each -> [B, T, H] right-padded with T(tts_pad)."""
    pad_vector = pad.squeeze()
    out = pad_vector.expand(len(trailing), max(t.shape[1] for t in trailing), pad_vector.shape[-1]).clone()
    for i, t in enumerate(trailing):
        out[i, : t.shape[1]] = t[0]
    return out


# --- the whole prompt ------------------------------------------------------------------------


def check_token_ids(name: str, ids, vocab_size: int) -> None:
    """Token ids [1, L] of integer dtype inside the text vocabulary (torch's embedding would
    fail with a dtype RuntimeError or "index out of range in self")."""
    if not isinstance(ids, torch.Tensor):
        raise PromptError(f"{name} must be a [1, L] tensor of token ids, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise PromptError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise PromptError(f"{name} must have shape [1, L], got {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise PromptError(f"{name} has token id {bad}; ids must be in 0..{vocab_size - 1}")


def _check_ids(i: int, ids: torch.Tensor, vocab_size: int) -> None:
    check_token_ids(f"input_ids[{i}]", ids, vocab_size)
    template_len = ASSISTANT.prefix.n_tokens + ASSISTANT.suffix.n_tokens
    if ids.shape[1] <= template_len:
        raise PromptError(
            f"input_ids[{i}] has {ids.shape[1]} tokens; the assistant template alone has {template_len} "
            f"({ASSISTANT.render('...')!r})"
        )


def _is_icl(clone: dict[str, Any] | None, i: int) -> bool:
    return clone is not None and clone.get("ref_code") is not None and clone["icl_mode"][i]


def _text_body(model, i, ids, ref_ids, clone, prefix, specials, non_streaming_mode):
    """The text part of sample ``i`` after the codec prefix, and the text that trails."""
    if not _is_icl(clone, i):
        if non_streaming_mode:
            return non_streaming_body(model, ids, specials)
        return streaming_body(model, ids, prefix, specials)
    if ref_ids is None or ref_ids[i] is None:
        raise PromptError(f"voice clone item {i} is in ICL mode but has no reference text ids")
    ref_code = clone["ref_code"][i]
    if ref_code is None:
        raise PromptError(f"voice clone item {i} is in ICL mode but has no reference codes")
    return icl_body(model, ids, ref_ids[i], ref_code.to(model.device), specials, non_streaming_mode)


def strict_flag(name: str, value: Any) -> bool:
    """A boolean option as a bool (numpy's too), never by truthiness: "no", "false" or 0.5 would
    all read as True and silently switch the mode."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise PromptError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def build_talker_prompt(
    model,
    input_ids: Sequence[torch.Tensor],
    instruct_ids: Sequence[torch.Tensor | None] | None = None,
    ref_ids: Sequence[torch.Tensor | None] | None = None,
    voice_clone_prompt: dict[str, Any] | None = None,
    languages: Sequence[str] | None = None,
    speakers: Sequence[str | None] | None = None,
    non_streaming_mode: bool = False,
) -> TalkerPrompt:
    non_streaming_mode = strict_flag("non_streaming_mode", non_streaming_mode)
    if not isinstance(input_ids, (list, tuple)):
        raise PromptError(
            f"input_ids must be a list of [1, L] tensors (one per batch item), got {type(input_ids).__name__}"
        )
    if not input_ids:
        raise PromptError("input_ids is empty")
    vocab = model.config.talker.text_vocab_size
    for name, extra in (("instruct_ids", instruct_ids), ("ref_ids", ref_ids)):
        if extra is not None and len(extra) != len(input_ids):
            raise PromptError(f"{name} must have one entry per input ({len(input_ids)}), got {len(extra)}")
        for i, ids in enumerate(extra or []):
            if ids is not None:
                check_token_ids(f"{name}[{i}]", ids, vocab)
    if languages is None or len(languages) != len(input_ids):
        raise PromptError(f"languages must give one language per input ({len(input_ids)}), got {languages!r}")
    speakers = [None] * len(input_ids) if speakers is None else speakers
    clone = voice_clone_prompt
    spk_embeds = None if clone is None else [e.to(model.device).to(model.dtype) for e in clone["ref_spk_embedding"]]
    sequences, trailing = [], []
    specials = None
    for i, (ids, language, speaker) in enumerate(zip(input_ids, languages, speakers)):
        _check_ids(i, ids, vocab)
        parts = []
        if instruct_ids is not None and instruct_ids[i] is not None:
            parts.append(model.talker.embed_text(instruct_ids[i]))
        speaker_embed = speaker_embedding(model, speaker, clone, spk_embeds, i, ids)
        language_id = resolve_language_id(model.config.talker, language, speaker, i)
        specials = tts_specials(model, ids)
        prefix = codec_prefix(model, language_id, speaker_embed, ids)
        parts.append(role_and_codec_prefix(model, ids, prefix, specials))
        body, trailing_text = _text_body(model, i, ids, ref_ids, clone, prefix, specials, non_streaming_mode)
        parts.append(body)
        sequences.append(torch.cat(parts, dim=1)[0])
        trailing.append(trailing_text)
    embeds, mask = left_pad(sequences, model.device)
    return TalkerPrompt(embeds, mask, right_pad_trailing(trailing, specials.pad), specials.pad)
