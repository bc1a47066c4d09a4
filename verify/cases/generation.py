"""Generation parity: upstream's `generate` and the standalone one on identical inputs and RNG.

Each case builds the keyword arguments of `Qwen3TTSForConditionalGeneration.generate` (token ids
from upstream's own processor, speaker embeddings from each side's own speaker encoder), runs
both sides from the same torch seed, and compares the codes frame by frame.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from q3tts.verify.cases.forward import speech_like_waveform
from q3tts.verify.compare import first_divergence


@dataclass
class CodesComparison:
    case: str
    mode: str  # greedy | sampled
    dtype: str
    identical: bool
    frames_upstream: list[int]
    frames_standalone: list[int]
    first_divergence: tuple[int, int, int] | None  # (batch item, frame, group)
    hidden_max_abs: float
    seconds_upstream: float
    seconds_standalone: float
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Case:
    name: str
    model_types: tuple[str, ...]
    build: Callable[[CaseContext], dict[str, Any]]
    description: str = ""


@dataclass
class CaseContext:
    """What a case needs to build its inputs: upstream's tokenizer and both speaker encoders."""

    wrapper: Any  # upstream Qwen3TTSModel (processor + model)
    standalone: Any
    seed: int
    _cache: dict = field(default_factory=dict)

    def ids(self, text: str, kind: str = "assistant") -> torch.Tensor:
        w = self.wrapper
        template = {"assistant": w._build_assistant_text, "ref": w._build_ref_text, "instruct": w._build_instruct_text}[
            kind
        ]
        return w._tokenize_texts([template(text)])[0]

    @property
    def upstream_talker(self):
        """Upstream's talker config: where every case input comes from (never the model under test,
        whose wrong config would otherwise pick its own inputs)."""
        return self.wrapper.model.config.talker_config

    def speaker(self, role: str) -> str:
        """A speaker of the checkpoint by role: 'plain0', 'plain1' (no dialect), 'dialect'."""
        t = self.upstream_talker
        spk_id, is_dialect = t.spk_id or {}, t.spk_is_dialect or {}
        plain = sorted(s for s in spk_id if is_dialect.get(s, False) is False)
        dialect = sorted(s for s in spk_id if is_dialect.get(s, False) is not False)
        if role == "dialect":
            return (dialect or plain)[0]
        return plain[int(role[-1]) % len(plain)]

    def ref_codes(self, frames: int) -> torch.Tensor:
        t = self.upstream_talker
        g = torch.Generator().manual_seed(self.seed + frames)
        return torch.randint(0, t.code_predictor_config.vocab_size, (frames, t.num_code_groups), generator=g)

    def clone_prompt(self, icl: list[bool], ref_frames: list[int]) -> tuple[dict, dict]:
        """Voice-clone prompt dicts for (upstream, standalone): each side's own x-vector of the
        same waveform, shared reference codes."""
        wav = speech_like_waveform(self.seed)
        up_emb = self.wrapper.model.extract_speaker_embedding(wav, 24000)
        st_emb = self.standalone.extract_speaker_embedding(wav, 24000)
        codes = [self.ref_codes(n) if flag else None for flag, n in zip(icl, ref_frames)]
        common = dict(ref_code=codes, x_vector_only_mode=[not f for f in icl], icl_mode=list(icl))
        return {**common, "ref_spk_embedding": [up_emb] * len(icl)}, {
            **common,
            "ref_spk_embedding": [st_emb] * len(icl),
        }


TEXTS = ("Hello world, this is a test.", "Speak slowly 123!", "The quick brown fox jumps over the lazy dog again.")


def _plain(ctx, non_streaming):
    return dict(input_ids=[ctx.ids(TEXTS[0])], languages=["auto"], non_streaming_mode=non_streaming)


def _custom(speaker, language, non_streaming=True, instruct=None):
    def build(ctx):
        return dict(
            input_ids=[ctx.ids(TEXTS[0])],
            languages=[language],
            speakers=[ctx.speaker(speaker)],
            instruct_ids=[ctx.ids(instruct, "instruct") if instruct else None],
            non_streaming_mode=non_streaming,
        )

    return build


def _design(instruct, non_streaming=True, language="auto"):
    def build(ctx):
        return dict(
            input_ids=[ctx.ids(TEXTS[1])],
            languages=[language],
            instruct_ids=[ctx.ids(instruct, "instruct") if instruct else None],
            non_streaming_mode=non_streaming,
        )

    return build


def _clone(icl, non_streaming, ref_frames=4, ref_text="Hello there."):
    def build(ctx):
        up, st = ctx.clone_prompt([icl], [ref_frames])
        return dict(
            input_ids=[ctx.ids(TEXTS[0])],
            languages=["english"],
            non_streaming_mode=non_streaming,
            ref_ids=[ctx.ids(ref_text, "ref")],
            voice_clone_prompt=(up, st),
        )

    return build


def _batch_custom(ctx):
    return dict(
        input_ids=[ctx.ids(t) for t in TEXTS],
        languages=["english", "auto", "chinese"],
        speakers=[ctx.speaker("plain0"), ctx.speaker("dialect"), ctx.speaker("plain1")],
        instruct_ids=[None, ctx.ids("Whisper.", "instruct"), None],
        non_streaming_mode=False,
    )


def _batch_design(ctx):
    return dict(
        input_ids=[ctx.ids(t) for t in TEXTS],
        languages=["auto", "english", "german"],
        instruct_ids=[ctx.ids("A deep calm voice.", "instruct"), None, ctx.ids("Fast and bright.", "instruct")],
        non_streaming_mode=True,
    )


def _batch_clone(ctx):
    up, st = ctx.clone_prompt([True, False, True], [3, 0, 14])
    return dict(
        input_ids=[ctx.ids(t) for t in TEXTS],
        languages=["english", "auto", "chinese"],
        ref_ids=[ctx.ids("Hi."), None, ctx.ids("A longer reference sentence here.")],
        voice_clone_prompt=(up, st),
        non_streaming_mode=False,
    )


_UPSTREAM_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _upstream_once(ctx, key, compute):
    """An upstream-only value a case needs (deterministic per loaded model), computed once."""
    memo = _UPSTREAM_MEMO.setdefault(ctx.wrapper.model, {})
    key = (ctx.seed,) + key
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _eos_first_step(ctx):
    """EOS moved to the code greedy decoding picks first: only min_new_tokens keeps the run going,
    so the case fails if EOS is not blocked for the first two steps."""
    base = _plain(ctx, False)

    def first_code():
        codes, _ = ctx.wrapper.model.generate(**base, do_sample=False, subtalker_dosample=False, max_new_tokens=2)
        return int(codes[0][0, 0])

    return dict(base, eos_token_id=_upstream_once(ctx, ("eos.first_step",), first_code))


def _eos_at_draw(n: int):
    """EOS moved to the id upstream's greedy talker draws at draw ``n`` (0-based) when nothing
    stops it: with min_new_tokens 2, EOS is blocked at draws 0 and 1 and allowed from draw 2, so
    these cases end at once when min_new_tokens is one too small (n = 1) or runs one draw past
    it when it is one too large (n = 2)."""

    def build(ctx):
        base = _plain(ctx, False)
        cfg = ctx.wrapper.model.config.talker_config

        def greedy_code():
            never = cfg.vocab_size - 1  # a suppressed id: the run cannot stop
            codes, _ = ctx.wrapper.model.generate(
                **base, do_sample=False, subtalker_dosample=False, max_new_tokens=n + 2, eos_token_id=never
            )
            drawn = codes[0][:, 0]
            # The output is cut at the config's EOS: when it is shorter, draw n (or an earlier
            # one) was the config's EOS, which then is the case's EOS too.
            return int(drawn[n]) if drawn.shape[0] > n else cfg.codec_eos_token_id

        return dict(base, eos_token_id=_upstream_once(ctx, ("eos.draw", n), greedy_code))

    return build


CASES: tuple[Case, ...] = (
    Case(
        "eos.first_step",
        ("base", "custom_voice", "voice_design"),
        _eos_first_step,
        "eos_token_id = the first greedy code: min_new_tokens must hold it back",
    ),
    Case(
        "eos.second_draw",
        ("base", "custom_voice", "voice_design"),
        _eos_at_draw(1),
        "eos_token_id = the second greedy code: EOS must stay blocked at the second draw",
    ),
    Case(
        "eos.third_draw",
        ("base", "custom_voice", "voice_design"),
        _eos_at_draw(2),
        "eos_token_id = the third greedy code: EOS must be allowed from the third draw",
    ),
    Case(
        "plain.streaming",
        ("base", "custom_voice", "voice_design"),
        lambda c: _plain(c, False),
        "no speaker, language auto, streaming text",
    ),
    Case("plain.non_streaming", ("base", "custom_voice", "voice_design"), lambda c: _plain(c, True)),
    Case("custom_voice.english", ("custom_voice",), _custom("plain0", "english")),
    Case("custom_voice.streaming", ("custom_voice",), _custom("plain0", "english", non_streaming=False)),
    Case("custom_voice.dialect_auto", ("custom_voice",), _custom("dialect", "auto"), "dialect speaker, language auto"),
    Case("custom_voice.dialect_chinese", ("custom_voice",), _custom("dialect", "chinese")),
    Case("custom_voice.instruct", ("custom_voice",), _custom("plain1", "german", instruct="Sound happy.")),
    Case("voice_design.instruct", ("voice_design",), _design("A warm low voice, speaking slowly.")),
    Case("voice_design.streaming", ("voice_design",), _design("Bright.", non_streaming=False, language="english")),
    Case("voice_design.no_instruct", ("voice_design",), _design(None)),
    Case("clone.xvector", ("base",), _clone(False, False)),
    Case("clone.icl.streaming", ("base",), _clone(True, False, ref_frames=4), "text longer than the reference codes"),
    Case(
        "clone.icl.streaming_long_ref",
        ("base",),
        _clone(True, False, ref_frames=24),
        "reference codes outlast the text",
    ),
    Case("clone.icl.non_streaming", ("base",), _clone(True, True)),
    Case("batch.custom_voice", ("custom_voice",), _batch_custom, "left-padded batch of 3"),
    Case(
        "batch.eos_override",
        ("custom_voice",),
        lambda c: dict(_batch_custom(c), eos_token_id=c.upstream_talker.vocab_size - 1),
        "eos_token_id moved to a suppressed id: suppression still follows the config's EOS",
    ),
    Case("batch.voice_design", ("voice_design",), _batch_design, "left-padded batch of 3"),
    Case("batch.clone", ("base",), _batch_clone, "left-padded batch: ICL, x-vector, ICL with long reference"),
)


def cases_for(model_type: str) -> list[Case]:
    return [c for c in CASES if model_type in c.model_types]


SAMPLING = dict(
    do_sample=True,
    top_k=50,
    top_p=1.0,
    temperature=0.9,
    subtalker_dosample=True,
    subtalker_top_k=50,
    subtalker_top_p=1.0,
    subtalker_temperature=0.9,
    repetition_penalty=1.05,
)
SAMPLING_TOP_P = dict(SAMPLING, top_p=0.9, subtalker_top_p=0.9, top_k=0, temperature=2.0, subtalker_temperature=2.0)
GREEDY = dict(do_sample=False, subtalker_dosample=False)

# Sampler regimes (issue 19). The modes above use one parameter set for both samplers, a top-k
# larger than the fixtures' vocabularies and peaked heads, so several sampler bugs drew the same
# ids. In each mode below the talker and the code predictor get different values, and the knob
# the mode is named for decides which id a seeded draw picks on the tiny fixtures (measured by
# the knob-sensitivity table, verify/faults/sensitivity.py).
# torch.multinomial draws one id as argmax(p_i / E_i) over fresh exponentials E_i, so a filter
# changes a draw only when an id it removes (or adds) would have won: hot distributions cut to a
# few ids make the cut ids win often.
SPLIT_TOP_K = dict(
    do_sample=True,
    temperature=2.5,
    top_k=3,
    top_p=1.0,
    subtalker_dosample=True,
    subtalker_temperature=1.2,
    subtalker_top_k=2,
    subtalker_top_p=1.0,
    repetition_penalty=1.05,
)
SPLIT_DO_SAMPLE = dict(
    do_sample=True,
    temperature=2.0,
    top_k=0,
    top_p=0.6,
    subtalker_dosample=False,
    subtalker_temperature=1.7,
    subtalker_top_k=5,
    subtalker_top_p=0.8,
    repetition_penalty=1.3,
)
# top_p is set per case by calibrate_top_p_boundary (below); the code predictor's is fixed.
TOP_P_BOUNDARY = dict(
    do_sample=True,
    temperature=1.2,
    top_k=0,
    top_p=None,
    subtalker_dosample=True,
    subtalker_temperature=1.8,
    subtalker_top_k=0,
    subtalker_top_p=0.8,
    repetition_penalty=1.05,
)
# Hot and unfiltered, with a strong penalty: ids already generated whose logits are negative keep
# a real probability, so the s < 0 branch of the penalty (s * p) decides draws.
HOT_PENALTY = dict(
    do_sample=True,
    temperature=3.0,
    top_k=0,
    top_p=1.0,
    subtalker_dosample=True,
    subtalker_temperature=2.2,
    subtalker_top_k=0,
    subtalker_top_p=1.0,
    repetition_penalty=3.0,
)

MODES = {
    "greedy": GREEDY,
    "sampled": SAMPLING,
    "sampled_top_p": SAMPLING_TOP_P,
    "split_top_k": SPLIT_TOP_K,
    "split_do_sample": SPLIT_DO_SAMPLE,
    "top_p_boundary": TOP_P_BOUNDARY,
    "hot_penalty": HOT_PENALTY,
}
SAMPLER_MODES = ("split_top_k", "split_do_sample", "top_p_boundary", "hot_penalty")
MODE_KNOBS = {
    "greedy": "greedy talker and code predictor (argmax, EOS blocking, suppression, penalty)",
    "sampled": "the checkpoint defaults: temperature 0.9, top_k 50, penalty 1.05 (both samplers alike)",
    "sampled_top_p": "top_p 0.9 and temperature 2.0 on both samplers, no top_k",
    "split_top_k": "top_k 3 (talker) / 2 (code predictor), temperature 2.5 / 1.2",
    "split_do_sample": "talker sampling (temperature 2.0, top_p 0.6, penalty 1.3), code predictor greedy",
    "top_p_boundary": "talker top_p exactly on a cumulative-mass boundary of its first draw (<= vs <), "
    "temperature 1.2 / 1.8, code-predictor top_p 0.8",
    "hot_penalty": "temperature 3.0 / 2.2, no top_k/top_p, repetition penalty 3.0 (negative logits penalised)",
}


def _talker_first_logits(ctx: CaseContext, up_kwargs: dict) -> torch.Tensor:
    """Upstream's talker logits at the last prefill position [B, V] (its first draw), from a
    one-token greedy run with a hook on the codec head."""
    model = ctx.wrapper.model
    seen: list[torch.Tensor] = []
    hook = model.talker.codec_head.register_forward_hook(lambda _m, _i, out: seen.append(out[:, -1].detach()))
    try:
        model.generate(**up_kwargs, do_sample=False, subtalker_dosample=False, max_new_tokens=2)
    finally:
        hook.remove()
    return seen[0].float()


def calibrate_top_p_boundary(ctx: CaseContext, up_kwargs: dict, mode: dict) -> dict:
    """A talker top_p on an exact boundary of the first draw: 1 - top_p equals (in fp32) the
    cumulative mass of the lowest-probability ids up to one id j, so the rule "remove while mass
    <= 1 - top_p" removes j and "< 1 - top_p" keeps it. The boundary and the RNG seed
    (``rng_seed``, the first from the plan's seed on) are chosen so that the two rules make the
    first seeded draw pick different ids: a top-p comparison bug then changes the codes.
    Computed from upstream's logits only, with the processors of upstream.md 3.1 (min_new_tokens
    blocks EOS at the first draw; the top 1024 ids but the config's EOS are suppressed;
    temperature; top-k)."""
    cfg = ctx.wrapper.model.config.talker_config
    scores = _talker_first_logits(ctx, up_kwargs)[:1].clone()
    vocab = scores.shape[-1]
    eos = up_kwargs.get("eos_token_id")
    eos = cfg.codec_eos_token_id if eos is None else eos
    scores[:, eos] = -float("inf")
    suppressed = torch.zeros(vocab, dtype=torch.bool)
    suppressed[max(0, vocab - 1024) :] = True
    suppressed[cfg.codec_eos_token_id] = False
    scores = scores.masked_fill(suppressed, -float("inf"))
    if mode["temperature"] != 1.0:
        scores = scores / mode["temperature"]
    if mode["top_k"]:
        scores = scores.masked_fill(scores < torch.topk(scores, min(mode["top_k"], vocab))[0][..., -1:], -float("inf"))
    ascending, order = torch.sort(scores, descending=False)
    mass = ascending.softmax(dim=-1).cumsum(dim=-1)

    def draw(removed_sorted: torch.Tensor, seed: int) -> int:
        removed_sorted = removed_sorted.clone()
        removed_sorted[..., -1] = False
        probs = scores.masked_fill(removed_sorted.scatter(1, order, removed_sorted), -float("inf")).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)))

    boundaries = []
    for j in range(vocab - 2, -1, -1):
        c = float(mass[0, j])
        if not 0.0 < c < 1.0:
            break
        top_p = 1.0 - c
        le, lt = mass <= (1 - top_p), mass < (1 - top_p)
        if bool(le[0, j]) and not bool(lt[0, j]):  # an exact boundary once rounded to fp32
            boundaries.append((top_p, le, lt))
    if not boundaries:
        raise RuntimeError("top_p_boundary: no cumulative-mass boundary in the first talker draw")
    # The first seed from the plan's on whose first draw the two rules pick different ids.
    for seed in range(ctx.seed, ctx.seed + 64):
        for top_p, le, lt in boundaries:
            if draw(le, seed) != draw(lt, seed):
                return {"top_p": top_p, "rng_seed": seed}
    return {"top_p": boundaries[0][0], "rng_seed": ctx.seed}


CALIBRATED = {"top_p_boundary": calibrate_top_p_boundary}


def split_sides(kwargs: dict) -> tuple[dict, dict]:
    """(upstream kwargs, standalone kwargs) of a case: only the voice-clone prompt differs."""
    up, st = dict(kwargs), dict(kwargs)
    if "voice_clone_prompt" in kwargs:
        up["voice_clone_prompt"], st["voice_clone_prompt"] = kwargs["voice_clone_prompt"]
    return up, st


def mode_kwargs(mode: str, ctx: CaseContext, up_kwargs: dict) -> tuple[dict, int]:
    """(sampling keyword arguments, RNG seed) of ``mode`` for one case. Calibrated modes ask
    upstream, and may move the seed (``rng_seed``)."""
    kw = dict(MODES[mode])
    if mode in CALIBRATED:
        kw.update(CALIBRATED[mode](ctx, up_kwargs, kw))
    return kw, kw.pop("rng_seed", ctx.seed)


def diverging_sampler(group: int) -> str:
    return "talker (group 0)" if group == 0 else ("length / EOS" if group < 0 else f"code predictor (group {group})")


def run_case(case: Case, ctx: CaseContext, mode: str, dtype_name: str, max_new_tokens: int = 24) -> CodesComparison:
    up_kwargs, st_kwargs = split_sides(case.build(ctx))
    sampling, seed = mode_kwargs(mode, ctx, up_kwargs)
    common = dict(sampling, max_new_tokens=max_new_tokens)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    up_codes, up_hidden = ctx.wrapper.model.generate(**up_kwargs, **common)
    t1 = time.perf_counter()
    torch.manual_seed(seed)
    st_codes, st_hidden = ctx.standalone.generate(**st_kwargs, **common)
    t2 = time.perf_counter()
    div = first_divergence(up_codes, st_codes)
    hidden_diff = 0.0
    for a, b in zip(up_hidden, st_hidden):
        n = min(a.shape[0], b.shape[0])
        if n:
            hidden_diff = max(hidden_diff, float((a[:n].float() - b[:n].float()).abs().max()))
    return CodesComparison(
        case=case.name,
        mode=mode,
        dtype=dtype_name,
        identical=div is None,
        frames_upstream=[int(c.shape[0]) for c in up_codes],
        frames_standalone=[int(c.shape[0]) for c in st_codes],
        first_divergence=div,
        hidden_max_abs=hidden_diff,
        seconds_upstream=t1 - t0,
        seconds_standalone=t2 - t1,
    )


def format_codes_table(results: list[CodesComparison]) -> str:
    header = f"{'case':32} {'mode':13} {'dtype':5} {'frames':>12}  verdict"
    lines = [header, "-" * len(header)]
    for r in results:
        frames = ",".join(str(f) for f in r.frames_upstream)
        if r.identical:
            verdict = "IDENTICAL"
        else:
            item, frame, group = r.first_divergence
            verdict = f"DIFFER at item {item}, frame {frame}" + (f", group {group}" if group >= 0 else " (length)")
        lines.append(f"{r.case:32} {r.mode:13} {r.dtype:5} {frames:>12}  {verdict}")
    return "\n".join(lines)
