"""The one KV cache type: preallocated, written in place, read as views.

Shape per layer: [batch, kv_heads, max_len, head_dim]. Nothing is allocated per step; a step
writes its new keys/values at ``start`` and attends over the view ``[:start + n]``.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, kv_heads, n, head_dim] at positions start..start+n-1 of ``layer`` and
        return views of everything cached so far."""
        end = start + k.shape[2]
        if end > self.max_len:
            self.grow(end)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def grow(self, needed: int) -> None:
        """Make room for ``needed`` positions (at least doubling), keeping what is cached. A loop
        asked for a huge max_new_tokens starts small and grows only as far as it generates."""
        new_len = max(needed, 2 * self.max_len)
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros((*old.shape[:3], new_len, old.shape[4]))
            new[:, :, :, : self.max_len] = old
            setattr(self, name, new)
        self.max_len = new_len
