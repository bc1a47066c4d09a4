"""Upstream's fine-tuning batch, transcribed on the verifier's side: the upstream half of training
parity is laid out from this, never from the standalone ``collate`` it checks (a collate bug would
otherwise be on both sides and invisible).

The layout is QwenLM/Qwen3-TTS ``finetuning/dataset.py`` ``TTSDataset.collate_fn`` (unchanged since
the initial commit), written out row by row from its position table, with the ids read from
upstream's loaded config. Per item with N text tokens and T frames, L = N + T + 11 positions:

    0..2            the role tokens (im_start, "assistant", "\\n")      codec 0, not embedded
    3..5            tts_pad | codec nothink, think_bos, think_eos       embedded
    6               tts_pad | the speaker slot (0, not embedded)
    7               tts_bos | codec_pad
    8..7+N          text    | codec_pad
    8+N             tts_eos | codec_pad
    9+N             tts_pad | codec_bos
    10+N+k          tts_pad | frame k's group-0 code (all groups in codec_ids), label = the code
    10+N+T          tts_pad | codec_eos, label = codec_eos

Every real position has text embedding and attention; padding (right) has neither. dataset.py
fixes 16 groups; here the columns follow the model's group count (the same at 16).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

IGNORE = -100


def _rows(item, c, t) -> tuple[list[tuple[int, int, bool, int]], int]:
    """(text id, codec id, codec embedded, label) per position of one item, and p_0."""
    pad, codec_pad = c.tts_pad_token_id, t.codec_pad_id
    rows = [(int(x), 0, False, IGNORE) for x in item.text_ids[:3]]
    rows += [(pad, t.codec_nothink_id, True, IGNORE), (pad, t.codec_think_bos_id, True, IGNORE)]
    rows += [(pad, t.codec_think_eos_id, True, IGNORE), (pad, 0, False, IGNORE)]
    rows += [(c.tts_bos_token_id, codec_pad, True, IGNORE)]
    rows += [(int(x), codec_pad, True, IGNORE) for x in item.text_ids[3:]]
    rows += [(c.tts_eos_token_id, codec_pad, True, IGNORE), (pad, t.codec_bos_id, True, IGNORE)]
    first = len(rows)
    rows += [(pad, int(code), True, int(code)) for code in item.codes[:, 0]]
    rows += [(pad, t.codec_eos_token_id, True, t.codec_eos_token_id)]
    return rows, first


def dataset_batch(items, upstream_config) -> SimpleNamespace:
    """The batch upstream's collate_fn gives for ``items`` (TrainingItem: text_ids = the three role
    tokens then the text; codes [T, G]), with the field names its training step reads."""
    c, t = upstream_config, upstream_config.talker_config
    laid_out = [_rows(item, c, t) for item in items]
    b, length, groups = len(items), max(len(rows) for rows, _ in laid_out), t.num_code_groups
    input_ids = torch.zeros(b, length, 2, dtype=torch.long)
    codec_ids = torch.zeros(b, length, groups, dtype=torch.long)
    text_mask = torch.zeros(b, length, 1, dtype=torch.bool)
    codec_emb_mask = torch.zeros(b, length, 1, dtype=torch.bool)
    codec_mask = torch.zeros(b, length, dtype=torch.bool)
    attention = torch.zeros(b, length, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    for i, (rows, first) in enumerate(laid_out):
        for p, (text_id, codec_id, embedded, label) in enumerate(rows):
            input_ids[i, p] = torch.tensor([text_id, codec_id])
            text_mask[i, p, 0], codec_emb_mask[i, p, 0], attention[i, p], labels[i, p] = True, embedded, 1, label
        frames = items[i].codes.shape[0]
        codec_ids[i, first : first + frames] = items[i].codes
        codec_mask[i, first : first + frames] = True
    return SimpleNamespace(
        input_ids=input_ids,
        codec_ids=codec_ids,
        text_embedding_mask=text_mask,
        codec_embedding_mask=codec_emb_mask,
        codec_mask=codec_mask,
        attention_mask=attention,
        codec_0_labels=labels,
    )
