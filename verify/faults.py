"""Fault injection: deliberate bugs planted in the standalone side, to prove verify-parity catches
them and points at the right place.

Each fault is a context manager that changes a loaded standalone model (or a function it calls)
and restores it on exit. ``component`` is what the report must name among the failing cases;
``layer``, when given, is the first layer the localisation must report.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

import q3tts.standalone.codec as codec_mod
import q3tts.standalone.generation as gen_mod
import q3tts.standalone.model as model_mod
import q3tts.standalone.prompt as prompt_mod
import q3tts.standalone.talker as talker_mod
from q3tts.standalone.layers import mrope_row_index, rope_inv_freq
from q3tts.standalone.mel import log_mel_spectrogram
from q3tts.standalone.sampling import constrain_logits, sample_next_token, warp_logits


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    model_type: str  # the fixture type it is planted in
    component: str
    layer: str | tuple[str, ...] | None  # the layer(s) the localisation may name
    inject: Callable  # (model) -> context manager


@contextlib.contextmanager
def _swap_param(param: torch.nn.Parameter, edit: Callable[[torch.Tensor], None]) -> Iterator[None]:
    original = param.detach().clone()
    with torch.no_grad():
        edit(param.data)
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(original)


@contextlib.contextmanager
def _set_attr(obj, name: str, value) -> Iterator[None]:
    """Set an attribute (also on frozen dataclasses) and restore exactly what was there."""
    had_own = name in vars(obj)
    old = vars(obj).get(name, None) if had_own else getattr(obj, name)
    setter = setattr if isinstance(obj, torch.nn.Module) else object.__setattr__
    setter(obj, name, value)
    try:
        yield
    finally:
        if had_own or isinstance(getattr(type(obj), name, None), property) or name in getattr(obj, "_modules", {}):
            setter(obj, name, old)
        elif isinstance(obj, torch.nn.Module) and name in getattr(obj, "_modules", {}):
            setter(obj, name, old)
        else:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                setter(obj, name, old)


def _swap_rows(a: slice, b: slice):
    def edit(w):
        tmp = w[a].clone()
        w[a] = w[b]
        w[b] = tmp
    return edit


# --- faults --------------------------------------------------------------------------------

def rope_theta(m):
    tc = m.config.talker.transformer
    return _set_attr(m.talker, "inv_freq", rope_inv_freq(tc.head_dim, tc.rope_theta * 10))


def swapped_qk(m):
    attn = m.talker.decoder.layers[1].attn
    kv = attn.kv_size
    return _swap_param(attn.wqkv.weight, _swap_rows(slice(0, kv), slice(attn.q_size, attn.q_size + kv)))


def rmsnorm_eps(m):
    return _set_attr(m.talker.decoder.layers[0].attn_norm, "eps", 1e-3)


def skipped_q_norm(m):
    return _set_attr(m.talker.decoder.layers[1].attn, "q_norm", torch.nn.Identity())


def mrope_split(m):
    # The same sections laid out contiguously (Qwen2-VL style) instead of interleaved.
    t = m.config.talker
    return _set_attr(m.talker, "mrope_rows", mrope_row_index(t.mrope_section, not t.mrope_interleaved))


def gate_up_swapped(m):
    mlp = m.talker.decoder.layers[0].mlp
    h = mlp.hidden
    return _swap_param(mlp.w_gate_up.weight, _swap_rows(slice(0, h), slice(h, 2 * h)))


def head_swapped(m):
    return _swap_param(m.code_predictor.heads, _swap_rows(slice(0, 1), slice(1, 2)))


def cp_projection_bias(m):
    return _swap_param(m.code_predictor.input_projection.bias, lambda b: b.zero_())


def cp_rope_theta(m):
    tc = m.config.talker.code_predictor.transformer
    m.code_predictor._rope_cache.clear()
    stack = contextlib.ExitStack()
    stack.enter_context(_set_attr(m.code_predictor, "inv_freq", rope_inv_freq(tc.head_dim, tc.rope_theta / 100)))
    stack.callback(m.code_predictor._rope_cache.clear)
    return stack


def text_projection_gelu(m):
    proj = m.talker.text_projection
    return _set_attr(proj, "forward", lambda x: proj.fc2(F.gelu(proj.fc1(x))))


def padded_position_off_by_one(m):
    # RoPE only sees position differences, so a prefill shifted as a whole is invisible; the bug
    # shows when the decode steps continue from the unshifted count.
    def shifted(mask):
        padded_rows = (mask == 0).any(dim=-1, keepdim=True)
        pos = mask.float().cumsum(-1) - 1 + padded_rows.float()  # one too far in padded rows
        return pos.masked_fill(mask == 0, 1).unsqueeze(0).expand(3, -1, -1)
    return mock.patch.object(gen_mod, "mrope_positions", shifted)


def mel_wrong_hop(m):
    return mock.patch.object(model_mod, "log_mel_spectrogram", lambda audio, **kw: log_mel_spectrogram(audio, **{**kw, "hop": 240}))


def se_gate_skipped(m):
    se = m.speaker_encoder.blocks[1].se_block
    return _set_attr(se, "forward", lambda x: x)


def temperature_after_filters(m):
    def fn(logits, generated, params, suppress_mask=None):
        scores = constrain_logits(logits, generated, params, suppress_mask)
        if not params.do_sample:
            return torch.argmax(scores, dim=-1)
        filtered = warp_logits(scores, dataclasses.replace(params, temperature=1.0))  # filters first ...
        if params.temperature not in (None, 1.0):
            filtered = filtered / params.temperature  # ... temperature last
        return torch.multinomial(torch.softmax(filtered, dim=-1), num_samples=1).squeeze(1)
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(gen_mod, "sample_next_token", fn))
    stack.enter_context(mock.patch.object(talker_mod, "sample_next_token", fn))
    return stack


def penalty_whole_history(m):
    groups = m.config.talker.num_code_groups
    history: list[torch.Tensor] = []

    def fn(logits, generated, params, suppress_mask=None):
        if len(history) == groups - 1:
            history.clear()
        hist = torch.stack(history, dim=1) if history else None
        token = sample_next_token(logits, hist, dataclasses.replace(params, repetition_penalty=1.05), suppress_mask)
        history.append(token)
        return token
    return mock.patch.object(talker_mod, "sample_next_token", fn)


def min_new_tokens_ignored(m):
    real = gen_mod.generate_codes

    def fn(model, prompt, params, progress=False):
        return real(model, prompt, dataclasses.replace(params, min_new_tokens=0), progress)
    return mock.patch.object(model_mod, "generate_codes", fn)


def dialect_ignored(m):
    spk = m.config.talker.spk_is_dialect
    return _set_attr(m.config.talker, "spk_is_dialect", {k: False for k in spk})


def trailing_text_offset(m):
    real = prompt_mod.build_talker_prompt

    def fn(*a, **k):
        p = real(*a, **k)
        p.trailing_text = torch.cat([p.trailing_text[:, 1:], p.trailing_text[:, -1:]], dim=1)
        return p
    return mock.patch.object(model_mod, "build_talker_prompt", fn)


def snake_without_exp(m):
    def forward(self, x):
        return x + (1.0 / (self.beta.unsqueeze(0).unsqueeze(-1) + 1e-9)) * torch.pow(torch.sin(x * torch.exp(self.alpha.unsqueeze(0).unsqueeze(-1))), 2)
    return mock.patch.object(codec_mod.SnakeBeta, "forward", forward)


def chunk_context(m):
    real = codec_mod.CodecDecoder.chunked

    def chunked(self, codes, chunk_size=300, left_context=25):
        return real(self, codes, chunk_size, left_context - 1)
    return mock.patch.object(codec_mod.CodecDecoder, "chunked", chunked)


def codec_window(m):
    return _set_attr(m.codec.transformer, "window", m.codec.transformer.window + 8)


CATALOGUE: tuple[Fault, ...] = (
    Fault("rope_theta", "talker RoPE theta x10", "custom_voice", "talker", "talker.layers.0", rope_theta),
    Fault("swapped_qk", "q and k projection rows swapped in talker layer 1", "custom_voice", "talker", "talker.layers.1", swapped_qk),
    Fault("rmsnorm_eps", "RMSNorm eps 1e-3 instead of 1e-6 (talker layer 0)", "custom_voice", "talker", "talker.layers.0", rmsnorm_eps),
    Fault("skipped_q_norm", "q_norm skipped in talker layer 1", "custom_voice", "talker", "talker.layers.1", skipped_q_norm),
    Fault("mrope_split", "M-RoPE sections laid out contiguously instead of interleaved", "custom_voice", "talker", "talker.layers.0", mrope_split),
    Fault("gate_up_swapped", "SwiGLU gate and up swapped (talker layer 0)", "custom_voice", "talker", "talker.layers.0", gate_up_swapped),
    Fault("padded_position", "prefill positions off by one after left padding", "custom_voice", "generation", None,
          padded_position_off_by_one),
    Fault("head_swapped", "code-predictor heads of groups 1 and 2 swapped", "custom_voice", "code_predictor",
          ("code_predictor.heads[0]", "code_predictor.heads[1]"), head_swapped),
    Fault("cp_projection_bias", "code-predictor input projection bias dropped", "custom_voice", "code_predictor",
          "code_predictor.layers.0", cp_projection_bias),
    Fault("cp_rope_theta", "code-predictor RoPE theta / 100", "custom_voice", "code_predictor", "code_predictor.layers.0", cp_rope_theta),
    Fault("text_projection_gelu", "text projection with GELU instead of SiLU", "voice_design", "text_projection", None,
          text_projection_gelu),
    Fault("mel_hop", "speaker mel with hop 240 instead of 256", "base", "speaker_encoder", "speaker_encoder.blocks.0", mel_wrong_hop),
    Fault("se_gate", "squeeze-excitation gate skipped in speaker block 1", "base", "speaker_encoder", "speaker_encoder.blocks.1",
          se_gate_skipped),
    Fault("temperature_after_filters", "temperature applied after top-k/top-p", "custom_voice", "generation", None,
          temperature_after_filters),
    Fault("penalty_whole_history", "repetition penalty over the whole history (code-predictor groups too)", "custom_voice",
          "generation", None, penalty_whole_history),
    Fault("min_new_tokens", "EOS allowed from the first frame", "voice_design", "generation", None, min_new_tokens_ignored),
    Fault("dialect_ignored", "dialect speaker's language override dropped", "custom_voice", "generation", None, dialect_ignored),
    Fault("trailing_text", "streaming text fed one step early", "base", "generation", None, trailing_text_offset),
    Fault("snake_exp", "SnakeBeta without exp() on beta", "base", "codec", None, snake_without_exp),
    Fault("chunk_context", "24 frames of left context instead of 25", "base", "codec", None, chunk_context),
    Fault("codec_window", "sliding window 80 instead of 72", "base", "codec", None, codec_window),
)


@dataclass
class FaultResult:
    fault: str
    description: str
    detected: bool
    component_named: bool
    layer_named: bool | None
    failing_components: list[str]
    reported_layers: list[str]

    @property
    def ok(self) -> bool:
        return self.detected and self.component_named and self.layer_named is not False


def run_fault(fault: Fault, wrapper, standalone, seeds: list[int], frames: int, cache_key: str) -> FaultResult:
    from .suite import run_suite

    with fault.inject(standalone):
        results = run_suite(wrapper, standalone, standalone.config.tts_model_type, torch.float32, seeds, frames, cache_key)
    failed = [r for r in results if not r.passed]
    components = sorted({r.component for r in failed})
    layers = [r.first_bad_layer for r in failed if r.kind == "forward" and r.first_bad_layer]
    accepted = (fault.layer,) if isinstance(fault.layer, str) else fault.layer
    layer_named = None if accepted is None else bool(layers) and all(l in accepted for l in layers)
    return FaultResult(fault.name, fault.description, bool(failed), fault.component in components, layer_named,
                       components, sorted(set(layers)))
