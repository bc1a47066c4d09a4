"""Fidelity of the compiled fast path (standalone/fast.py) against upstream qwen-tts.

The fast path is not bit-identical (other GEMM kernels, fused projections, its own attention),
so instead of identity this module measures three distances:

1. forward cases, with max abs / max rel / cosine against upstream (tolerances FAST_TOLERANCES):
   - ``fast.talker_prefill[.padded].hidden/logits``: upstream's full forward against the compiled
     prompt prefill over the first L positions (the real ones when padded);
   - ``fast.talker_step[.padded].hidden/logits``: upstream's full forward over L+1 positions
     against that prefill plus one compiled step at position L;
   - ``fast.code_predictor.group{k}``: upstream's teacher-forced code-predictor logits against the
     compiled frame (2-position prefill + single steps) fed the same codes;
2. teacher-forced argmax agreement over every position of the single-item generation cases:
   upstream generates greedily; the fast path is fed upstream's codes and at each position its
   own constrained argmax of group 0 and of every residual group is compared with upstream's code
   (FAST_MIN_AGREEMENT);
3. generation agreement: upstream and the fast path generate from the same seed (greedy and
   sampled); reported as identical, or the first divergence and the fraction of identical frames.
   Reported, not judged: once one code differs, later frames legitimately differ.

Every engine is built by the caller on the model it measures: module attributes (eps, rope
theta, head counts) are traced into the graphs as constants, so a fault in one needs its own
engine (the fault self-test builds one per fault); the weights are graph inputs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from q3tts.standalone import generation
from q3tts.standalone import prompt as talker_prompt
from q3tts.standalone.fast import FastEngine
from q3tts.standalone.generation import GenerateOptions, suppress_mask_for
from q3tts.standalone.layers import mrope_positions, padding_mask
from q3tts.standalone.sampling import SamplingParams, constrain_logits
from q3tts.verify.cases.fast_stepwise import Stepwise, run_stepwise, upstream_logits
from q3tts.verify.cases.forward import ParityInputs, talker_probe_inputs
from q3tts.verify.cases.generation import MODES, CaseContext, cases_for, mode_kwargs, split_sides
from q3tts.verify.compare import (
    EXACT_FIRST_DRAW_MODES,
    FAST_MIN_AGREEMENT,  # noqa: F401 (tests read the plain modes' floor from here)
    FAST_TOLERANCES,
    Comparison,
    FastBounds,
    compare,
    fast_bounds,
    first_divergence,
)
from q3tts.verify.machine import cpu_model

PROMPT_KEYS = (
    "input_ids",
    "instruct_ids",
    "ref_ids",
    "voice_clone_prompt",
    "languages",
    "speakers",
    "non_streaming_mode",
)


# Faults patch runtime functions in their modules (verify/faults/catalogue.py): generation and prompt building
# are called through their modules so that a patched seam is the one measured.


# --- 1. forward cases ----------------------------------------------------------------------------
@torch.inference_mode()
def run_fast_forward_cases(
    upstream, standalone, engine: FastEngine, dtype: torch.dtype, seed: int = 0, tol=None
) -> list[Comparison]:
    """``tol``: the forward bound (default: the plain fast mode's in ``dtype``; compare.fast_bounds)."""
    tol = tol or FAST_TOLERANCES[dtype]
    inp = ParityInputs.make(standalone, seed)
    up_t, st_t = upstream.talker, standalone.talker
    results: list[Comparison] = []

    def talker_case(name: str, mask: torch.Tensor):
        up_x = up_t.text_projection(up_t.model.text_embedding(inp.text_ids)) + up_t.model.codec_embedding(inp.codec_ids)
        from q3tts.verify.compare import capture_outputs

        with capture_outputs([up_t.model.norm]) as cap:
            up_logits = up_t(inputs_embeds=up_x, attention_mask=mask, use_cache=False).logits
        up_hidden = cap[0][0]
        st_x = st_t.embed_text(inp.text_ids) + st_t.codec_embedding(inp.codec_ids)
        bsz, length, _ = st_x.shape
        last = length - 1
        padded = not bool(mask.all())
        cache = st_t.decoder.new_cache(
            standalone.config.talker.transformer, bsz, engine.talker_cache_len(length), st_x.dtype, st_x.device
        )
        prompt_mask = padding_mask(mask[:, :last]) if padded else None
        hidden, logits = engine.talker_prefill(st_x[:, :last], mrope_positions(mask[:, :last]), prompt_mask, cache)
        real = mask[:, :last].bool()  # padded positions are never read
        prefill = name.replace("talker_step", "talker_prefill")
        results.append(compare(f"{prefill}.hidden", up_hidden[:, :last][real], hidden[real], dtype, tol))
        results.append(compare(f"{prefill}.logits", up_logits[:, :last][real], logits[real], dtype, tol))
        step_mask = mask.bool()[:, None, None, :] if padded else None
        hidden, logits = engine.talker_step(st_x[:, last:], mrope_positions(mask)[..., last:], step_mask, cache, last)
        results.append(compare(f"{name}.hidden", up_hidden[:, last], hidden[:, 0], dtype, tol))
        results.append(compare(f"{name}.logits", up_logits[:, last], logits[:, 0], dtype, tol))

    bsz, length = inp.text_ids.shape
    talker_case("fast.talker_step", torch.ones(bsz, length, dtype=torch.long))
    mask = torch.ones(bsz, length, dtype=torch.long)
    for row, pad in enumerate(inp.pad_lengths):
        mask[row, :pad] = 0
    talker_case("fast.talker_step.padded", mask)

    results += fast_talker_probes(up_t, st_t, engine, dtype, seed, tol)

    h_up = up_t.text_projection(up_t.model.text_embedding(inp.text_ids[:, :1]))[:, 0]
    h_st = st_t.embed_text(inp.text_ids[:, :1])[:, 0]
    ref, _ = up_t.forward_sub_talker_finetune(inp.frame_codes, h_up)
    got = teacher_forced_frame(standalone, engine, h_st, inp.frame_codes)
    for k in range(ref.shape[1]):
        results.append(compare(f"fast.code_predictor.group{k + 1}", ref[:, k], got[:, k], dtype, tol))
    return results


def fast_talker_probes(up_t, st_t, engine: FastEngine, dtype, seed: int, tol) -> list[Comparison]:
    """The exact suite's two talker probes (cases/forward.py talker_probe_inputs) through the compiled
    prefill and, for the last position, the compiled step."""
    tc = st_t.cfg.transformer
    out = []
    for probe, x, pos in talker_probe_inputs(tc.hidden_size, tc.rms_norm_eps, dtype, seed):
        name = f"fast.talker_step.{probe}"
        bsz, length = x.shape[:2]
        ref = up_t.model(inputs_embeds=x, position_ids=pos, use_cache=False).last_hidden_state[:, -1]
        last = length - 1
        cache = st_t.decoder.new_cache(tc, bsz, engine.talker_cache_len(length), x.dtype, x.device)
        engine.talker_prefill(x[:, :last], pos[..., :last], None, cache)
        hidden, _ = engine.talker_step(x[:, last:], pos[..., last:], None, cache, last)
        out.append(compare(f"{name}.hidden", ref, hidden[:, 0], dtype, tol))
    return out


def teacher_forced_frame(
    standalone, engine: FastEngine, talker_hidden: torch.Tensor, codes: torch.Tensor
) -> torch.Tensor:
    """Fast-path logits [B, G-1, V] of groups 1..G-1 for talker hidden [B, H] and codes [B, G]."""
    cp_cfg = standalone.config.talker.code_predictor
    cache = standalone.code_predictor.decoder.new_cache(
        cp_cfg.transformer, codes.shape[0], cp_cfg.num_code_groups, talker_hidden.dtype, talker_hidden.device
    )
    e0 = standalone.talker.codec_embedding(codes[:, :1])
    return engine.frame_logits(talker_hidden[:, None], e0, codes[:, 1:], cache)


# --- 2. teacher-forced agreement -----------------------------------------------------------------
@dataclass
class Agreement:
    case: str
    dtype: str
    group0_positions: int
    group0_agree: int
    residual_positions: int
    residual_agree: int
    first_disagreement: tuple[int, int] | None  # (frame, group)
    min_agreement: float
    passed: bool = False

    @property
    def fraction(self) -> float:
        n = self.group0_positions + self.residual_positions
        return (self.group0_agree + self.residual_agree) / n if n else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}


def _split(kwargs: dict) -> tuple[dict, dict, dict]:
    """A generation case's kwargs -> (upstream kwargs, standalone prompt kwargs, options)."""
    up, st = split_sides(kwargs)
    prompt = {k: st.pop(k) for k in PROMPT_KEYS if k in st}
    return up, prompt, st


@torch.inference_mode()
def teacher_forced_agreement(
    case_name: str,
    ctx: CaseContext,
    kwargs: dict,
    engine: FastEngine,
    dtype_name: str,
    dtype: torch.dtype,
    max_new_tokens: int = 24,
    bounds: FastBounds | None = None,
) -> Agreement:
    """Upstream's greedy codes fed to the fast path; the fast path's argmax compared at every
    position (group 0 with the loop's constraints: repetition penalty, min_new_tokens, suppression).
    ``bounds``: compare.fast_bounds (default: the plain fast mode's in ``dtype``)."""
    bounds = bounds or fast_bounds(dtype)
    up_kwargs, prompt_kwargs, options = _split(kwargs)
    greedy = dict(MODES["greedy"], max_new_tokens=max_new_tokens)
    up_codes, _ = ctx.wrapper.model.generate(**up_kwargs, **greedy)
    codes = up_codes[0]
    st = ctx.standalone
    tcfg = st.config.talker
    params = GenerateOptions.from_kwargs({**options, **greedy}).to_params()
    eos = params.eos_token_id if params.eos_token_id is not None else tcfg.codec_eos_token_id
    talker_params = SamplingParams(
        **{**params.talker.__dict__, "min_new_tokens": params.min_new_tokens, "eos_token_id": eos}
    )
    suppress = suppress_mask_for(tcfg.vocab_size, tcfg.codec_eos_token_id, codes.device)
    prompt = talker_prompt.build_talker_prompt(st, **prompt_kwargs)
    x, trailing = prompt.inputs_embeds, prompt.trailing_text
    length = x.shape[1]
    tcache = st.talker.decoder.new_cache(
        tcfg.transformer, 1, engine.talker_cache_len(length + max_new_tokens), x.dtype, x.device
    )
    hidden, logits = engine.talker_prefill(x, mrope_positions(prompt.attention_mask), None, tcache)
    frames = codes.shape[0]
    # Upstream stopped early: the prediction after its last frame was a stop. Upstream's codes are cut
    # at the config's EOS while an eos_token_id override stops the loop, and which of the two ended a
    # run differs per case (measured: eos.first_step ends on the config id, eos.second_draw on the
    # override), so either id counts as agreeing at that one position.
    stopped = frames < max_new_tokens - 1
    targets0 = torch.cat([codes[:, 0], torch.tensor([eos])]) if stopped else codes[:, 0]
    stops = {eos, tcfg.codec_eos_token_id}
    agree0 = agree_r = n_r = 0
    first = None
    for f in range(targets0.shape[0]):
        pred = int(constrain_logits(logits[:, -1], targets0[None, :f], talker_params, suppress).argmax(-1))
        ok = pred in stops if f == frames else pred == int(targets0[f])
        agree0 += ok
        if not ok and first is None:
            first = (f, 0)
        if f == frames:
            break
        frame = codes[f : f + 1]
        cp_logits = teacher_forced_frame(st, engine, hidden[:, -1], frame)
        match = cp_logits.argmax(-1)[0] == frame[0, 1:]
        agree_r += int(match.sum())
        n_r += match.numel()
        if first is None and not bool(match.all()):
            first = (f, int((~match).nonzero()[0]) + 1)
        e = [st.talker.codec_embedding(frame[:, :1])] + [
            st.code_predictor.embed(k, frame[:, k : k + 1]) for k in range(1, frame.shape[1])
        ]
        step_x = torch.cat(e, dim=1).sum(1, keepdim=True)
        step_x = step_x + (trailing[:, f].unsqueeze(1) if f < trailing.shape[1] else prompt.tts_pad_embed)
        cur = length + f
        positions = torch.full((3, 1, 1), float(cur))
        hidden, logits = engine.talker_step(step_x, positions, None, tcache, cur)
    result = Agreement(case_name, dtype_name, targets0.shape[0], agree0, n_r, agree_r, first, bounds.min_agreement)
    result.passed = result.fraction >= result.min_agreement
    return result


# --- 3. generation agreement ---------------------------------------------------------------------
@dataclass
class GenerationAgreement:
    case: str
    mode: str
    dtype: str
    identical: bool
    first_divergence: tuple[int, int, int] | None  # (item, frame, group)
    identical_frame_fraction: float  # frames identical at the same index / frames of the longer side
    frames_upstream: list[int]
    frames_fast: list[int]
    seconds_upstream: float
    seconds_fast: float
    error: str | None = None  # the standalone's generation raised (type: message): failed, not diverged

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FreeRun:
    """Both sides' free-running codes of one case and mode, and what the stepwise replay needs."""

    agreement: GenerationAgreement
    upstream_codes: list
    standalone_codes: list
    upstream_logits: Any  # upstream_logits' record of the logits upstream produced in the run
    prompt: Any
    params: Any
    seed: int


@torch.inference_mode()
def free_running(
    case_name: str, ctx: CaseContext, kwargs: dict, engine: FastEngine | None, mode: str, dtype_name: str,
    max_new_tokens: int = 24,
) -> FreeRun:  # fmt: skip
    """Free-running generation of both sides from one seed (the standalone through ``engine``, or its
    exact path when None), compared frame by frame."""
    up_kwargs, prompt_kwargs, options = _split(kwargs)
    # The mode's sampling values as the exact suite uses them (top_p_boundary is calibrated per case).
    sampling_kwargs, seed = mode_kwargs(mode, ctx, up_kwargs)
    common = dict(sampling_kwargs, max_new_tokens=max_new_tokens)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with upstream_logits(ctx.wrapper.model) as seq:
        up_codes, _ = ctx.wrapper.model.generate(**up_kwargs, **common)
    t1 = time.perf_counter()
    torch.manual_seed(seed)
    params = GenerateOptions.from_kwargs({**options, **common}).to_params()
    # Through the modules: the fault self-test patches generation.generate_codes and the prompt builder there.
    prompt = talker_prompt.build_talker_prompt(ctx.standalone, **prompt_kwargs)
    error = None
    try:
        fast_codes, _ = generation.generate_codes(ctx.standalone, prompt, params, engine=engine)
    except Exception as e:  # a broken standalone side is a failed case, not a crash (as verify/cases/suite.py)
        fast_codes, error = [], f"{type(e).__name__}: {e}"
    t2 = time.perf_counter()
    same = total = 0
    for a, b in zip(up_codes, fast_codes):
        n = min(a.shape[0], b.shape[0])
        same += int((a[:n] == b[:n]).all(dim=1).sum())
        total += max(a.shape[0], b.shape[0])
    div = first_divergence(up_codes, fast_codes)
    agreement = GenerationAgreement(
        case_name,
        mode,
        dtype_name,
        div is None,
        div,
        same / total if total else 1.0,
        [int(c.shape[0]) for c in up_codes],
        [int(c.shape[0]) for c in fast_codes],
        t1 - t0,
        t2 - t1,
        error,
    )
    return FreeRun(agreement, up_codes, fast_codes, seq, prompt, params, seed)


def generation_agreement(
    case_name: str,
    ctx: CaseContext,
    kwargs: dict,
    engine: FastEngine,
    mode: str,
    dtype_name: str,
    dtype: torch.dtype,
    max_new_tokens: int = 24,
    bounds: FastBounds | None = None,
) -> tuple[GenerationAgreement, Stepwise]:
    """Free-running generation of both sides from one seed, and the stepwise replay
    (verify/cases/fast_stepwise.py) on the logits upstream produced in the same run, judged by
    ``bounds.step`` (default: the plain fast mode's in ``dtype``)."""
    bounds = bounds or fast_bounds(dtype)
    run = free_running(case_name, ctx, kwargs, engine, mode, dtype_name, max_new_tokens)
    with torch.inference_mode():
        step = run_stepwise(
            ctx.standalone, run.prompt, run.params, engine, run.upstream_logits, run.upstream_codes,
            case_name, mode, dtype_name, dtype, run.seed, bounds.step,
        )  # fmt: skip
    return run.agreement, step


# --- the whole report ----------------------------------------------------------------------------
def generation_unjudged_modes(engine: FastEngine) -> tuple[str, ...]:
    """Modes whose free-running codes are reported but not judged even where the dtype judges codes:
    the regimes calibrated on upstream's exact first-draw logits, once the prefill is compiled
    (compare.EXACT_FIRST_DRAW_MODES says why)."""
    return EXACT_FIRST_DRAW_MODES if engine.compiles_prefill else ()


def run_fast_parity(
    wrapper,
    standalone,
    dtype: torch.dtype,
    dtype_name: str,
    engine: FastEngine | None = None,
    seed: int = 0,
    max_new_tokens: int = 24,
    modes=tuple(MODES),
    case_names: tuple[str, ...] | None = None,
    quant: str | None = None,
    dequantized_reference: bool = False,
) -> dict[str, Any]:
    """All three measurements for one loaded (upstream wrapper, standalone) pair. Generation is
    judged only where FAST_GENERATION_IDENTICAL says codes must be identical (fp32, unquantized).
    ``quant``: the standalone's weight-only quantization (standalone/quant.py), judged against
    upstream in fp32 by its own bounds (compare.fast_bounds); with ``dequantized_reference`` the
    wrapper holds the standalone's dequantized weights (dequantized.py) and the plain bounds apply."""
    if dequantized_reference and not quant:
        raise ValueError("dequantized_reference needs the standalone's quant mode")
    engine = engine or FastEngine(standalone.talker, standalone.code_predictor)
    bounds = fast_bounds(dtype, None if dequantized_reference else quant)
    t0 = time.perf_counter()
    forward = run_fast_forward_cases(wrapper.model, standalone, engine, dtype, seed, bounds.forward)
    first_call = time.perf_counter() - t0
    ctx = CaseContext(wrapper, standalone, seed)
    agreements, generations, stepwise = [], [], []
    for case in cases_for(standalone.config.tts_model_type):
        if case_names is not None and case.name not in case_names:
            continue
        kwargs = case.build(ctx)
        if len(kwargs["input_ids"]) == 1:  # teacher forcing is per item: single-item cases only
            agreements.append(
                teacher_forced_agreement(case.name, ctx, kwargs, engine, dtype_name, dtype, max_new_tokens, bounds)
            )
        for mode in modes:
            gen, step = generation_agreement(
                case.name, ctx, kwargs, engine, mode, dtype_name, dtype, max_new_tokens, bounds
            )
            generations.append(gen)
            stepwise.append(step)
    judged = bounds.generation_identical
    unjudged = generation_unjudged_modes(engine) if judged else ()
    failing = (
        [c.case for c in forward if not c.passed]
        + [f"teacher_forced.{a.case}" for a in agreements if not a.passed]
        + [f"stepwise.{s.case}.{s.mode}" for s in stepwise if not s.passed]
        + [
            f"generation.{g.case}.{g.mode}"
            for g in generations
            if judged and not g.identical and g.mode not in unjudged
        ]
    )
    return {
        "dtype": dtype_name,
        "quant": str(quant) if quant else None,
        "reference": "upstream, dequantized weights" if dequantized_reference else "upstream",
        "compile_seconds": engine.compile_seconds,
        "forward_seconds_incl_compile": first_call,
        "forward": [c.as_dict() for c in forward],
        "teacher_forced": [a.as_dict() for a in agreements],
        "generation": [g.as_dict() for g in generations],
        "stepwise": [s.as_dict() for s in stepwise],
        "generation_judged": judged,
        "generation_unjudged_modes": list(unjudged),
        "failing": failing,
        # failing checks whose standalone side raised: a self-test counts these as crashes, not catches
        "raised": [f"stepwise.{s.case}.{s.mode}" for s in stepwise if s.error]
        + [
            f"generation.{g.case}.{g.mode}"
            for g in generations
            if g.error and f"generation.{g.case}.{g.mode}" in failing
        ],
        "passed": not failing,
    }


def mode_label(report: dict) -> str:
    """'bf16', or 'fp32 activations, int8 weights (against upstream fp32)' for a quantized run
    ('... (against upstream fp32 on the dequantized weights)' for the sharp one)."""
    quant = report.get("quant")
    if not quant:
        return report["dtype"]
    sharp = report.get("reference") == "upstream, dequantized weights"
    return f"{report['dtype']} activations, {quant} weights (against upstream fp32{' on the dequantized weights' if sharp else ''})"


def format_fast_report(report: dict) -> str:
    lines = [
        f"fast path vs upstream, {mode_label(report)} (compile {report['compile_seconds']:.1f} s)",
        f"{'case':36} {'max_abs':>10} {'max_rel':>10} {'cosine':>10} {'bound':>10}  verdict",
    ]
    for c in report["forward"]:
        lines.append(
            f"{c['case']:36} {c['max_abs']:10.3e} {c['max_rel']:10.3e} {c['cosine']:10.7f} {c['bound']:10.3e}  "
            f"{'PASS' if c['passed'] else 'FAIL'}"
        )
    lines.append(f"{'teacher-forced case':36} {'g0 agree':>10} {'res agree':>10} {'fraction':>10}  first disagreement")
    for a in report["teacher_forced"]:
        lines.append(
            f"{a['case']:36} {a['group0_agree']:>4}/{a['group0_positions']:<5} {a['residual_agree']:>4}/{a['residual_positions']:<5} "
            f"{a['fraction']:10.4f}  {a['first_disagreement']}  {'PASS' if a['passed'] else 'FAIL'}"
        )
    lines.append(
        f"{'stepwise case (upstream decisions)':36} {'mode':15} {'decisions':>9} {'max_rel':>10} {'min cos':>10}  over tolerance"
    )
    for s in report.get("stepwise", []):
        decided = "same" if s["decisions_identical"] else f"{s['first_divergence']}"
        lines.append(
            f"{s['case']:36} {s['mode']:15} {decided:>9} {s['max_rel']:10.3e} {s['min_cosine']:10.7f}  "
            f"{', '.join(s['over_tolerance']) or '-'}  {'PASS' if s['passed'] else 'FAIL'}"
        )
    judged = report.get("generation_judged", False)
    lines.append(
        f"{'generation case':36} {'mode':15} {'identical':>9} {'same frames':>11}  first divergence"
        + ("  (must be identical)" if judged else "  (reported, not judged)")
    )
    unjudged = report.get("generation_unjudged_modes", [])
    for g in report["generation"]:
        verdict = ("  PASS" if g["identical"] else "  FAIL") if judged else ""
        if judged and g["mode"] in unjudged:
            verdict = "  (reported: calibrated on upstream's exact first draw, the prefill is compiled)"
        lines.append(
            f"{g['case']:36} {g['mode']:15} {str(g['identical']):>9} {g['identical_frame_fraction']:11.3f}  "
            f"{g['first_divergence']}{verdict}"
        )
    return "\n".join(lines)


def render_fast_markdown(reports: list[dict], note: str = "") -> str:
    head = "# Fast path against upstream\n\n" + (note + "\n\n" if note else "")
    verdicts = [
        f"- {r['checkpoint']} {mode_label(r)}: {'PASS' if r['passed'] else 'FAIL ' + str(r['failing'])}"
        for r in reports
    ]
    body = "\n\n".join(f"## {r['checkpoint']} {mode_label(r)}\n\n```\n{format_fast_report(r)}\n```" for r in reports)
    return head + "\n".join(verdicts) + "\n\n" + body + "\n"


def run_fast_cli(
    src,
    standalone_dir,
    dtype_names,
    seeds,
    frames,
    report_dir: Path,
    options: dict | None = None,
    engine_options: dict | None = None,
    quant: str | None = None,
) -> bool:
    """verify-parity --fast: the three fast-path measurements per checkpoint and dtype; writes
    fast_parity.{json,md} to ``report_dir`` (fast_parity-QUANT.{json,md} for a weight-only
    quantized standalone, ``quant``, judged against upstream in fp32). True when every judged check
    passes."""
    import json
    import tempfile

    from q3tts.standalone import Qwen3TTS
    from q3tts.verify.cases.dequantized import load_dequantized_reference
    from q3tts.verify.cases.forward import load_upstream_wrapper
    from q3tts.verify.checkpoints import checkpoint_pairs
    from q3tts.verify.compare import DTYPES
    from q3tts.verify.report.console import Progress, echo

    for dn in dtype_names:
        fast_bounds(DTYPES[dn], quant)  # an unmeasured mode is refused before anything loads
    reports = []
    with tempfile.TemporaryDirectory(prefix="verify-fast-") as work:
        pairs, frames, _fixtures = checkpoint_pairs(src, standalone_dir, frames, Path(work), Progress(inline=False))
        for name, _source, up, st_dir in pairs:
            for dn in dtype_names:
                dtype = DTYPES[dn]
                st = Qwen3TTS.from_pretrained(st_dir, dtype=dtype, quant=quant)
                engine = FastEngine(st.talker, st.code_predictor, options=options, **(engine_options or {}))
                # A quantized mode twice: its fidelity (upstream's own weights, the mode's bounds), then
                # its integrity (upstream on the dequantized weights, the plain bounds: dequantized.py).
                references = [(load_upstream_wrapper(up, dtype), False)]
                if quant:
                    references.append((load_dequantized_reference(up, st), True))
                for wrapper, sharp in references:
                    report = run_fast_parity(
                        wrapper, st, dtype, dn, engine=engine, seed=seeds[0], max_new_tokens=frames,
                        modes=tuple(MODES), quant=quant, dequantized_reference=sharp,
                    )  # fmt: skip
                    report.update(checkpoint=name, options=engine.options, engine_options=engine_options or {})
                    if st.quant_report is not None:
                        report["quantized"] = asdict(st.quant_report)
                    echo(f"== {name}\n" + format_fast_report(report))
                    reports.append(report)
                del references, wrapper, st, engine
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"fast_parity-{quant}" if quant else "fast_parity"
    (report_dir / f"{stem}.json").write_text(json.dumps(reports, indent=2) + "\n")
    note = (
        f"verify-parity --fast{f' --quant {quant}' if quant else ''}, seed {seeds[0]}, {frames} frames per "
        f"generation case, {torch.get_num_threads()} threads on {cpu_model()}, inductor options "
        f"{reports[0]['options'] if reports else options}"
        + (f", engine options {engine_options}" if engine_options else "")
        + "."
    )
    (report_dir / f"{stem}.md").write_text(render_fast_markdown(reports, note))
    ok = all(r["passed"] for r in reports)
    echo(f"\nfast path: {'PASS' if ok else 'FAIL'}; report: {report_dir / f'{stem}.md'}")
    return ok
