"""The decode loop: talker prefill, then per frame 15 code-predictor steps and one talker step.

Upstream runs this as two nested transformers `generate()` calls with dynamic caches. Here it is
one loop over preallocated static caches; every tensor op that shapes the numbers (call shapes,
the embedding sum, the order of sampling draws) mirrors upstream, so the same torch RNG state
yields the same codes:

    prefill talker -> sample g0 (1 draw [B, V_talker])
    per frame:  code predictor prefill [h, C(g0)] -> group 1 (1 draw [B, V_cp]),
                14 single steps -> groups 2..15 (1 draw each),
                talker step on sum of the 16 code embeddings + next trailing text -> next g0 (1 draw)

Quirks kept on purpose: the repetition penalty sees only the generated group-0 ids; EOS is
blocked for the first ``min_new_tokens`` (2) ids; the top 1024 ids except EOS are suppressed;
the group-0 id sampled last never gets residual codes (at most max_new_tokens - 1 frames);
finished rows keep running (their g0 is EOS) so batch RNG consumption matches.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from .layers import mrope_positions, padding_mask
from .prompt import TalkerPrompt
from .sampling import SamplingParams, sample_next_token


@dataclass(frozen=True)
class GenerationParams:
    """What the decode loop needs; built from GenerateOptions."""

    max_new_tokens: int
    talker: SamplingParams
    subtalker: SamplingParams
    eos_token_id: int | None = None  # None: the config's codec EOS
    min_new_tokens: int = 2  # upstream fixes it at 2 (EOS is blocked for the first two group-0 ids)


@dataclass(frozen=True)
class GenerateOptions:
    """Upstream's generate() sampling keywords and their defaults: the one place they live.

    ``Qwen3TTS.generate`` uses these defaults, as upstream's model-level generate does. The voice
    methods, like upstream's wrapper, take each value from the caller, else from the checkpoint's
    generation_config.json, else from here with the wrapper's shorter cap (``voice_method_options``).
    """

    max_new_tokens: int = 4096
    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 0.9
    subtalker_dosample: bool = True
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    subtalker_temperature: float = 0.9
    repetition_penalty: float = 1.05
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        """Every value checked by name, so a bad one is one error naming the argument (the same
        ranges transformers' logits processors accept)."""
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        for prefix, sample in (("", "do_sample"), ("subtalker_", "subtalker_dosample")):
            if not isinstance(getattr(self, sample), bool):
                raise TypeError(f"{sample} must be True or False, got {getattr(self, sample)!r}")
            if getattr(self, f"{prefix}top_k") is not None:
                _check_int(f"{prefix}top_k", getattr(self, f"{prefix}top_k"), minimum=0)
            top_p = _check_number(f"{prefix}top_p", getattr(self, f"{prefix}top_p"))
            if top_p is not None and not 0.0 <= top_p <= 1.0:
                raise ValueError(f"{prefix}top_p must be in [0, 1], got {top_p!r}")
            temperature = _check_number(f"{prefix}temperature", getattr(self, f"{prefix}temperature"))
            if getattr(self, sample) and temperature is not None and not temperature > 0:
                raise ValueError(f"{prefix}temperature must be > 0 when sampling ({sample}=True), got {temperature!r}")
        penalty = _check_number("repetition_penalty", self.repetition_penalty)
        if penalty is None or not penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty!r}")
        if self.eos_token_id is not None:
            _check_int("eos_token_id", self.eos_token_id, minimum=0)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> GenerateOptions:
        unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"generate: unknown keyword argument(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**kwargs)

    def to_params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            talker=SamplingParams(
                do_sample=self.do_sample,
                top_k=self.top_k,
                top_p=self.top_p,
                temperature=self.temperature,
                repetition_penalty=self.repetition_penalty,
            ),
            subtalker=SamplingParams(
                do_sample=self.subtalker_dosample,
                top_k=self.subtalker_top_k,
                top_p=self.subtalker_top_p,
                temperature=self.subtalker_temperature,
            ),
            eos_token_id=self.eos_token_id,
        )


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


FP32_MAX = float(torch.finfo(torch.float32).max)


def _check_number(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    # The sampler divides fp32 scores by these: a double beyond fp32's range (3.4028235677973366e38
    # rounds to inf) turned -inf scores into NaN and crashed torch.multinomial.
    if abs(value) > FP32_MAX:
        raise ValueError(
            f"{name} must be finite in float32, the dtype sampling runs in (at most {FP32_MAX:g}), got {value!r}"
        )
    return float(value)


# Upstream's wrapper caps generation at 2048 frames when generation_config.json names no cap.
VOICE_METHOD_MAX_NEW_TOKENS = 2048


def voice_method_options(generation_config: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The sampling keywords a voice method passes to generate: the caller's value, else the
    checkpoint's generation_config.json, else upstream's wrapper fallback. Other keywords pass
    through unchanged."""
    fallback = dataclasses.replace(GenerateOptions(), max_new_tokens=VOICE_METHOD_MAX_NEW_TOKENS)
    merged = dict(kwargs)
    for name in GenerateOptions.__dataclass_fields__:
        if name == "eos_token_id":
            continue  # not part of upstream's wrapper defaults: None means the config's EOS
        if merged.get(name) is None:
            merged[name] = generation_config.get(name, getattr(fallback, name))
    return merged


def suppress_mask_for(vocab_size: int, eos_token_id: int, device) -> torch.Tensor:
    """Upstream suppresses the top 1024 ids (the special-token block) except the codec EOS."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[max(0, vocab_size - 1024) :] = True
    mask[eos_token_id] = False
    return mask


@torch.inference_mode()
def generate_codes(model, prompt: TalkerPrompt, params: GenerationParams, progress: bool = False, engine=None):
    """Run the talker + code predictor loop. Returns (codes per row [frames, G], hidden per row
    [frames, H]), cut at the first EOS like upstream. ``engine``: see iter_frames."""
    tcfg = model.config.talker
    frames: list[torch.Tensor] = []
    hiddens: list[torch.Tensor] = []
    for frame, hidden in iter_frames(model, prompt, params, progress=progress, engine=engine):
        frames.append(frame)
        hiddens.append(hidden)
    bsz, device = prompt.inputs_embeds.shape[0], prompt.inputs_embeds.device
    if not frames:
        empty_codes = torch.empty(0, tcfg.num_code_groups, dtype=torch.long, device=device)
        empty_hidden = prompt.inputs_embeds.new_empty(0, tcfg.transformer.hidden_size)
        return [empty_codes for _ in range(bsz)], [empty_hidden for _ in range(bsz)]
    codes_all = torch.stack(frames, dim=1)  # [B, F, G]
    hidden_all = torch.cat(hiddens, dim=1)  # the hidden that produced each frame's g0
    # Upstream cuts at the config's EOS, not at an overriding eos_token_id (which only stops the loop).
    is_eos = codes_all[:, :, 0] == tcfg.codec_eos_token_id
    lengths = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),
        torch.full_like(is_eos[:, 0], codes_all.shape[1], dtype=torch.long),
    )
    return (
        [codes_all[i, : int(n)] for i, n in enumerate(lengths)],
        [hidden_all[i, : int(n)] for i, n in enumerate(lengths)],
    )


@torch.inference_mode()
def iter_frames(model, prompt: TalkerPrompt, params: GenerationParams, progress: bool = False, engine=None):
    """The decode loop as a generator: yields, per frame, (codes [B, G], hidden [B, 1, H]), the
    hidden being the talker state that produced the frame's group-0 id. Rows are not cut here: a
    row's frames end at its first config-EOS group-0 id (``generate_codes`` cuts them).

    Closing the generator stops the loop before the next code-predictor call; the caches are
    locals of this frame, so they are released with it.

    ``engine`` (fast.FastEngine) replaces the talker's prompt prefill and per-frame step and the
    code-predictor frame with compiled ones; everything else (prompt building, sampling, RNG order,
    EOS handling) is this loop."""
    tcfg = model.config.talker
    talker, cp = model.talker, model.code_predictor
    talker_step = talker.step if engine is None else engine.talker_step
    generate_frame = cp.generate_frame if engine is None else engine.generate_frame
    groups = tcfg.num_code_groups
    eos = params.eos_token_id if params.eos_token_id is not None else tcfg.codec_eos_token_id
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    x, mask, trailing, tts_pad = prompt.inputs_embeds, prompt.attention_mask, prompt.trailing_text, prompt.tts_pad_embed
    bsz, prompt_len, _ = x.shape
    device, dtype = x.device, x.dtype
    talker_params = SamplingParams(
        **{**params.talker.__dict__, "min_new_tokens": params.min_new_tokens, "eos_token_id": eos}
    )
    # Upstream builds the suppression list from the config's EOS, even when eos_token_id is overridden.
    suppress = suppress_mask_for(tcfg.vocab_size, tcfg.codec_eos_token_id, device)

    # Buffers start at most INITIAL_FRAMES long and grow as frames come (KVCache.grow, _grown), so a
    # huge max_new_tokens ("until EOS", as upstream's dynamic cache allows) costs nothing up front.
    capacity = min(params.max_new_tokens, INITIAL_FRAMES)
    cache_len = prompt_len + capacity if engine is None else engine.talker_cache_len(prompt_len + capacity)
    tcache = talker.decoder.new_cache(tcfg.transformer, bsz, cache_len, dtype, device)
    ccache = cp.decoder.new_cache(tcfg.code_predictor.transformer, bsz, groups, dtype, device)
    padded = not bool(mask.all())
    full_mask = torch.ones(bsz, prompt_len + capacity, dtype=torch.long, device=device)
    full_mask[:, :prompt_len] = mask
    n_pads = (mask == 0).sum(dim=1)  # decode positions continue from the real (unpadded) length

    # --- prefill -----------------------------------------------------------------------------
    prompt_args = (x, mrope_positions(mask), padding_mask(mask) if padded else None, tcache)
    hidden, logits = talker.step(*prompt_args, 0) if engine is None else engine.talker_prefill(*prompt_args)
    past_hidden = hidden[:, -1:]
    # Group-0 ids so far (the repetition penalty's history), preallocated; a view is passed per step.
    history = torch.empty(bsz, capacity, dtype=torch.long, device=device)
    g0 = sample_next_token(logits[:, -1], history[:, :0], talker_params, suppress)
    history[:, 0] = g0
    n_ids = 1
    unfinished = g0 != eos

    bar = _progress(params.max_new_tokens, progress)
    cur = prompt_len
    step = 0
    try:
        while bool(unfinished.any()) and n_ids < params.max_new_tokens:
            e0 = talker.codec_embedding(g0[:, None])
            codes = generate_frame(past_hidden, e0, ccache, params.subtalker)
            yield torch.cat([g0[:, None], codes], dim=1), past_hidden
            step_embeds = [e0] + [cp.embed(k + 1, codes[:, k : k + 1]) for k in range(groups - 1)]
            x = torch.cat(step_embeds, dim=1).sum(1, keepdim=True)
            x = x + (trailing[:, step].unsqueeze(1) if step < trailing.shape[1] else tts_pad)
            positions = (torch.full((bsz, 1), cur, device=device) - n_pads[:, None]).float()
            if padded and cur + 1 > full_mask.shape[1]:
                full_mask = _grown(full_mask, cur + 1, fill=1)
            step_mask = padding_mask_decode(full_mask[:, : cur + 1]) if padded else None
            hidden, logits = talker_step(x, positions.unsqueeze(0).expand(3, -1, -1), step_mask, tcache, cur)
            past_hidden = hidden[:, -1:]
            cur += 1
            step += 1
            nxt = sample_next_token(logits[:, -1], history[:, :n_ids], talker_params, suppress)
            g0 = torch.where(unfinished, nxt, torch.full_like(nxt, eos))
            if n_ids == history.shape[1]:
                history = _grown(history, n_ids + 1)
            history[:, n_ids] = g0
            n_ids += 1
            unfinished = unfinished & (g0 != eos)
            bar.update(1)
    finally:
        bar.close()


INITIAL_FRAMES = 1024


def _grown(t: torch.Tensor, needed: int, fill: int | None = None) -> torch.Tensor:
    """``t`` [B, n] copied into a buffer of at least ``needed`` (and twice n) columns."""
    out = (
        t.new_empty(t.shape[0], max(needed, 2 * t.shape[1]))
        if fill is None
        else t.new_full((t.shape[0], max(needed, 2 * t.shape[1])), fill)
    )
    out[:, : t.shape[1]] = t
    return out


def padding_mask_decode(mask_so_far: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, kv_len] boolean: a single new query sees every real key."""
    return mask_so_far.bool()[:, None, None, :]


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is never worth a crash
        return _NoBar()
    return tqdm(total=total, unit="frame", desc="generating", leave=False)
