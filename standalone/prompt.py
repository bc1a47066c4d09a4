"""Talker prompt construction: the embeddings upstream's `generate` feeds the talker.

Layout per sample (T = text embedding + projection, C = codec embedding):

    [instruct: T(instruct ids)]                                   optional, voice design / custom voice
    role:  T(<|im_start|> assistant \\n)                           3 positions
    body:  T(tts_pad) x (n-2), T(tts_bos)  +  codec prefix[:-1]     codec prefix = think tags,
                                                                    language, speaker, pad, bos
    then one of
      streaming:      T(first text token) + C(bos); the rest of the text trails, one per frame
      non-streaming:  T(text) , T(tts_eos)  + C(pad) each; then T(tts_pad) + C(bos)
      ICL (clone):    T(ref text + text), T(tts_eos) aligned with C(bos), reference codes

Each embedding is computed with the same call shapes as upstream (a [1, 3] special-token lookup,
the role as one 3-token call, ...), so fp32 results are bit-identical.

A batch is left-padded with zeros; the trailing text is right-padded with T(tts_pad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class TalkerPrompt:
    inputs_embeds: torch.Tensor  # [B, L, H], left-padded
    attention_mask: torch.Tensor  # [B, L] long, 0 on padding
    trailing_text: torch.Tensor  # [B, T, H], right-padded with tts_pad
    tts_pad_embed: torch.Tensor  # [1, 1, H]


class PromptError(ValueError):
    pass


def _ids(values: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([values], dtype=like.dtype, device=like.device)


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
    cfg = model.config
    tcfg = cfg.talker
    talker = model.talker
    T = talker.embed_text
    C = talker.codec_embedding
    if not input_ids:
        raise PromptError("input_ids is empty")
    if languages is None or len(languages) != len(input_ids):
        raise PromptError(f"languages must give one language per input ({len(input_ids)}), got {languages!r}")
    if speakers is None:
        speakers = [None] * len(input_ids)
    device = model.device

    per_sample: list[list[torch.Tensor]] = [[] for _ in input_ids]
    spk_embeds = None
    if voice_clone_prompt is not None:
        spk_embeds = [e.to(device).to(model.dtype) for e in voice_clone_prompt["ref_spk_embedding"]]
    if instruct_ids is not None:
        for i, ins in enumerate(instruct_ids):
            if ins is not None:
                per_sample[i].append(T(ins))

    trailing: list[torch.Tensor] = []
    tts_pad_embed = None
    for i, (ids, language, speaker) in enumerate(zip(input_ids, languages, speakers)):
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise PromptError(f"input_ids[{i}] must have shape [1, L], got {tuple(ids.shape)}")
        if ids.shape[1] < 9:
            raise PromptError(
                f"input_ids[{i}] has {ids.shape[1]} tokens; the assistant template alone has 8 "
                "(<|im_start|>assistant\\n ... <|im_end|>\\n<|im_start|>assistant\\n)"
            )
        if spk_embeds is None:
            if speaker is None or speaker == "":
                speaker_embed = None
            else:
                if speaker.lower() not in tcfg.spk_id:
                    raise PromptError(f"speaker {speaker!r} is not supported; known: {sorted(tcfg.spk_id)}")
                speaker_embed = C(torch.tensor(tcfg.spk_id[speaker.lower()], dtype=ids.dtype, device=device))
        else:
            vcp = voice_clone_prompt
            speaker_embed = spk_embeds[i] if (vcp["x_vector_only_mode"][i] or vcp["icl_mode"][i]) else None

        if language is None:
            raise PromptError(f"languages[{i}] is None")
        if language.lower() == "auto":
            language_id = None
        else:
            if language.lower() not in tcfg.codec_language_id:
                raise PromptError(f"language {language!r} is not supported; known: {sorted(tcfg.codec_language_id)}")
            language_id = tcfg.codec_language_id[language.lower()]
        # A dialect speaker overrides the language when it is Chinese or unspecified.
        if language.lower() in ("chinese", "auto") and speaker not in (None, "") \
                and tcfg.spk_is_dialect.get(speaker.lower(), False) is not False:
            language_id = tcfg.codec_language_id[tcfg.spk_is_dialect[speaker.lower()]]

        tts_bos_embed, tts_eos_embed, tts_pad_embed = T(
            _ids([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id], ids)
        ).chunk(3, dim=1)

        if language_id is None:
            tags = [tcfg.codec_nothink_id, tcfg.codec_think_bos_id, tcfg.codec_think_eos_id]
        else:
            tags = [tcfg.codec_think_id, tcfg.codec_think_bos_id, language_id, tcfg.codec_think_eos_id]
        codec_tags = C(_ids(tags, ids))
        codec_tail = C(_ids([tcfg.codec_pad_id, tcfg.codec_bos_id], ids))
        parts = [codec_tags] + ([speaker_embed.view(1, 1, -1)] if speaker_embed is not None else []) + [codec_tail]
        codec_prefix = torch.cat(parts, dim=1)

        role = T(ids[:, :3])
        body = torch.cat((tts_pad_embed.expand(-1, codec_prefix.shape[1] - 2, -1), tts_bos_embed), dim=1) \
            + codec_prefix[:, :-1]
        sample = torch.cat((role, body), dim=1)

        icl = voice_clone_prompt is not None and voice_clone_prompt.get("ref_code") is not None \
            and voice_clone_prompt["icl_mode"][i]
        if icl:
            if ref_ids is None or ref_ids[i] is None:
                raise PromptError(f"voice clone item {i} is in ICL mode but has no reference text ids")
            ref_code = voice_clone_prompt["ref_code"][i]
            if ref_code is None:
                raise PromptError(f"voice clone item {i} is in ICL mode but has no reference codes")
            icl_embed, trailing_text = _icl_prompt(
                model, ids[:, 3:-5], ref_ids[i][:, 3:-2], ref_code.to(device), tts_pad_embed, tts_eos_embed,
                non_streaming_mode,
            )
            sample = torch.cat([sample, icl_embed], dim=1)
        else:
            sample = torch.cat([sample, T(ids[:, 3:4]) + codec_prefix[:, -1:]], dim=1)
            if non_streaming_mode:
                sample = sample[:, :-1]
                n_text = ids[:, 3:-5].shape[1]
                text_part = torch.cat((T(ids[:, 3:-5]), tts_eos_embed), dim=1) \
                    + C(_ids([tcfg.codec_pad_id] * (n_text + 1), ids))
                sample = torch.cat([sample, text_part, tts_pad_embed + C(_ids([tcfg.codec_bos_id], ids))], dim=1)
                trailing_text = tts_pad_embed
            else:
                trailing_text = torch.cat((T(ids[:, 4:-5]), tts_eos_embed), dim=1)
        per_sample[i].append(sample)
        trailing.append(trailing_text)

    sequences = [torch.cat(parts, dim=1)[0] for parts in per_sample]
    lengths = [s.shape[0] for s in sequences]
    max_len = max(lengths)
    hidden = sequences[0].shape[-1]
    embeds = sequences[0].new_zeros(len(sequences), max_len, hidden)
    mask = torch.zeros(len(sequences), max_len, dtype=torch.long, device=device)
    for i, s in enumerate(sequences):
        embeds[i, max_len - s.shape[0]:] = s
        mask[i, max_len - s.shape[0]:] = 1

    pad_vector = tts_pad_embed.squeeze()
    t_lengths = [t.shape[1] for t in trailing]
    trailing_padded = pad_vector.expand(len(trailing), max(t_lengths), hidden).clone()
    for i, t in enumerate(trailing):
        trailing_padded[i, : t.shape[1]] = t[0]
    return TalkerPrompt(embeds, mask, trailing_padded, tts_pad_embed)


def _icl_prompt(model, text_id, ref_id, ref_code, tts_pad_embed, tts_eos_embed, non_streaming_mode):
    """In-context cloning: reference + target text over the reference codes."""
    tcfg = model.config.talker
    talker, cp = model.talker, model.code_predictor
    C = talker.codec_embedding
    text_embed = talker.embed_text(torch.cat([ref_id, text_id], dim=-1))
    text_embed = torch.cat([text_embed, tts_eos_embed], dim=1)
    groups = [C(ref_code[:, :1])] + [cp.embed(g, ref_code[:, g : g + 1]) for g in range(1, tcfg.num_code_groups)]
    codec_embed = torch.cat(groups, dim=1).sum(1).unsqueeze(0)
    codec_embed = torch.cat([C(_ids([tcfg.codec_bos_id], text_id)), codec_embed], dim=1)
    text_len, codec_len = text_embed.shape[1], codec_embed.shape[1]
    if non_streaming_mode:
        embed = text_embed + C(_ids([tcfg.codec_pad_id] * text_len, text_id))
        return torch.cat([embed, codec_embed + tts_pad_embed], dim=1), tts_pad_embed
    if text_len > codec_len:
        return text_embed[:, :codec_len] + codec_embed, text_embed[:, codec_len:]
    text_embed = torch.cat([text_embed] + [tts_pad_embed] * (codec_len - text_len), dim=1)
    return text_embed + codec_embed, tts_pad_embed
