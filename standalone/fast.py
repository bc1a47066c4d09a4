"""The compiled fast path: the gpt-fast recipe over the exact path's own weights.

The exact path (generation.generate_codes with talker.py's modules) calls upstream's kernels with
upstream's call shapes and is bit-identical to upstream. This module is a second mode: the same
decode loop (generation.generate_codes, so the same sampling, EOS and RNG consumption order), but
the talker's prompt prefill and the two per-frame workloads run through torch.compile'd graphs:

- the talker's one-token step (layers + final norm + codec head), attending over a static KV
  cache through a window whose length grows in blocks of ``window_block`` positions. The window
  length is a dynamic dimension, so one graph serves every length;
- the code predictor's whole frame (PredictorFrameGraph): the 2-position prefill and the 14 single
  steps unrolled into one graph, each step's head, code pick and embedding inside it. The pick is
  an opaque op (frame_pick.pick_code) that runs the decode loop's one sampling function eagerly,
  so the sampling numbers and the RNG draws are the exact path's. Per frame the engine makes two
  graph calls (talker step, code-predictor frame), not 16: the work outside them fell from
  5.3-6.7 ms (6.2-9.1%) to 0.8-1.5 ms (1.3-2.4%) of a 0.6B frame (reports/frame-graph).

Linears over one or two rows (the decode steps at batch 1 or 2) run as reductions inductor
generates rather than through torch's GEMM (``gemv``, ``GEMV_MAX_ROWS``): on CPUs without AMX
the GEMM kernels are compute-bound at one row and stream the weights at half the rate
(bench/linear_m1.py, reports/linear-m1).

Weights stay the modules' own parameters (no copy in the model), read by the graphs as inputs:
no inductor ``freezing`` (see COMPILE_OPTIONS), so a weight changed after compiling is the weight
the next call runs, and a cached graph is right for any checkpoint of the same config
(tests/test_fast_cache.py). The graphs never write the KV caches: they return the new keys/values
and the engine stores them (an in-place write into a view of a graph input made inductor copy the
whole cache per layer). bench/step.py and reports/step-bench.md hold the profile behind these
choices: on torch 2.9.1 the compiled 0.6B steps stream fp32 weights at ~25 GB/s (eager ~21).

The prompt prefill runs eagerly by default (talker.step, exactly as the exact path). A compiled
prefill (``compile_prefill=True``: ``PrefillGraph``, one graph over a dynamic prompt length, no
bucket padding) was measured at 0.6B: about 20 ms off a 24-position prefill (212 -> 191 ms fp32,
93 -> 73 ms bf16), nothing at 160 positions (a prompt is compute-bound, not weight-bound), and 55 s
more first-start compile (warm-up 125 s against 69 s): worth it only where the first frame's
latency matters more than the start.

Numbers differ from upstream in the last bits (other GEMM blocking, fused qkv and gate/up, fp32
softmax over a masked window instead of SDPA): verify/cases/fast.py measures by how much.

Compiled graphs are cached on disk (``compile_cache_dir``: Q3TTS_COMPILE_CACHE, else
TORCHINDUCTOR_CACHE_DIR, else ~/.cache/q3tts/torchinductor): each graph is saved whole after its
first compile (precompiled.py), so a later process start loads it without running dynamo over the
Python again (0.6B second start 7.5-8.5 s -> 0.8-2.2 s per engine, reports/precompiled);
``precompile=False`` is plain torch.compile, whose start still re-traces. Both are keyed on the
graph and the weights' shapes, never their values: a hit runs the loading process's own weights
(tests/test_fast_cache.py loads another checkpoint into a warm cache). ``FastEngine.warm_up``
compiles every graph before the first request.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .frame_pick import pick_code, pick_knobs
from .kv_cache import KVCache
from .layers import DecoderLayer, rope_cos_sin
from .precompiled import PrecompiledGraph
from .quant import WeightOnlyLinear
from .sampling import SamplingParams
from .talker import CodePredictor, DecoderStack, Talker
from .vec_isa_memo import remember_vec_isa_checks

CACHE_ENV = "Q3TTS_COMPILE_CACHE"


def compile_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where compiled graphs are cached: ``cache_dir``, else $Q3TTS_COMPILE_CACHE, else an
    inductor cache the user already chose ($TORCHINDUCTOR_CACHE_DIR), else
    $XDG_CACHE_HOME/q3tts/torchinductor (~/.cache/...): persistent, unlike inductor's own
    default under /tmp. Always absolute: inductor runs the C++ compiler in another working
    directory, so a relative cache path failed every compile ("cc1plus: ... No such file")."""
    for choice in (cache_dir, os.environ.get(CACHE_ENV), os.environ.get("TORCHINDUCTOR_CACHE_DIR")):
        if choice:
            return Path(choice).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "q3tts" / "torchinductor").absolute()


def use_compile_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Point inductor's on-disk caches at ``compile_cache_dir(cache_dir)`` (process-wide: inductor
    reads TORCHINDUCTOR_CACHE_DIR; its in-memory caches are cleared when the directory changes)."""
    path = compile_cache_dir(cache_dir)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(path):
        from torch._inductor.utils import clear_caches

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
        clear_caches()
    remember_vec_isa_checks()
    return path


# Inductor options of the fast path: inductor's defaults. max-autotune only autotunes the attention
# bmm (not the M=1 linears) and costs minutes of compile (bench/step.py). ``freezing`` (weights as
# constants) was the default until the one-row linears became reductions (gemv): measured at 0.6B
# on an AMD EPYC, 2 threads, 32 frames, second start (reports/fast-compile-cache.md), it decodes no
# faster (bf16 158-166 against 162 ms/frame without; int4 94-101 against 83-95) or slower (int8
# 198-209 against 139-160: it folds the dequantised weights into 16-bit constants), and it costs the
# second start 36-47 s against 11 s: torch 2.9.1 bypasses the AOTAutograd cache for frozen graphs.
COMPILE_OPTIONS: dict = {}


def _attention(q, k_new, v_new, k_cache, v_cache, cache_mask, scale: float):
    """q [B, H, S, D] over the cached positions k/v_cache [B, KV, W, D] (cache_mask [B|1, 1, S, W]
    bool, True = attend) and, causally, over the S new positions k/v_new [B, KV, S, D].

    The new keys/values are not written into the cache inside the graph: an in-place write into a
    view of a graph input makes inductor copy the whole cache tensor per layer (measured: 28 full
    copies of the talker cache per step), so the caller writes them afterwards. Grouped-query
    attention without repeating k/v (head i uses kv head i // (H/KV), as repeat_interleave).
    Scores, softmax and the weighted sum in fp32, as reductions inductor fuses (_scores, _mix)."""
    bsz, n_heads, seqlen, head_dim = q.shape
    n_kv = k_new.shape[1]
    rep = n_heads // n_kv
    qg = q.reshape(bsz, n_kv, rep * seqlen, head_dim)
    old = _scores(qg, k_cache) * scale  # [B, KV, rep*S, W]
    old = old.view(bsz, n_kv, rep, seqlen, -1).masked_fill(~cache_mask[:, :, None], float("-inf"))
    new = _scores(qg, k_new) * scale  # [B, KV, rep*S, S]
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=q.device).tril()
    new = new.view(bsz, n_kv, rep, seqlen, seqlen).masked_fill(~causal, float("-inf"))
    probs = torch.softmax(torch.cat((old, new), dim=-1), dim=-1)
    p_old, p_new = probs.view(bsz, n_kv, rep * seqlen, -1).split((old.shape[-1], seqlen), dim=-1)
    out = _mix(p_old, v_cache) + _mix(p_new, v_new)
    return out.to(v_new.dtype).view(bsz, n_heads, seqlen, head_dim)


def _attention_over_all(q, k, v, scale: float):
    """q [B, H, S, D] over keys/values k/v [B, KV, W, D] whose last S positions are q's own
    (causal among them, every earlier position seen): the code predictor's frame, whose 16
    positions stay inside one graph. Grouped-query and fp32 as _attention."""
    bsz, n_heads, seqlen, head_dim = q.shape
    n_kv, width = k.shape[1], k.shape[2]
    rep = n_heads // n_kv
    qg = q.reshape(bsz, n_kv, rep * seqlen, head_dim)
    scores = _scores(qg, k) * scale  # [B, KV, rep*S, W]
    if seqlen > 1:
        seen = torch.arange(width, device=q.device) <= torch.arange(width - seqlen, width, device=q.device)[:, None]
        scores = scores.view(bsz, n_kv, rep, seqlen, width).masked_fill(~seen, float("-inf")).flatten(2, 3)
    probs = torch.softmax(scores, dim=-1)
    return _mix(probs, v).to(v.dtype).view(bsz, n_heads, seqlen, head_dim)


# A decode step's attention is a handful of query rows (heads per kv head x new positions) over a
# short window. As batched matmuls (torch's bmm) each product cost tens of µs of dispatch and copies
# whatever its size, three per layer; as reductions inductor fuses them into the layer's kernels.
# Measured by bench/attention.py (reports/attention-reductions: 0.6B, AMD EPYC, 2 threads, medians):
# code predictor frame 76.8 -> 68.4 ms (bf16+int4) and 127.4 -> 104.9 ms (bf16); talker step over
# 150 positions 28.1 -> 23.1 and 40.9 -> 35.2 ms. The products stay in fp32 (probabilities included).
def _scores(q, k):
    """q [B, KV, R, D] . k [B, KV, W, D] over D -> [B, KV, R, W], fp32-accumulated."""
    return (q.float().unsqueeze(-2) * k.float().unsqueeze(-3)).sum(-1)


def _mix(p, v):
    """p [B, KV, R, W] (fp32) weighting v [B, KV, W, D] over W -> [B, KV, R, D] in fp32."""
    return (p.unsqueeze(-1) * v.float().unsqueeze(-3)).sum(-2)


def _rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _prompt_attention(q, k, v, mask, scale: float):
    """The prompt prefill's attention: q/k/v [B, H|KV, S, D] over the S prompt positions only,
    under ``mask`` [B, 1, S, S] bool (causal, padded keys hidden, each row sees itself:
    layers.padding_mask). Grouped-query as _attention; softmax in fp32."""
    bsz, n_heads, seqlen, head_dim = q.shape
    n_kv = k.shape[1]
    rep = n_heads // n_kv
    qg = q.reshape(bsz, n_kv, rep * seqlen, head_dim)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # [B, KV, rep*S, S]
    scores = scores.view(bsz, n_kv, rep, seqlen, seqlen).masked_fill(~mask[:, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(bsz, n_kv, rep * seqlen, seqlen)
    return torch.matmul(probs, v).view(bsz, n_heads, seqlen, head_dim)


# A linear over at most this many rows (batch x positions) runs as a reduction inductor generates
# (gemv) instead of the GEMM call torch dispatches (MKL / oneDNN, or the packed int8 kernel). At one
# row those kernels are compute-bound per core on CPUs without AMX; inductor's vectorised loop
# streams the weight at about twice the rate. Measured by bench/linear_m1.py (reports/linear-m1:
# the 0.6B code predictor's linear stack, 2 threads, AMD EPYC), ms per pass, reduction vs GEMM:
# bf16 8.0 vs 15.1 at one row, 10.5 vs 15.4 at two, 16.4 vs 14.4 at four (hence 2); fp32 11.6 vs
# 31.3; int8 codes 3.5 vs 7.4.
GEMV_MAX_ROWS = 2


@torch.library.custom_op("q3tts::materialize_fp32", mutates_args=())
def materialize_fp32(x: torch.Tensor) -> torch.Tensor:
    """A copy of x in fp32, written to memory once. Inside a compiled graph this is an opaque call,
    so inductor cannot inline the computation of x (an RMSNorm, silu(gate) * up, a cast) into the
    reduction that reads it: inlined, each of a linear's N output rows recomputed its input over all
    K columns. Measured on an RMSNorm followed by a one-row 6144 x 1024 linear (AMD EPYC, 2 threads):
    205.5 -> 111.2 µs with bf16 weights, 211.0 -> 124.1 µs with int8 codes. In whole 0.6B frames it
    was shown to pay for int8 only (decode loop, fresh processes: bf16+int8 99.4 -> 53.3 ms/frame; bf16
    88.4 with it against 76.8-87.3 without), so gemv materializes int8 inputs, and every input only in the code
    predictor's unrolled frame graph, where bf16 slowed without it (PredictorFrameGraph; reports/int8-materialize)."""
    return x.to(torch.float32, copy=True)


@materialize_fp32.register_fake
def _materialize_fp32_shape(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, dtype=torch.float32)


def gemv(x, weight, scales=None, bias=None, materialize: bool = False):
    """x [.., K] @ weight[N, K].T as one fp32-accumulated reduction over K, returned in x's dtype.
    With ``scales`` [N, G] the weight is int8 codes and each group of K / G inputs is scaled by its
    own (quant.quantize_int8): the scale multiplies each code inside the one reduction (measured on a
    one-row 6144 x 1024 linear after an RMSNorm, AMD EPYC, 2 threads: 135 µs against 213 µs summing
    each group first, 161 µs with bf16 scales, 127 µs with one scale per row; bench/int8_groups.py,
    reports/int8-groups). For int8 codes x is materialized in fp32 first (materialize_fp32), so the
    loop streams the codes against a ready input; other weights' inputs too with ``materialize``
    (the code predictor's frame graph, PredictorFrameGraph)."""
    if scales is None:
        xf = materialize_fp32(x) if materialize else x.float()
        out = (xf.unsqueeze(-2) * weight.float()).sum(-1)
    else:
        n, k = weight.shape
        groups = scales.shape[-1]
        xg = materialize_fp32(x).unflatten(-1, (1, groups, k // groups))  # [.., 1, G, K/G]
        out = (xg * weight.view(n, groups, k // groups).float() * scales.float()[..., None]).sum((-1, -2))
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def _few_rows(x) -> bool:
    """Whether x [.., K] has at most GEMV_MAX_ROWS rows (decided when the graph is traced)."""
    return x.numel() // x.shape[-1] <= GEMV_MAX_ROWS


def _matmul(x, weight, bias=None, materialize: bool = False):
    """x @ weight.T (+ bias): a reduction over at most GEMV_MAX_ROWS rows, else torch's GEMM."""
    if _few_rows(x):
        return gemv(x, weight, bias=bias, materialize=materialize)
    return F.linear(x, weight, bias)


def decode_linear(linear: nn.Module, x, materialize: bool = False):
    """One of the exact path's linears: a fused projection in one matmul (the exact path's
    split_linear makes one per block), or a weight-only quantized one (quant.py), int8 as a
    reduction over few rows like the plain weights and int4 through its packed kernel (the
    fastest at any row count). ``materialize``: see gemv."""
    if isinstance(linear, WeightOnlyLinear):
        if linear.mode.bits == 8 and _few_rows(x):
            return gemv(x, linear.packed, linear.scales)
        return linear(x)
    return _matmul(x, linear.weight, linear.bias, materialize)


def _layer_step(layer: DecoderLayer, x, cos, sin, attend, materialize: bool = False):
    """One decoder layer over x [B, S, H]; ``attend(q, k, v)`` -> [B, H, S, D] is the attention
    (over a cache and the new positions, or over the prompt alone). Returns (x, k, v), k/v
    [B, KV, S, D] being what the caller must store at the S positions. ``materialize``: see gemv."""
    attn = layer.attn
    bsz, seqlen, _ = x.shape
    h = layer.attn_norm(x)
    q, k, v = decode_linear(attn.wqkv, h, materialize).split((attn.q_size, attn.kv_size, attn.kv_size), dim=-1)
    q = attn.q_norm(q.view(bsz, seqlen, attn.n_heads, attn.head_dim))
    k = attn.k_norm(k.view(bsz, seqlen, attn.n_kv_heads, attn.head_dim))
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q = _rotate(q.transpose(1, 2), cos, sin)
    k = _rotate(k.transpose(1, 2), cos, sin)
    v = v.view(bsz, seqlen, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
    out = attend(q, k, v)
    x = x + decode_linear(attn.wo, out.transpose(1, 2).reshape(bsz, seqlen, attn.q_size), materialize)
    gate, up = decode_linear(layer.mlp.w_gate_up, layer.mlp_norm(x), materialize).chunk(2, dim=-1)
    return x + decode_linear(layer.mlp.w_down, F.silu(gate) * up, materialize), k, v


class DecodeGraph(nn.Module):
    """What one compiled graph runs: decoder layers -> final norm -> [head].
    Holds the exact path's modules (shared parameters, nothing copied). Reads the caches k/v_all
    [L, B, KV, >=W, D] over the first W = cache_mask.shape[-1] positions and returns the new
    keys/values [L, B, KV, S, D] for the caller to store (store_new)."""

    def __init__(self, decoder: DecoderStack, head: nn.Module | None = None):
        super().__init__()
        self.decoder = decoder
        self.head = head

    def forward(self, x, cos, sin, k_all, v_all, cache_mask):
        window = cache_mask.shape[-1]
        ks, vs = [], []
        for i, layer in enumerate(self.decoder.layers):
            k_cache, v_cache = k_all[i, :, :, :window], v_all[i, :, :, :window]
            scale = layer.attn.head_dim**-0.5

            def attend(q, k, v, k_cache=k_cache, v_cache=v_cache, scale=scale):
                return _attention(q, k, v, k_cache, v_cache, cache_mask, scale)

            x, k, v = _layer_step(layer, x, cos, sin, attend)
            ks.append(k)
            vs.append(v)
        h = self.decoder.norm(x)
        return h, (decode_linear(self.head, h) if self.head is not None else None), torch.stack(ks), torch.stack(vs)


class PredictorFrameGraph(nn.Module):
    """The code predictor's whole frame as one graph: the 2-position prefill over ``prefix`` [B, 2, H]
    = [talker hidden, e0] and the single steps of groups 2..G-1, unrolled, each with its group's head, the pick of
    its code (frame_pick.pick_code: the decode loop's sampling function, or the forced code) and
    that code's embedding feeding the next step. The frame's keys/values live inside the graph
    (16 positions, appended per step), so no cache is read or stored between calls.

    Returns (codes [B, G-1] int64, logits [B, G-1, V] of groups 1..G-1). ``cos``/``sin`` [1, G, D]
    are the frame's positions 0..G-1 (FastEngine._frame_rope); ``knobs`` (frame_pick.pick_knobs)
    and ``forced`` [B, G-1] choose how codes are picked, as data, so one graph serves sampling,
    greedy decoding and teacher forcing.

    Every linear's input is materialized (gemv's ``materialize``): unrolled, inductor otherwise
    recomputed 16-bit inputs inside each reduction, and bf16 frames slowed from 76.7-88.8 to
    99.6-116.9 ms (0.6B, reports/frame-graph/reading.md)."""

    def __init__(self, code_predictor: CodePredictor):
        super().__init__()
        self.decoder = code_predictor.decoder
        self.projection = code_predictor.input_projection
        self.embeddings, self.heads = code_predictor.codec_embeddings, code_predictor.heads

    def forward(self, prefix, cos, sin, knobs, forced):
        x = prefix
        keys: list = [None] * len(self.decoder.layers)
        values: list = [None] * len(self.decoder.layers)
        codes, logits = [], []
        start = 0
        for group in range(1, self.heads.shape[0] + 1):
            if self.projection is not None:
                x = decode_linear(self.projection, x, materialize=True)
            end = start + x.shape[1]
            h = self._new_positions(x, cos[:, start:end], sin[:, start:end], keys, values)
            logits.append(_matmul(h[:, -1], self.heads[group - 1], materialize=True))
            codes.append(pick_code(logits[-1], knobs, forced, group))
            if group < self.heads.shape[0]:  # the last group's code feeds no step
                x = F.embedding(codes[-1][:, None], self.embeddings[group - 1])
            start = end
        return torch.stack(codes, dim=1), torch.stack(logits, dim=1)

    def _new_positions(self, x, cos, sin, keys: list, values: list):
        """The decoder over the new positions x [B, S, H] (S = 2 at the prefill, else 1), each layer
        attending over its earlier positions' keys[i]/values[i] [B, KV, start, D] (None at the
        prefill) and its own; the new keys/values are appended to the lists. Returns the final
        norm's output."""
        for i, layer in enumerate(self.decoder.layers):
            scale = layer.attn.head_dim**-0.5

            def attend(q, k, v, i=i, scale=scale):
                if keys[i] is not None:
                    k, v = torch.cat((keys[i], k), dim=2), torch.cat((values[i], v), dim=2)
                keys[i], values[i] = k, v
                return _attention_over_all(q, k, v, scale)

            x, _, _ = _layer_step(layer, x, cos, sin, attend, materialize=True)
        return self.decoder.norm(x)


class PrefillGraph(nn.Module):
    """The talker's prompt prefill as one graph: decoder layers over the whole prompt (no cache to
    read) -> final norm -> codec head. The prompt length is a dynamic dimension, so one graph
    serves every length; returns the prompt's keys/values [L, B, KV, S, D] for the caller to store."""

    def __init__(self, decoder: DecoderStack, head: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.head = head

    def forward(self, x, cos, sin, mask):
        ks, vs = [], []
        for layer in self.decoder.layers:
            scale = layer.attn.head_dim**-0.5
            x, k, v = _layer_step(
                layer, x, cos, sin, lambda q, k, v, scale=scale: _prompt_attention(q, k, v, mask, scale)
            )
            ks.append(k)
            vs.append(v)
        h = self.decoder.norm(x)
        return h, decode_linear(self.head, h), torch.stack(ks), torch.stack(vs)


def store_new(cache: KVCache, start: int, k_new, v_new) -> None:
    """Write a graph's new keys/values [L, B, KV, S, D] at positions start..start+S-1."""
    end = start + k_new.shape[3]
    if end > cache.max_len:
        cache.grow(end)
    cache.k[:, :, :, start:end] = k_new
    cache.v[:, :, :, start:end] = v_new


class FastEngine:
    """The compiled talker step and code-predictor frame of one model, plugged into
    generation.generate_codes (``engine=``). Build it through ``Qwen3TTS.compile_fast``.

    Compilation happens on first use per batch size and dtype (tens of seconds at 0.6B on two
    cores), or ahead of the first request with ``warm_up``; ``compile_seconds`` records the time
    spent (each graph's first call). ``cache_dir``: see compile_cache_dir.
    """

    def __init__(
        self,
        talker: Talker,
        code_predictor: CodePredictor,
        window_block: int = 64,
        options: dict | None = None,
        compile: bool = True,
        cache_dir: str | os.PathLike | None = None,
        compile_prefill: bool = False,
        precompile: bool = True,
    ):
        self.talker, self.cp = talker, code_predictor
        self.cache_dir = use_compile_cache(cache_dir) if compile else None
        # With precompile=False every engine adds graphs (one per batch size) to the same forward code object;
        # past dynamo's default limit of 8 it would silently run the rest eagerly (_timed raises
        # instead when the limit is reached).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.window_block = window_block
        opts = self.options = dict(COMPILE_OPTIONS if options is None else options)
        # Each graph saved whole after its first compile (precompiled.py: a later start skips dynamo's
        # trace, 7.1 -> 0.7 s for the 0.6B code-predictor frame); precompile=False is plain torch.compile.
        if compile and precompile:
            wrap = lambda m: PrecompiledGraph(m, opts, self.cache_dir)  # noqa: E731
        elif compile:
            wrap = lambda m: torch.compile(m, dynamic=False, options=opts)  # noqa: E731
        else:
            wrap = lambda m: m  # noqa: E731
        self._talker_step = wrap(DecodeGraph(talker.decoder, head=talker.codec_head))
        # The prompt prefill: eager by default (see the module docstring for the measured trade). A
        # weight-only quantized talker (quant.py) has no weight for the exact path's Talker.step: its
        # eager prefill is PrefillGraph uncompiled, through the quantized kernels.
        prefill = PrefillGraph(talker.decoder, talker.codec_head)
        quantized = any(isinstance(m, WeightOnlyLinear) for m in talker.decoder.modules())
        self._talker_prefill = wrap(prefill) if compile_prefill else (prefill if quantized else None)
        self._prefill_compiled = compile and compile_prefill
        # The code predictor's whole frame, sampling included: one graph per batch size.
        self._cp_graph = wrap(PredictorFrameGraph(code_predictor))
        self._cp_rope: dict = {}
        self._unforced: dict = {}
        self.compile_seconds = 0.0
        self._warm: set = set()

    @torch.inference_mode()
    def warm_up(self, batch_sizes=(1,)) -> float:
        """Compile (or load from the cache) every graph a generation of these batch sizes runs:
        the talker's step (and prompt prefill with ``compile_prefill``) and the code predictor's
        prefill and step, with the inputs' dtypes,
        shapes and grad mode of the decode loop (generation.iter_frames runs in inference mode).
        Afterwards no generation of these batch sizes compiles anything, whatever its prompt
        length or number of frames (tests/test_fast_warmup.py). Returns the seconds it took."""
        sizes = tuple(batch_sizes) if isinstance(batch_sizes, (tuple, list)) else None
        if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
            raise ValueError(f"batch_sizes must be a tuple of positive integers, got {batch_sizes!r}")
        t0 = time.perf_counter()
        tcfg = self.talker.cfg
        param = next(self.talker.parameters())
        dtype, device = param.dtype, param.device
        for bsz in sizes:
            hidden = torch.zeros(bsz, 1, tcfg.transformer.hidden_size, dtype=dtype, device=device)
            start = 3  # a 3-position prompt, then a step in a window of one block of a two-block cache
            cache = self.talker.decoder.new_cache(
                tcfg.transformer, bsz, self.talker_cache_len(start + 1), dtype, device
            )
            prompt = torch.zeros(bsz, start, tcfg.transformer.hidden_size, dtype=dtype, device=device)
            self.talker_prefill(prompt, torch.arange(start, device=device).float().expand(3, bsz, start), None, cache)
            # (eager unless compile_prefill: then nothing to compile, and the call costs milliseconds)
            positions = torch.full((3, bsz, 1), float(start), device=device)
            self.talker_step(hidden, positions, None, cache, start)
            self._frame(hidden, hidden, pick_knobs(None), self._no_codes(bsz, device))  # teacher-forced: no draw
        return time.perf_counter() - t0

    # --- the talker's prompt prefill -------------------------------------------------------------
    @property
    def compiles_prefill(self) -> bool:
        """Whether the prompt prefill runs through PrefillGraph (compiled with ``compile_prefill``
        unless ``compile=False``, eager for a quantized talker) rather than the exact path's eager
        Talker.step, whose logits are upstream's bit for bit."""
        return self._talker_prefill is not None

    def talker_prefill(self, x, positions, mask, cache: KVCache):
        """Same contract as Talker.step over the whole prompt at start 0: x [B, L, H], M-RoPE
        positions [3, B, L], mask None (no padding) or bool [B, 1, L, L] (layers.padding_mask).
        Returns (hidden, logits) of every position and stores the prompt's keys/values. Eager
        (the exact path's Talker.step) unless the engine was built with ``compile_prefill`` or the
        talker is quantized (then PrefillGraph, eager)."""
        if self._talker_prefill is None:
            return self.talker.step(x, positions, mask, cache, 0)
        bsz, length = x.shape[:2]
        if length < 2 and self._prefill_compiled:  # dynamo specialises lengths 0 and 1; a prompt is never that short
            raise ValueError(f"the fast prefill needs a prompt of at least 2 positions, got {length}")
        cos, sin = rope_cos_sin(self.talker.inv_freq, positions, x.dtype, self.talker.mrope_rows)
        if mask is None:  # one graph for padded and unpadded batches: always a [B, 1, L, L] mask
            mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril().expand(bsz, 1, length, length)
        mask = mask.expand(bsz, 1, length, length).contiguous()
        for t, dims in ((x, (1,)), (cos, (1,)), (sin, (1,)), (mask, (2, 3))):
            for d in dims:
                torch._dynamo.mark_dynamic(t, d)
        h, logits, k_new, v_new = self._timed(("talker_prefill", bsz), self._talker_prefill, x, cos, sin, mask)
        store_new(cache, 0, k_new, v_new)
        return h, logits

    # --- the talker's one-token step ------------------------------------------------------------
    def talker_cache_len(self, needed: int) -> int:
        """Talker cache length for ``needed`` positions: a block longer than the largest window,
        so the window never spans the whole cache (dynamo would specialise that case into a
        second graph)."""
        return -(-needed // self.window_block) * self.window_block + self.window_block

    def talker_step(self, x, positions, mask, cache: KVCache, start: int):
        """Same contract as Talker.step for one new token at ``start``: x [B, 1, H], M-RoPE
        positions [3, B, 1], mask None or bool [B, 1, 1, start + 1]. Returns (hidden, logits)."""
        bsz = x.shape[0]
        cos, sin = rope_cos_sin(self.talker.inv_freq, positions, x.dtype, self.talker.mrope_rows)
        window = max(1, -(-start // self.window_block)) * self.window_block
        if window >= cache.max_len:  # the loop's buffers grow as frames come; keep a block spare
            cache.grow(window + self.window_block)
        attend = torch.zeros(bsz, 1, 1, window, dtype=torch.bool, device=x.device)
        attend[..., :start] = True if mask is None else mask[..., :start]
        torch._dynamo.mark_dynamic(attend, 3)
        torch._dynamo.mark_dynamic(cache.k, 3)
        torch._dynamo.mark_dynamic(cache.v, 3)
        h, logits, k_new, v_new = self._timed(("talker", bsz), self._talker_step, x, cos, sin, cache.k, cache.v, attend)
        store_new(cache, start, k_new, v_new)
        return h, logits

    # --- the code predictor's frame -------------------------------------------------------------
    def generate_frame(self, past_hidden, e0, cache: KVCache, params: SamplingParams):
        """Same contract and the same sampling calls (hence RNG draws) as
        CodePredictor.generate_frame: residual codes [B, G-1]. ``cache`` is not used: the frame's
        keys/values live inside its graph (PredictorFrameGraph)."""
        codes, _ = self._frame(past_hidden, e0, pick_knobs(params), self._no_codes(past_hidden.shape[0], e0.device))
        return codes

    def frame_logits(self, past_hidden, e0, codes: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Teacher-forced: the logits [B, G-1, V] of groups 1..G-1 when groups 1..G-2 are fed
        ``codes`` [B, G-1] instead of the sampled ones (the same graph as generate_frame; nothing
        is drawn). ``cache`` is not used, as in generate_frame."""
        _, logits = self._frame(past_hidden, e0, pick_knobs(None), codes.to(torch.long).contiguous())
        return logits

    def _frame(self, past_hidden, e0, knobs, forced):
        bsz, dtype, device = past_hidden.shape[0], past_hidden.dtype, past_hidden.device
        cos, sin = self._frame_rope(dtype, device)
        # Joined here, not in the graph: the loop's past hidden is a view of the talker's output, whose
        # strides (guarded by dynamo even where a dimension is 1) would make a graph per prompt length.
        prefix = torch.cat((past_hidden, e0), dim=1)
        return self._timed(("cp_frame", bsz), self._cp_graph, prefix, cos, sin, knobs, forced)

    def _no_codes(self, bsz: int, device) -> torch.Tensor:
        """The ``forced`` input of a sampled frame: zeros [B, G-1] the pick never reads."""
        key = (bsz, device)
        if key not in self._unforced:
            with torch.inference_mode():  # one kind of input wherever first made (see frame_pick.pick_knobs)
                self._unforced[key] = torch.zeros(bsz, self.cp.cfg.num_code_groups - 1, dtype=torch.long, device=device)
        return self._unforced[key]

    def _frame_rope(self, dtype, device):
        """cos/sin [1, G, D] of the frame's positions 0..G-1, cached. Each is evaluated in the shape
        the exact path uses for it (the prefill's two positions, then one per step), because
        vectorised and scalar-tail cos/sin differ in the last bit (layers.rope_cos_sin)."""
        key = (dtype, device)
        if key not in self._cp_rope:
            spans = [(0, 2)] + [(g, 1) for g in range(2, self.cp.cfg.num_code_groups)]
            parts = [
                rope_cos_sin(self.cp.inv_freq, torch.arange(a, a + n, device=device)[None], dtype) for a, n in spans
            ]
            with torch.inference_mode():  # as _no_codes
                self._cp_rope[key] = tuple(torch.cat(t, dim=1) for t in zip(*parts))
        return self._cp_rope[key]

    def _timed(self, key, fn, *args):
        if key in self._warm:
            return fn(*args)
        t0 = time.perf_counter()
        # Past dynamo's recompile limit a new graph would silently run eagerly (correct, slow):
        # fail instead, on the call that compiles.
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                out = fn(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit as e:
            raise RuntimeError(
                f"torch.compile's recompile limit ({torch._dynamo.config.recompile_limit} graphs per "
                "function) is reached: this process has compiled too many fast engines or batch sizes "
                "(one graph per batch size each per function). Reuse engines, or raise torch._dynamo.config.recompile_limit."
            ) from e
        self.compile_seconds += time.perf_counter() - t0
        self._warm.add(key)
        return out
