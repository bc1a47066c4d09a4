"""The standalone model teacher-forced on another engine's codes.

The qwentts.cpp binding dumps the logits of its prompt prefill only, so its code predictor and
every frame after the first can be judged only through the codes it chose. Free-running codes
cannot be compared past their first difference (each side then continues its own history), so the
standalone model is fed the engine's codes instead: at every position (frame, group) it sees the
engine's history and says what it would pick there. An engine code that differs from that pick is
either a near-tie (its logit is within the measured engine-vs-standalone distance of the top one)
or a bug; verify/engines/judge.py decides which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from q3tts.standalone.generation import GenerateOptions, suppress_mask_for
from q3tts.standalone.layers import mrope_positions
from q3tts.standalone.sampling import SamplingParams, constrain_logits


@dataclass
class ForcedLogits:
    """The standalone model's logits on the engine's history, as its greedy loop would see them.

    ``group0`` [P, V]: group-0 logits per frame, with the loop's constraints applied (EOS blocked
    for the first min_new_tokens ids, the special ids suppressed), P = frames, plus one when the
    engine stopped early (its decision there was EOS). ``residual`` [F, G-1, Vcp]: code-predictor
    logits of groups 1..G-1 per engine frame. ``eos``: the codec EOS id. ``hidden_step1`` [H]:
    the talker state after the engine's frame 0 was fed back (qwentts.cpp dumps its own as
    talker-hidden-step1), None without frames."""

    group0: torch.Tensor
    residual: torch.Tensor
    eos: int
    hidden_step1: torch.Tensor | None = None


def greedy_talker_params(model, max_new_tokens: int) -> tuple[SamplingParams, torch.Tensor]:
    """The group-0 sampling parameters and suppression mask of a greedy run (repetition penalty
    1.0), built as generation.iter_frames builds them."""
    tcfg = model.config.talker
    opts = dict(do_sample=False, subtalker_dosample=False, repetition_penalty=1.0, max_new_tokens=max_new_tokens)
    params = GenerateOptions.from_kwargs(opts).to_params()
    eos = tcfg.codec_eos_token_id
    talker = SamplingParams(**{**params.talker.__dict__, "min_new_tokens": params.min_new_tokens, "eos_token_id": eos})
    return talker, suppress_mask_for(tcfg.vocab_size, eos, model.device)


def check_code_range(model, codes: np.ndarray) -> str | None:
    """Why ``codes`` [F, G] cannot be fed to the model (wrong group count, an id outside its
    codebook), or None."""
    tcfg = model.config.talker
    if codes.ndim != 2 or codes.shape[1] != tcfg.num_code_groups:
        return f"engine codes have shape {codes.shape}, expected [frames, {tcfg.num_code_groups}]"
    limits = [tcfg.vocab_size] + [tcfg.code_predictor.vocab_size] * (tcfg.num_code_groups - 1)
    for g, limit in enumerate(limits):
        bad = np.flatnonzero((codes[:, g] < 0) | (codes[:, g] >= limit))
        if bad.size:
            return f"engine code {int(codes[bad[0], g])} at frame {int(bad[0])}, group {g} is outside [0, {limit})"
    return None


@torch.inference_mode()
def forced_logits(model, prompt, codes: np.ndarray, max_new_tokens: int) -> ForcedLogits:
    """Teacher-force the standalone model (fp32, eager) with the engine's codes [F, G] on
    ``prompt`` (a prompt.TalkerPrompt of one item). Mirrors generation.iter_frames step for step:
    prefill, then per frame the code predictor on the talker state and the frame's group-0 code,
    and the talker step on the summed embeddings of the frame plus the trailing text (or pad)."""
    talker, cp = model.talker, model.code_predictor
    tcfg = model.config.talker
    params, suppress = greedy_talker_params(model, max_new_tokens)
    x, trailing = prompt.inputs_embeds, prompt.trailing_text
    length, frames = x.shape[1], codes.shape[0]
    cache = talker.decoder.new_cache(tcfg.transformer, 1, length + frames + 1, x.dtype, x.device)
    hidden, logits = talker.step(x, mrope_positions(prompt.attention_mask), None, cache, 0)
    forced = torch.as_tensor(codes, dtype=torch.long, device=x.device)
    # The engine stopping before its cap means it picked EOS there: that decision is judged too.
    positions = frames + 1 if frames < max_new_tokens else frames
    group0, residual, step1 = [], [], None
    for f in range(positions):
        group0.append(constrain_logits(logits[:, -1], forced[None, :f, 0], params, suppress)[0])
        if f == frames:
            break
        frame = forced[f : f + 1]
        residual.append(cp.teacher_forced_logits(hidden[:, -1], frame, talker.codec_embedding)[0].float())
        embeds = [talker.codec_embedding(frame[:, :1])]
        embeds += [cp.embed(k, frame[:, k : k + 1]) for k in range(1, frame.shape[1])]
        step_x = torch.cat(embeds, dim=1).sum(1, keepdim=True)
        step_x = step_x + (trailing[:, f].unsqueeze(1) if f < trailing.shape[1] else prompt.tts_pad_embed)
        cur = length + f
        hidden, logits = talker.step(step_x, torch.full((3, 1, 1), float(cur), device=x.device), None, cache, cur)
        step1 = hidden[0, -1] if f == 0 else step1
    empty = torch.zeros(0, tcfg.num_code_groups - 1, tcfg.code_predictor.vocab_size)
    residual_t = torch.stack(residual) if residual else empty
    return ForcedLogits(torch.stack(group0), residual_t, tcfg.codec_eos_token_id, step1)


def force_codes(model, prompt, codes: np.ndarray, max_new_tokens: int) -> tuple[ForcedLogits | None, str | None]:
    """(forced_logits of ``codes``, None), or (None, why they cannot be forced: a code out of range),
    or (None, None) when there are no codes."""
    if codes.size == 0:
        return None, None
    bad = check_code_range(model, codes)
    if bad:
        return None, bad
    return forced_logits(model, prompt, codes, max_new_tokens), None


@dataclass
class Position:
    """One judged position: the engine's code, the standalone's pick on the same history, and the
    standalone's logit margin between the two (0 when they agree; inf when the engine's code is one
    the loop forbids there)."""

    frame: int
    group: int
    engine: int
    standalone: int
    margin: float


def disagreements(forced: ForcedLogits, codes: np.ndarray) -> tuple[int, list[Position]]:
    """(positions judged, the positions where the engine's code is not the standalone's pick)."""
    out: list[Position] = []
    frames = codes.shape[0]
    n = 0
    for f in range(forced.group0.shape[0]):
        engine = int(codes[f, 0]) if f < frames else forced.eos
        n += 1
        _judge(forced.group0[f], f, 0, engine, out)
    for f in range(forced.residual.shape[0]):
        for k in range(forced.residual.shape[1]):
            n += 1
            _judge(forced.residual[f, k], f, k + 1, int(codes[f, k + 1]), out)
    return n, out


def _judge(logits: torch.Tensor, frame: int, group: int, engine: int, out: list[Position]) -> None:
    pick = int(logits.argmax())
    if pick != engine:
        margin = float(logits[pick] - logits[engine])
        out.append(Position(frame, group, engine, pick, margin if np.isfinite(margin) else float("inf")))
