"""Fault injection: deliberate bugs planted in the standalone side, to prove verify-parity catches
them and points at the right place.

Every fault goes through one explicit seam: ``target`` names the object it replaces, either

- a dotted import path into the runtime, ``"q3tts.standalone.generation.generate_codes"`` (a
  function) or ``"q3tts.standalone.codec.SnakeBeta.forward"`` (a class attribute), or
- an attribute path on a loaded ``Qwen3TTS``, ``"talker.decoder.layers.1.attn.q_norm"`` (a
  module, tensor, parameter or config value; integer parts index module lists).

``make(original, model)`` builds the replacement from what the target holds now. A parameter is
edited in place (everything holding it sees the edit); anything else is rebound. A function is
rebound at its target *and* at every other name it is bound to in ``q3tts.standalone`` (a
``from .x import f`` alias), so the seam holds whichever module calls it. Everything is restored
on exit. A target that no longer resolves is an error naming it (``resolve_target``), and a test
resolves every target of the catalogue, so a rename cannot silently disarm a fault.

``component`` is what the report must name among the failing cases; ``layer``, when given, is the
layer where the bug enters, which the localisation must report. The localisation is the first layer
whose output differs from upstream's at all (``first_diff_layer``), and that is exact only when the
fault-free pair is bit-identical: every earlier layer then saw identical inputs and gave identical
outputs. ``forward_is_bit_identical`` checks that precondition; without it the first layer over
tolerance is used, which in bf16 can be one layer late (a layer-0 fault whose effect stays under 3%
of the residual stream's scale crosses the bound at layer 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

RUNTIME = "q3tts.standalone"


class SeamError(LookupError):
    """A fault or perturbation target that does not resolve (renamed or removed)."""


# --- seams ---------------------------------------------------------------------------------


def _import_prefix(parts: list[str]) -> tuple[Any, list[str]]:
    """The longest importable module prefix of ``parts`` and the attribute path after it."""
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            return importlib.import_module(name), parts[i:]
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name) and e.name != name:
                raise  # a real import error inside an existing module
    raise SeamError(f"{'.'.join(parts)}: no importable module prefix")


def _child(obj: Any, part: str, target: str) -> Any:
    if isinstance(obj, (list, tuple)) and part.isdigit():
        return obj[int(part)]
    try:
        return getattr(obj, part)
    except AttributeError:
        raise SeamError(f"{target}: {type(obj).__name__} has no attribute {part!r}") from None


def resolve_target(target: str, model=None) -> tuple[Any, str, Any]:
    """(owner, attribute name, current value) of a seam. Dotted paths starting with
    ``q3tts.`` are import paths; anything else is an attribute path on ``model``."""
    parts = target.split(".")
    if parts[0] == "q3tts":
        owner, rest = _import_prefix(parts)
        if not rest:
            raise SeamError(f"{target}: names a module, not an object in it")
    else:
        if model is None:
            raise SeamError(f"{target}: a model attribute path needs a loaded model")
        owner, rest = model, parts
    for part in rest[:-1]:
        owner = _child(owner, part, target)
    value = _child(owner, rest[-1], target)
    return owner, rest[-1], value


def _runtime_aliases(value: Any, owner: Any) -> list[tuple[types.ModuleType, str]]:
    """Every other module-level name in the runtime bound to ``value`` (``from .x import f``)."""
    out = []
    for name, mod in list(sys.modules.items()):
        if mod is None or mod is owner or not (name == RUNTIME or name.startswith(RUNTIME + ".")):
            continue
        out += [(mod, k) for k, v in vars(mod).items() if v is value]
    return out


@contextlib.contextmanager
def _rebind(owner: Any, attr: str, value: Any) -> Iterator[None]:
    """Set ``owner.attr`` (modules, classes, nn.Modules, frozen dataclasses) and restore exactly
    what was there: an attribute the owner did not hold itself (a method found on the class) is
    deleted again rather than frozen into the instance."""
    if isinstance(owner, (type, types.ModuleType)):
        own = attr in vars(owner)
    elif isinstance(owner, torch.nn.Module):
        own = attr in vars(owner) or any(attr in getattr(owner, d) for d in ("_modules", "_parameters", "_buffers"))
    else:
        own = attr in getattr(owner, "__dict__", {})
    old = getattr(owner, attr)
    plain = isinstance(owner, (type, types.ModuleType, torch.nn.Module))
    setter = setattr if plain else object.__setattr__
    setter(owner, attr, value)
    try:
        yield
    finally:
        if own:
            setter(owner, attr, old)
        else:
            (delattr if plain else object.__delattr__)(owner, attr)


@contextlib.contextmanager
def _edit_parameter(param: torch.nn.Parameter, new: torch.Tensor) -> Iterator[None]:
    original = param.detach().clone()
    with torch.no_grad():
        param.copy_(new)
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(original)


@contextlib.contextmanager
def patch_target(target: str, make: Callable[[Any, Any], Any], model=None) -> Iterator[None]:
    """Replace the object at ``target`` by ``make(original, model)`` for the duration."""
    owner, attr, original = resolve_target(target, model)
    replacement = make(original, model)
    with contextlib.ExitStack() as stack:
        if isinstance(original, torch.nn.Parameter):
            stack.enter_context(_edit_parameter(original, replacement))
        else:
            stack.enter_context(_rebind(owner, attr, replacement))
            if isinstance(owner, types.ModuleType) and callable(original):
                for mod, name in _runtime_aliases(original, owner):
                    stack.enter_context(_rebind(mod, name, replacement))
        yield


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    model_type: str  # the fixture type it is planted in
    component: str
    layer: str | tuple[str, ...] | None  # the layer(s) the localisation may name
    target: str  # the seam: an import path into q3tts.standalone or an attribute path on the model
    make: Callable[[Any, Any], Any]  # (original at target, model) -> replacement
    also: tuple[tuple[str, Callable[[Any, Any], Any]], ...] = ()  # further seams the same bug touches

    def seams(self) -> tuple[tuple[str, Callable[[Any, Any], Any]], ...]:
        return ((self.target, self.make),) + self.also

    @contextlib.contextmanager
    def inject(self, model) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for target, make in self.seams():
                stack.enter_context(patch_target(target, make, model))
            yield


# --- replacements: weights and modules -------------------------------------------------------


def _swapped_rows(a: slice, b: slice):
    def make(w, _model):
        out = w.detach().clone()
        out[a], out[b] = w[b], w[a]
        return out

    return make


def _rope_theta_x10(_inv_freq, m):
    from q3tts.standalone.layers import rope_inv_freq

    tc = m.config.talker.transformer
    return rope_inv_freq(tc.head_dim, tc.rope_theta * 10)


def _swapped_qk(w, m):
    attn = m.talker.decoder.layers[1].attn
    return _swapped_rows(slice(0, attn.kv_size), slice(attn.q_size, attn.q_size + attn.kv_size))(w, m)


def _swapped_gate_up(w, m):
    h = m.talker.decoder.layers[0].mlp.hidden
    return _swapped_rows(slice(0, h), slice(h, 2 * h))(w, m)


def _mrope_contiguous(_rows, m):
    # The same sections laid out contiguously (Qwen2-VL style) instead of interleaved.
    from q3tts.standalone.layers import mrope_row_index

    t = m.config.talker
    return mrope_row_index(t.mrope_section, not t.mrope_interleaved)


def _cp_rope_theta_over_100(_inv_freq, m):
    from q3tts.standalone.layers import rope_inv_freq

    tc = m.config.talker.code_predictor.transformer
    return rope_inv_freq(tc.head_dim, tc.rope_theta / 100)


def _text_projection_gelu(_forward, m):
    proj = m.talker.text_projection
    return lambda x: proj.fc2(F.gelu(proj.fc1(x)))


def _positions_one_too_far_after_padding(_original, _model):
    # RoPE only sees position differences, so a prefill shifted as a whole is invisible; the bug
    # shows when the decode steps continue from the unshifted count.
    def shifted(mask):
        padded_rows = (mask == 0).any(dim=-1, keepdim=True)
        pos = mask.float().cumsum(-1) - 1 + padded_rows.float()
        return pos.masked_fill(mask == 0, 1).unsqueeze(0).expand(3, -1, -1)

    return shifted


def _mel_hop_240(real, _model):
    return lambda audio, **kw: real(audio, **{**kw, "hop": 240})


def _snake_without_exp(_forward, _model):
    def forward(self, x):
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        beta = self.beta.unsqueeze(0).unsqueeze(-1)
        return x + (1.0 / (beta + 1e-9)) * torch.pow(torch.sin(x * torch.exp(alpha)), 2)

    return forward


def _chunk_context_24(real, _model):
    def chunked(self, codes, chunk_size=300, left_context=25, **kw):  # kw: the progress hook
        return real(self, codes, chunk_size, left_context - 1, **kw)

    return chunked


def _trailing_text_one_early(real, _model):
    def build(*a, **k):
        p = real(*a, **k)
        p.trailing_text = torch.cat([p.trailing_text[:, 1:], p.trailing_text[:, -1:]], dim=1)
        return p

    return build


# --- replacements: the sampler ---------------------------------------------------------------
# The mutants below are the one-line bugs a sampler rewrite makes. They are written against the
# runtime's seams (sampling.constrain_logits / warp_logits / sample_next_token,
# generation.generate_codes / suppress_mask_for); each keeps everything else of the step intact.


def warp_variant(*, temperature_twice=False, top_k_extra=0, top_k_drop_ties=False, top_p_strict=False):
    """warp_logits (sampling.py step 5: temperature, top-k, top-p) with one planted bug."""

    def warp(scores, params):
        t = params.temperature
        if t is not None and t != 1.0:
            scores = scores / t
            if temperature_twice:
                scores = scores / t
        if params.top_k is not None and params.top_k != 0:
            k = min(max(params.top_k, 1) + top_k_extra, scores.shape[-1])
            kth = torch.topk(scores, k)[0][..., -1, None]
            scores = scores.masked_fill(scores <= kth if top_k_drop_ties else scores < kth, -float("inf"))
        if params.top_p is not None and params.top_p < 1.0:
            ascending, order = torch.sort(scores, descending=False)
            mass = ascending.softmax(dim=-1).cumsum(dim=-1)
            drop = mass < (1 - params.top_p) if top_p_strict else mass <= (1 - params.top_p)
            drop[..., -1:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
        return scores

    return lambda _original, _model: warp


def constrain_variant(*, negative=lambda s, p: s * p, positive=lambda s, p: s / p, min_new_tokens_le=False):
    """constrain_logits (sampling.py steps 1-4) with the penalty's two branches and the
    min_new_tokens comparison replaceable: mutants plant a bug, the knob-sensitivity
    measurement perturbs one branch."""

    def constrain(logits, generated, params, suppress_mask=None):
        scores = logits.float()
        p = params.repetition_penalty
        if p != 1.0 and generated is not None and generated.shape[1] > 0:
            seen = torch.gather(scores, 1, generated)
            scores = scores.scatter(1, generated, torch.where(seen < 0, negative(seen, p), positive(seen, p)))
        if params.eos_token_id is not None and params.min_new_tokens > 0:
            n = 0 if generated is None else generated.shape[1]
            if (n <= params.min_new_tokens) if min_new_tokens_le else (n < params.min_new_tokens):
                scores = scores.clone()
                scores[:, params.eos_token_id] = -float("inf")
        if suppress_mask is not None:
            scores = scores.masked_fill(suppress_mask, -float("inf"))
        return scores

    return lambda _original, _model: constrain


def suppress_mask_variant(shift: int):
    """generation.suppress_mask_for with the suppressed block's start moved by ``shift`` ids
    (upstream: the top 1024 ids but EOS; +1 lets the first special id through, -1 also blocks
    the last code)."""

    def suppress_mask_for(vocab_size, eos_token_id, device):
        mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        mask[max(0, vocab_size - 1024 + shift) :] = True
        mask[eos_token_id] = False
        return mask

    return lambda _original, _model: suppress_mask_for


_SAMPLING_FIELDS = ("do_sample", "top_k", "top_p", "temperature")


def generation_params_variant(edit: Callable):
    """generate_codes called with GenerationParams rewritten by ``edit(params) -> params``."""

    def make(real, _model):
        def generate_codes(model, prompt, params, progress=False, **engine):
            return real(model, prompt, edit(params), progress, **engine)

        return generate_codes

    return make


def _subtalker_uses_talker_temperature(params):
    return dataclasses.replace(
        params, subtalker=dataclasses.replace(params.subtalker, temperature=params.talker.temperature)
    )


def _subtalker_follows_talker_do_sample(params):
    return dataclasses.replace(
        params, subtalker=dataclasses.replace(params.subtalker, do_sample=params.talker.do_sample)
    )


def _talker_subtalker_swapped(params):
    t = {f: getattr(params.talker, f) for f in _SAMPLING_FIELDS}
    s = {f: getattr(params.subtalker, f) for f in _SAMPLING_FIELDS}
    return dataclasses.replace(
        params, talker=dataclasses.replace(params.talker, **s), subtalker=dataclasses.replace(params.subtalker, **t)
    )


def _min_new_tokens_ignored(params):
    return dataclasses.replace(params, min_new_tokens=0)


def _temperature_after_filters(_real, _model):
    from q3tts.standalone import sampling

    def sample_next_token(logits, generated, params, suppress_mask=None):
        scores = sampling.constrain_logits(logits, generated, params, suppress_mask)
        if not params.do_sample:
            return torch.argmax(scores, dim=-1)
        filtered = sampling.warp_logits(scores, dataclasses.replace(params, temperature=1.0))  # filters first ...
        if params.temperature not in (None, 1.0):
            filtered = filtered / params.temperature  # ... temperature last
        return torch.multinomial(torch.softmax(filtered, dim=-1), num_samples=1).squeeze(1)

    return sample_next_token


def _penalty_whole_history(real, m):
    groups = m.config.talker.num_code_groups
    history: list[torch.Tensor] = []

    def sample_next_token(logits, generated, params, suppress_mask=None):
        if suppress_mask is not None:  # the talker's own draw (only it passes a suppression mask)
            return real(logits, generated, params, suppress_mask)
        if len(history) == groups - 1:
            history.clear()
        hist = torch.stack(history, dim=1) if history else None
        token = real(logits, hist, dataclasses.replace(params, repetition_penalty=1.05), suppress_mask)
        history.append(token)
        return token

    return sample_next_token


def _dialects_dropped(spk_is_dialect, _model):
    return {k: False for k in spk_is_dialect}


_TALKER = "q3tts.standalone.talker"
_GEN = "q3tts.standalone.generation"
_SAMPLING = "q3tts.standalone.sampling"

CATALOGUE: tuple[Fault, ...] = (
    Fault(
        "rope_theta",
        "talker RoPE theta x10",
        "custom_voice",
        "talker",
        "talker.layers.0",
        "talker.inv_freq",
        _rope_theta_x10,
    ),
    Fault(
        "swapped_qk",
        "q and k projection rows swapped in talker layer 1",
        "custom_voice",
        "talker",
        "talker.layers.1",
        "talker.decoder.layers.1.attn.wqkv.weight",
        _swapped_qk,
    ),
    Fault(
        "rmsnorm_eps",
        "RMSNorm eps 1e-3 instead of 1e-6 (talker layer 0)",
        "custom_voice",
        "talker",
        "talker.layers.0",
        "talker.decoder.layers.0.attn_norm.eps",
        lambda _eps, _m: 1e-3,
    ),
    Fault(
        "skipped_q_norm",
        "q_norm skipped in talker layer 1",
        "custom_voice",
        "talker",
        "talker.layers.1",
        "talker.decoder.layers.1.attn.q_norm",
        lambda _norm, _m: torch.nn.Identity(),
    ),
    Fault(
        "mrope_split",
        "M-RoPE sections laid out contiguously instead of interleaved",
        "custom_voice",
        "talker",
        "talker.layers.0",
        "talker.mrope_rows",
        _mrope_contiguous,
    ),
    Fault(
        "gate_up_swapped",
        "SwiGLU gate and up swapped (talker layer 0)",
        "custom_voice",
        "talker",
        "talker.layers.0",
        "talker.decoder.layers.0.mlp.w_gate_up.weight",
        _swapped_gate_up,
    ),
    Fault(
        "padded_position",
        "prefill positions off by one after left padding",
        "custom_voice",
        "generation",
        None,
        f"{_GEN}.mrope_positions",
        _positions_one_too_far_after_padding,
    ),
    Fault(
        "head_swapped",
        "code-predictor heads of groups 1 and 2 swapped",
        "custom_voice",
        "code_predictor",
        ("code_predictor.heads[0]", "code_predictor.heads[1]"),
        "code_predictor.heads",
        _swapped_rows(slice(0, 1), slice(1, 2)),
    ),
    Fault(
        "cp_projection_bias",
        "code-predictor input projection bias dropped",
        "custom_voice",
        "code_predictor",
        "code_predictor.layers.0",
        "code_predictor.input_projection.bias",
        lambda b, _m: torch.zeros_like(b),
    ),
    Fault(
        "cp_rope_theta",
        "code-predictor RoPE theta / 100",
        "custom_voice",
        "code_predictor",
        "code_predictor.layers.0",
        "code_predictor.inv_freq",
        _cp_rope_theta_over_100,
        also=(("code_predictor._rope_cache", lambda _cache, _m: {}),),
    ),  # cos/sin cached from the true theta
    Fault(
        "text_projection_gelu",
        "text projection with GELU instead of SiLU",
        "voice_design",
        "text_projection",
        None,
        "talker.text_projection.forward",
        _text_projection_gelu,
    ),
    Fault(
        "mel_hop",
        "speaker mel with hop 240 instead of 256",
        "base",
        "speaker_encoder",
        "speaker_encoder.blocks.0",
        "q3tts.standalone.mel.log_mel_spectrogram",
        _mel_hop_240,
    ),
    Fault(
        "se_gate",
        "squeeze-excitation gate skipped in speaker block 1",
        "base",
        "speaker_encoder",
        "speaker_encoder.blocks.1",
        "speaker_encoder.blocks.1.se_block.forward",
        lambda _f, _m: lambda x: x,
    ),
    Fault(
        "temperature_after_filters",
        "temperature applied after top-k/top-p",
        "custom_voice",
        "generation",
        None,
        f"{_SAMPLING}.sample_next_token",
        _temperature_after_filters,
    ),
    Fault(
        "penalty_whole_history",
        "repetition penalty over the whole history (code-predictor groups too)",
        "custom_voice",
        "generation",
        None,
        f"{_TALKER}.sample_next_token",
        _penalty_whole_history,
    ),
    Fault(
        "min_new_tokens",
        "EOS allowed from the first frame",
        "voice_design",
        "generation",
        None,
        f"{_GEN}.generate_codes",
        generation_params_variant(_min_new_tokens_ignored),
    ),
    Fault(
        "dialect_ignored",
        "dialect speaker's language override dropped",
        "custom_voice",
        "generation",
        None,
        "config.talker.spk_is_dialect",
        _dialects_dropped,
    ),
    Fault(
        "trailing_text",
        "streaming text fed one step early",
        "base",
        "generation",
        None,
        "q3tts.standalone.prompt.build_talker_prompt",
        _trailing_text_one_early,
    ),
    Fault(
        "snake_exp",
        "SnakeBeta without exp() on beta",
        "base",
        "codec",
        None,
        "q3tts.standalone.codec.SnakeBeta.forward",
        _snake_without_exp,
    ),
    Fault(
        "chunk_context",
        "24 frames of left context instead of 25",
        "base",
        "codec",
        None,
        "q3tts.standalone.codec.CodecDecoder.chunked",
        _chunk_context_24,
    ),
    Fault(
        "codec_window",
        "sliding window 80 instead of 72",
        "base",
        "codec",
        None,
        "codec.transformer.window",
        lambda w, _m: w + 8,
    ),
    # --- sampler mutants (issue 19): each must show in the default run's generation cases ---
    Fault(
        "subtalker_temperature",
        "code predictor samples with the talker's temperature",
        "custom_voice",
        "generation",
        None,
        f"{_GEN}.generate_codes",
        generation_params_variant(_subtalker_uses_talker_temperature),
    ),
    Fault(
        "top_k_plus_one",
        "top-k keeps k+1 ids",
        "custom_voice",
        "generation",
        None,
        f"{_SAMPLING}.warp_logits",
        warp_variant(top_k_extra=1),
    ),
    Fault(
        "penalty_divides_negative",
        "repetition penalty divides negative logits instead of multiplying",
        "custom_voice",
        "generation",
        None,
        f"{_SAMPLING}.constrain_logits",
        constrain_variant(negative=lambda s, p: s / p),
    ),
    Fault(
        "talker_subtalker_swapped",
        "talker and code-predictor sampling parameters swapped",
        "voice_design",
        "generation",
        None,
        f"{_GEN}.generate_codes",
        generation_params_variant(_talker_subtalker_swapped),
    ),
    Fault(
        "subtalker_do_sample",
        "code predictor follows the talker's do_sample, not subtalker_dosample",
        "base",
        "generation",
        None,
        f"{_GEN}.generate_codes",
        generation_params_variant(_subtalker_follows_talker_do_sample),
    ),
    Fault(
        "top_p_strict",
        "top-p removes at cumulative mass < 1-p instead of <=",
        "custom_voice",
        "generation",
        None,
        f"{_SAMPLING}.warp_logits",
        warp_variant(top_p_strict=True),
    ),
    Fault(
        "top_k_ties",
        "top-k drops ids equal to the k-th score (ties) instead of keeping them",
        "base",
        "generation",
        None,
        f"{_SAMPLING}.warp_logits",
        warp_variant(top_k_drop_ties=True),
    ),
    Fault(
        "min_new_tokens_off_by_one",
        "EOS blocked while generated <= min_new_tokens (one step too long)",
        "custom_voice",
        "generation",
        None,
        f"{_SAMPLING}.constrain_logits",
        constrain_variant(min_new_tokens_le=True),
    ),
    Fault(
        "suppression_off_by_one",
        "suppressed block starts one id late (first special id sampleable)",
        "voice_design",
        "generation",
        None,
        f"{_GEN}.suppress_mask_for",
        suppress_mask_variant(+1),
    ),
    Fault(
        "temperature_twice",
        "temperature applied twice",
        "base",
        "generation",
        None,
        f"{_SAMPLING}.warp_logits",
        warp_variant(temperature_twice=True),
    ),
)

SAMPLER_FAULTS = tuple(f.name for f in CATALOGUE[21:])


@dataclass
class FaultResult:
    fault: str
    description: str
    detected: bool  # a case that passed clean failed by its numbers (not by the standalone raising)
    component_named: bool
    layer_named: bool | None
    failing_components: list[str]
    reported_layers: list[str]  # where the localisation says the bug enters
    failing_cases: list[str] = dataclasses.field(default_factory=list)
    over_tolerance_layers: list[str] = dataclasses.field(default_factory=list)  # first layers over tolerance
    crashed_cases: list[str] = dataclasses.field(default_factory=list)  # failed because the standalone raised
    crash: str = ""  # the whole run raised (type: message)
    failing_metrics: dict[str, dict] = dataclasses.field(default_factory=dict)  # case -> its failing numbers
    clean_cases: int | None = None  # cases of this run that passed without the fault

    @property
    def ok(self) -> bool:
        return self.detected and self.component_named and self.layer_named is not False

    @property
    def outcome(self) -> str:
        """caught (a numeric divergence), crashed (only exceptions) or missed."""
        if self.detected:
            return "caught"
        return "crashed" if self.crash or self.crashed_cases else "missed"


# The numbers that make a case fail, by what the case measures.
FAILING_METRIC_KEYS = ("max_abs", "bound", "cosine", "snr_db", "min_snr_db", "first_divergence", "codes_identical")


def failing_metric(result) -> dict:
    """The failing numbers of one case result, for faults.json."""
    m = result.metrics or {}
    return {k: m[k] for k in FAILING_METRIC_KEYS if k in m}


def split_failures(results, clean: set[str] | None) -> tuple[list, list]:
    """(diverged, crashed) failed cases. With ``clean``, every case must be one that passed the
    clean run (the self-test compares the same cases); a case outside it is a verifier bug."""
    failed = [r for r in results if not r.passed]
    if clean is not None:  # a case that failed by raising may be a stand-in (the forward group's "forward")
        unknown = [r.case for r in failed if r.case not in clean and not r.error]
        if unknown:
            raise RuntimeError(f"cases {unknown} were not in the clean run: a self-test compares the same cases")
    return [r for r in failed if not r.error], [r for r in failed if r.error]


def clean_run(wrapper, standalone, dtype: torch.dtype, seeds: list[int], frames: int, cache_key: str) -> set[str]:
    """Every case a fault run can run (forwards, generation, audio), without a fault: the names of
    the passing cases. Raises when one fails: a self-test needs a clean pass of the same cases."""
    from q3tts.verify.cases.suite import run_suite

    results = run_suite(
        wrapper, standalone, standalone.config.tts_model_type, dtype, seeds, frames, cache_key, encoder=False
    )
    failed = [r.case for r in results if not r.passed]
    if failed:
        raise CleanRunError(f"the clean run fails {len(failed)} case(s) {failed[:5]}: a self-test needs a clean pass")
    return {r.case for r in results}


class CleanRunError(RuntimeError):
    """The fault-free suite does not pass: no fault can be judged against it."""


def forward_is_bit_identical(upstream, standalone, dtype: torch.dtype, seed: int = 0) -> bool:
    """Whether every forward case of the fault-free pair has max abs difference exactly 0, the
    precondition for locating a fault at the first layer whose output differs."""
    from q3tts.verify.cases.suite import forward_results

    return all(r.metrics["max_abs"] == 0 for r in forward_results(upstream, standalone, dtype, seed))


def layer_verdict(fault: Fault, layers: list[str]) -> bool | None:
    """None when the fault names no layer; else whether the localisation named only its layer(s)."""
    if fault.layer is None:
        return None
    accepted = (fault.layer,) if isinstance(fault.layer, str) else fault.layer
    return bool(layers) and all(layer in accepted for layer in layers)


def run_fault(
    fault: Fault,
    wrapper,
    standalone,
    seeds: list[int],
    frames: int,
    cache_key: str,
    dtype: torch.dtype = torch.float32,
    exact_origin: bool = True,
    generation: bool = True,
    clean: set[str] | None = None,
) -> FaultResult:
    """Run the suite with ``fault`` planted. ``exact_origin``: the fault-free pair is bit-identical
    (``forward_is_bit_identical``), so the first differing layer locates; else the first layer over
    tolerance does. ``generation=False`` runs the forward cases only (layer localisation tests).
    ``clean``: the cases that passed without the fault (clean_run); only those can catch it, and
    only by their numbers: a case that failed because the standalone raised counts as crashed."""
    from q3tts.verify.cases.suite import run_suite

    # Codes -> audio does not depend on the LM side and generation does not use the codec: a codec
    # fault runs forwards and audio, every other fault forwards and generation.
    codec = fault.component == "codec"
    crash = ""
    try:
        with fault.inject(standalone):
            results = run_suite(
                wrapper,
                standalone,
                standalone.config.tts_model_type,
                dtype,
                seeds,
                frames,
                cache_key,
                generation=generation and not codec,
                audio=codec,
                encoder=False,
            )
    except Exception as e:  # the fault made the run raise: reported as crashed, never as caught
        results, crash = [], f"{type(e).__name__}: {e}"
    diverged, crashed = split_failures(results, clean)
    components = sorted({r.component for r in diverged})
    forward = [r for r in diverged if r.kind == "forward"]
    over = [r.first_bad_layer for r in forward if r.first_bad_layer]
    layers = [r.first_diff_layer for r in forward if r.first_diff_layer] if exact_origin else over
    return FaultResult(
        fault.name,
        fault.description,
        bool(diverged),
        fault.component in components,
        layer_verdict(fault, layers),
        components,
        sorted(set(layers)),
        [r.case for r in diverged],
        sorted(set(over)),
        crashed_cases=[r.case for r in crashed],
        crash=crash,
        failing_metrics={r.case: failing_metric(r) for r in diverged},
        clean_cases=None if clean is None else sum(r.case in clean for r in results),
    )
