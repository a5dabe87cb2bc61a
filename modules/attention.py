"""Masked multi-head attention and the message-passing block over context nodes."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden SiLU layers of width ``hidden``, then a linear output."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class MaskedAttention(nn.Module):
    """Multi-head attention ``softmax_j(<q_i, k_j>/√d)`` over the unmasked keys only.

    A query whose keys are all masked (an empty context) receives a zero message instead of
    NaN, so the prior case needs no special path.

    Args:
        query_dim, key_dim, value_dim: input feature sizes; ``dim`` is the output size.

    Shapes:
        query ``[B, M, Dq]``, key ``[B, N, Dk]``, value ``[B, N, Dv]``, key_mask ``[B, N]``
        (True = real node) → ``[B, M, dim]``.
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by the number of heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(query_dim, dim)
        self.k = nn.Linear(key_dim, dim)
        self.v = nn.Linear(value_dim, dim)
        self.out = nn.Linear(dim, dim)

    def project_keys(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values ``[B, heads, N, d]``; computed once per context and reused."""
        b, n, _ = key.shape
        k = self.k(key).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(value).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def attend(self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Attention of ``query [B, M, Dq]`` over projected ``k, v [B, heads, N, d]``."""
        b, m, _ = query.shape
        q = self.q(query).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, h, M, N]
        mask = key_mask[:, None, None, :]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1) * mask  # all-masked rows → 0, not NaN
        out = (weights @ v).transpose(1, 2).reshape(b, m, self.heads * self.head_dim)
        return self.out(out)

    def forward(self, query, key, value, key_mask):
        k, v = self.project_keys(key, value)
        return self.attend(query, k, v, key_mask)


class MessagePassingBlock(nn.Module):
    """One round of message passing over the fully connected context graph.

    ``h ← h + Attn(LN(h)); h ← h + MLP(LN(h))`` (pre-norm residual), with learned
    attention edge weights. Permutation-equivariant; masked nodes send no messages.

    Shapes: ``h [B, N, H]``, ``mask [B, N]`` → ``[B, N, H]``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedAttention(dim, dim, dim, dim, heads)
        self.mlp = mlp(dim, 2 * dim, dim, layers=1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(h)
        h = h + self.attn(x, x, x, mask)
        return h + self.mlp(self.norm2(h))
