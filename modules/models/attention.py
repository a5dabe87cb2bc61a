"""Masked multi-head attention and the message-passing block over context nodes."""

from __future__ import annotations

import math

import torch
from torch import nn

from modules.blocks import mlp


def scatter_nodes(nodes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed real nodes ``[n, D]`` → dense ``[B, N, D]`` with zeros where ``mask [B, N]`` is False.

    Example:
        >>> scatter_nodes(torch.tensor([[1.0], [2.0]]), torch.tensor([[True, False], [False, True]]))[..., 0]
        tensor([[1., 0.],
                [0., 2.]])
    """
    dense = nodes.new_zeros(*mask.shape, nodes.shape[-1])
    dense[mask] = nodes
    return dense


class MaskedAttention(nn.Module):
    """Multi-head attention ``softmax_j(<q_i, k_j>/√d)`` over the unmasked keys only.

    A query whose keys are all masked (an empty context) receives a zero message instead of
    NaN, so the prior case needs no special path.

    Args:
        query_dim, key_dim, value_dim: input feature sizes; ``dim`` is the output size.

    Keys and values arrive *packed* (only the real nodes): the projections skip the padding,
    which is half of a context batch whose set sizes are uniform in ``[1, N]``.

    Shapes:
        query ``[B, M, Dq]``, key ``[n, Dk]``, value ``[n, Dv]``, key_mask ``[B, N]`` (True = real
        node, ``n`` of them) → ``[B, M, dim]``.
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

    def project_keys(
        self, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the real nodes ``key [n, Dk]``, ``value [n, Dv]`` (``n = key_mask.sum()``, in
        ``key_mask``'s row-major order) into dense per-head transposed keys ``[B, heads, d, N]`` and
        values ``[B, heads, N, d]``, zero at padding. Contiguous, computed once per context and
        reused by every :meth:`attend` without a per-call copy."""
        b, n = key_mask.shape
        k = scatter_nodes(self.k(key), key_mask).view(b, n, self.heads, self.head_dim)
        v = scatter_nodes(self.v(value), key_mask).view(b, n, self.heads, self.head_dim)
        return k.permute(0, 2, 3, 1).contiguous(), v.transpose(1, 2).contiguous()

    def attend(self, query: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Attention of ``query [B, M, Dq]`` over projected ``k_t [B, heads, d, N]``, ``v [B, heads, N, d]``."""
        b, m, _ = query.shape
        q = self.q(query).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k_t / math.sqrt(self.head_dim)  # [B, h, M, N]
        mask = key_mask[:, None, None, :]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1) * mask  # all-masked rows → 0, not NaN
        out = (weights @ v).transpose(1, 2).reshape(b, m, self.heads * self.head_dim)
        return self.out(out)

    def forward(self, query, key, value, key_mask):
        """``query [B, M, Dq]``; ``key [n, Dk]``, ``value [n, Dv]`` the real nodes of ``key_mask``."""
        k_t, v = self.project_keys(key, value, key_mask)
        return self.attend(query, k_t, v, key_mask)


class MessagePassingBlock(nn.Module):
    """One round of message passing over the fully connected context graph.

    ``h ← h + Attn(LN(h)); h ← h + MLP(LN(h))`` (pre-norm residual), with learned
    attention edge weights. Permutation-equivariant; padding sends and receives no messages.
    Node states are packed: the per-node layers run on the real nodes only.

    Shapes: ``nodes [n, H]`` (the real nodes of ``mask [B, N]``, row-major) → ``[n, H]``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedAttention(dim, dim, dim, dim, heads)
        self.mlp = mlp(dim, 2 * dim, dim, layers=1)

    def forward(self, nodes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(nodes)
        nodes = nodes + self.attn(scatter_nodes(x, mask), x, x, mask)[mask]
        return nodes + self.mlp(self.norm2(nodes))
