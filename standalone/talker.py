"""The talker (group-0 codec LM over text + codec embeddings) and the code predictor
(residual groups 1..G-1, one small transformer per frame)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodePredictorConfig, TalkerConfig, TransformerConfig
from .kv_cache import KVCache
from .layers import (
    DecoderLayer,
    Embedding,
    Linear,
    RMSNorm,
    mrope_positions,
    mrope_row_index,
    padding_mask,
    rope_cos_sin,
    rope_inv_freq,
)
from .sampling import SamplingParams, sample_next_token


class DecoderStack(nn.Module):
    """Layers + final norm. Returns the final hidden states and, on request, every layer's output
    (used to localise a mismatch to the first diverging layer)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, collect: list | None = None, cache: KVCache | None = None, start: int = 0):
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i, start)
            if collect is not None:
                collect.append(x)
        return self.norm(x)

    def new_cache(self, cfg: TransformerConfig, batch: int, max_len: int, dtype, device) -> KVCache:
        return KVCache(len(self.layers), batch, cfg.num_key_value_heads, max_len, cfg.head_dim, dtype, device)


class TextProjection(nn.Module):
    """Two-layer SiLU MLP with biases: text_hidden -> text_hidden -> hidden."""

    def __init__(self, text_hidden: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(text_hidden, text_hidden, bias=True)
        self.fc2 = Linear(text_hidden, hidden, bias=True)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class Talker(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        self.cfg = cfg
        tc = cfg.transformer
        self.text_embedding = Embedding(cfg.text_vocab_size, cfg.text_hidden_size)
        self.text_projection = TextProjection(cfg.text_hidden_size, tc.hidden_size)
        self.codec_embedding = Embedding(cfg.vocab_size, tc.hidden_size)
        self.decoder = DecoderStack(tc)
        self.codec_head = Linear(tc.hidden_size, cfg.vocab_size, bias=False)
        # Plain attributes, not buffers: they must stay fp32 whatever dtype the module is cast to.
        self.inv_freq = rope_inv_freq(tc.head_dim, tc.rope_theta)
        self.mrope_rows = mrope_row_index(cfg.mrope_section, cfg.mrope_interleaved)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_embedding(ids))

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        collect: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill forward. Returns (final hidden states [B, L, H], codec logits [B, L, V]).

        With a left-padding ``attention_mask`` [B, L], positions restart after the padding and
        padded keys are hidden, as upstream's get_rope_index and causal mask do.
        """
        bsz, seqlen, _ = inputs_embeds.shape
        if attention_mask is None:
            attention_mask = torch.ones(bsz, seqlen, dtype=torch.long, device=inputs_embeds.device)
        return self.step(inputs_embeds, mrope_positions(attention_mask), padding_mask(attention_mask), collect=collect)

    def step(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        start: int = 0,
        collect: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward over x [B, S, H] at M-RoPE ``positions`` [3, B, S]; prefill or decode."""
        cos, sin = rope_cos_sin(self.inv_freq, positions, x.dtype, self.mrope_rows)
        h = self.decoder(x, cos, sin, mask, collect, cache, start)
        return h, self.codec_head(h)


class CodePredictor(nn.Module):
    """Predicts codec groups 1..G-1 from the talker's hidden state and the group-0 code.

    Embeddings and heads of the G-1 groups are stacked into single tensors so a group is an index,
    not a module lookup. The embeddings have the talker's width; ``input_projection`` maps them to
    the predictor's width when the two differ (1.7B), and is absent otherwise (0.6B).
    """

    def __init__(self, cfg: CodePredictorConfig, talker_hidden: int):
        super().__init__()
        self.cfg = cfg
        tc = cfg.transformer
        n = cfg.num_code_groups - 1
        self.codec_embeddings = nn.Parameter(torch.empty(n, cfg.vocab_size, talker_hidden))
        self.heads = nn.Parameter(torch.empty(n, cfg.vocab_size, tc.hidden_size))
        self.input_projection = (
            Linear(talker_hidden, tc.hidden_size, bias=True) if talker_hidden != tc.hidden_size else None
        )
        self.decoder = DecoderStack(tc)
        self.inv_freq = rope_inv_freq(tc.head_dim, tc.rope_theta)
        self._rope_cache: dict = {}
        self.embed_dtype: torch.dtype | None = None  # set in mixed precision (precision.py)

    def embed(self, group: int, codes: torch.Tensor) -> torch.Tensor:
        """Embedding of residual group ``group`` (1-based) codes, in the talker's width."""
        out = F.embedding(codes, self.codec_embeddings[group - 1])
        return out if self.embed_dtype is None else out.to(self.embed_dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_projection is None else self.input_projection(x)

    def forward(self, inputs_embeds: torch.Tensor, collect: list | None = None) -> torch.Tensor:
        """Teacher-forced pass over [talker hidden, e0(g0), e1(g1), ...]; returns final hidden states."""
        bsz, seqlen, _ = inputs_embeds.shape
        x = self.project(inputs_embeds)
        pos = torch.arange(seqlen, device=x.device)[None]  # one row, broadcast over the batch, as upstream
        cos, sin = rope_cos_sin(self.inv_freq, pos, x.dtype)
        return self.decoder(x, cos, sin, None, collect)

    def logits(self, hidden: torch.Tensor, group: int) -> torch.Tensor:
        """Logits for residual group ``group`` (1-based) from hidden states [.., cp_hidden]."""
        return F.linear(hidden, self.heads[group - 1])

    def teacher_forced_logits(
        self,
        talker_hidden: torch.Tensor,
        codes: torch.Tensor,
        codec_embedding: nn.Embedding,
        collect: list | None = None,
    ) -> torch.Tensor:
        """Logits of every residual group given all the codes of a frame (as in training).

        talker_hidden [B, H]; codes [B, G]. Returns [B, G-1, V]: entry k predicts group k+1.
        """
        g = self.cfg.num_code_groups
        parts = [talker_hidden[:, None], codec_embedding(codes[:, :1])]
        parts += [self.embed(k, codes[:, k : k + 1]) for k in range(1, g - 1)]
        h = self.forward(torch.cat(parts, dim=1), collect)
        return torch.stack([self.logits(h[:, k], k) for k in range(1, g)], dim=1)

    def _rope_at(self, start: int, length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions start..start+length-1 with upstream's [1, length, head_dim]
        shape, cached: the code predictor revisits the same 16 positions every frame."""
        key = (start, length, dtype, device)
        hit = self._rope_cache.get(key)
        if hit is None:
            pos = torch.arange(start, start + length, device=device)[None]
            hit = self._rope_cache[key] = rope_cos_sin(self.inv_freq, pos, dtype)
        return hit

    def generate_frame(
        self, past_hidden: torch.Tensor, e0: torch.Tensor, cache: KVCache, params: SamplingParams
    ) -> torch.Tensor:
        """Residual codes [B, G-1] of one frame: a 2-position prefill over [talker hidden,
        embedding of g0] predicts group 1, then one single-token step per further group."""
        x = self.project(torch.cat((past_hidden, e0), dim=1))
        cos, sin = self._rope_at(0, 2, x.dtype, x.device)
        h = self.decoder(x, cos, sin, None, None, cache, 0)
        token = sample_next_token(self.logits(h, 1)[:, -1], None, params)
        out = [token]
        for group in range(2, self.cfg.num_code_groups):
            x = self.project(self.embed(group - 1, token[:, None]))
            cos, sin = self._rope_at(group, 1, x.dtype, x.device)
            h = self.decoder(x, cos, sin, None, None, cache, group)
            token = sample_next_token(self.logits(h, group)[:, -1], None, params)
            out.append(token)
        return torch.stack(out, dim=1)
