"""Transformer building blocks shared by the talker and the code predictor.

Numerics follow upstream exactly where it matters for parity:
- RMSNorm normalises in fp32, casts back to the input dtype, then multiplies by the weight.
- RoPE cos/sin are computed in fp32 from an fp32 ``inv_freq`` and cast to the activation dtype.
- Attention calls SDPA the way transformers' sdpa integration does: without a padding mask,
  ``is_causal`` for multi-token queries and ``enable_gqa``; with a mask, a boolean mask and
  repeated KV heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """fp32 inverse frequencies, [head_dim/2]. Kept out of the state dict and never cast."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))


def mrope_row_index(mrope_section: tuple[int, ...], interleaved: bool) -> torch.Tensor:
    """For each of the head_dim/2 frequencies, which of the three position rows drives it.

    Interleaved layout (Qwen3 style): frequency j belongs to row j % 3 while that row still has
    frequencies left in its section, otherwise to row 0. Contiguous layout (Qwen2-VL style): the
    sections follow each other.
    """
    half = sum(mrope_section)
    rows = torch.zeros(half, dtype=torch.long, device="cpu")
    if interleaved:
        n_rows = len(mrope_section)
        for row in range(1, n_rows):
            idx = torch.arange(row, mrope_section[row] * n_rows, n_rows, device="cpu")
            rows[idx] = row
    else:
        start = 0
        for row, n in enumerate(mrope_section):
            rows[start : start + n] = row % 3
            start += n
    return rows


def rope_cos_sin(
    inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype, row_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for ``positions``: [R, L] (1-D RoPE; R is 1 or the batch) -> [R, L, head_dim];
    [3, B, L] (M-RoPE, ``row_index`` picks the row of each frequency) -> [B, L, head_dim].

    cos and sin are evaluated over a tensor of exactly upstream's shape ([R, L, head_dim], or
    [3, B, L, head_dim] before the row selection): vectorised and scalar-tail math differ in the
    last bit, and which elements land in the tail depends on the shape. Products are fp32.
    """
    pos = positions.float()
    inv = inv_freq.to(pos.device)
    freqs = pos[..., None] * inv  # [..., L, half]: a single rounding, as upstream's K=1 matmul
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    if positions.dim() == 3:
        half = inv.shape[0]
        idx = row_index.to(pos.device).view(1, 1, 1, half).expand(1, *cos.shape[1:3], half)
        cos = torch.gather(cos[..., :half], 0, idx).squeeze(0)
        sin = torch.gather(sin[..., :half], 0, idx).squeeze(0)
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, head_dim]; cos/sin: [B, L, head_dim]."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return (x * cos) + (rotate_half(x) * sin)


def split_linear(x: torch.Tensor, weight: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """x @ W.T for each row block of a fused weight, one matmul per block.

    The weights are stored fused (one tensor, one read), but a single GEMM over the fused weight
    blocks its reduction differently from upstream's separate projections and changes the last
    bits (measured: 4.8e-7 on k/v in fp32). Row blocks of a contiguous weight are contiguous
    views, so per-block matmuls cost no copy and reproduce upstream bit for bit. At decode time
    the matmuls are matrix-vector products bound by memory traffic, which is the same either way.
    """
    if x.dtype != weight.dtype:  # mixed precision (precision.py): the GEMM runs in the weight's dtype
        return [y.to(x.dtype) for y in split_linear(x.to(weight.dtype), weight, sizes)]
    out = []
    start = 0
    for n in sizes:
        out.append(F.linear(x, weight[start : start + n]))
        start += n
    return out


class Linear(nn.Linear):
    """nn.Linear that, given an input of another dtype than its weight (mixed precision: fp32
    activations, a half-precision weight), runs the GEMM in the weight's dtype and returns the
    input's dtype. With matching dtypes it is nn.Linear, call for call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


class Embedding(nn.Embedding):
    """nn.Embedding whose lookups are cast to ``out_dtype`` when it is set (mixed precision: a
    half-precision table feeding fp32 activations; precision.set_activation_dtype)."""

    out_dtype: torch.dtype | None = None

    def reset_parameters(self) -> None:
        # A table built on the meta device (from_pretrained, before the weights are assigned) has no
        # values to draw, and drawing them there imports torch._dynamo (0.2-0.8 s of a CLI start, measured).
        if self.weight.device.type != "meta":
            super().reset_parameters()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = super().forward(ids)
        return out if self.out_dtype is None else out.to(self.out_dtype)


class Attention(nn.Module):
    """The one attention module: GQA with fused qkv storage and RoPE, for the talker, the code
    predictor and the codec.

    ``qk_norm_eps`` adds per-head q/k RMSNorm before RoPE (the talker and code predictor have
    it; the codec's transformer does not, and then there is no q_norm/k_norm tensor at all).

    ``scale`` is the softmax scale handed to SDPA; None means ``head_dim**-0.5`` (what the Qwen
    stacks pass). The speech-tokenizer encoder (Mimi) leaves the scale to SDPA, whose default is
    ``1/sqrt(head_dim)``: equal to ``head_dim**-0.5`` for 64 but not for every head size
    (8**-0.5 != 1/sqrt(8) in the last bit).
    """

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        qk_norm_eps: float | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        self.scale = head_dim**-0.5 if scale is None else scale
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.q_size = n_heads * head_dim
        self.kv_size = n_kv_heads * head_dim
        self.wqkv = Linear(hidden_size, self.q_size + 2 * self.kv_size, bias=False)
        self.wo = Linear(self.q_size, hidden_size, bias=False)
        self.q_norm = RMSNorm(head_dim, qk_norm_eps) if qk_norm_eps is not None else None
        self.k_norm = RMSNorm(head_dim, qk_norm_eps) if qk_norm_eps is not None else None

    @classmethod
    def for_decoder(cls, cfg: TransformerConfig) -> Attention:
        """The talker's and code predictor's attention: q/k norm with the stack's eps."""
        return cls(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
    ) -> torch.Tensor:
        """``mask`` is None (causal over the keys) or a boolean [B, 1, L, kv_len] (True = attend).

        With a ``cache``, the new keys/values are stored at ``start`` and the query attends to
        every cached position; without a mask that is only correct for a prefill from position 0
        or a single-token step, which is all the decode loop does.
        """
        bsz, seqlen, _ = x.shape
        q, k, v = split_linear(x, self.wqkv.weight, (self.q_size, self.kv_size, self.kv_size))
        q = q.view(bsz, seqlen, self.n_heads, self.head_dim)
        k = k.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        v = v.view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)
        out = attend(q, k, v, mask, self.scale)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, self.q_size))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """SDPA with the same call shape transformers' sdpa integration uses, so kernels match."""
    if mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, scale=scale, is_causal=q.shape[2] > 1, enable_gqa=True
        )
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=False)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused into one matmul."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.w_gate_up = Linear(dim, 2 * hidden, bias=False)
        self.w_down = Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = split_linear(x, self.w_gate_up.weight, (self.hidden, self.hidden))
        return self.w_down(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention.for_decoder(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer: int = 0, start: int = 0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.mlp_norm(x))


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Causal boolean mask [B, 1, L, L] that also hides padded keys; None when nothing is padded.

    A padded query row sees no key at all; SDPA returns NaN for such rows on some builds, so the
    row is allowed to see itself. Those positions are padding and never reach an output.
    """
    if bool(attention_mask.all()):
        return None
    bsz, seqlen = attention_mask.shape
    keep = attention_mask.bool()
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=attention_mask.device).tril()
    eye = torch.eye(seqlen, dtype=torch.bool, device=attention_mask.device)
    mask = (causal[None] & keep[:, None, :]) | eye
    return mask[:, None]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions [B, L] that skip left padding: cumsum(mask) - 1, with pads at 1 (as upstream)."""
    pos = attention_mask.float().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def mrope_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The talker's M-RoPE positions [3, B, L] for text-only input: three identical rows."""
    return positions_from_mask(attention_mask).unsqueeze(0).expand(3, -1, -1)
