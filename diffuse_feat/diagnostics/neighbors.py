"""Exact nearest training points, chunked over the training set (memorization, collapse)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nearest_neighbors"]


def nearest_neighbors(queries: Tensor, train: Tensor, k: int = 1, chunk_size: int = 8192) -> tuple[Tensor, Tensor]:
    """Euclidean distances and indices of the ``k`` nearest rows of ``train`` for every query.

    Inputs of any shape ``[B, ...]`` / ``[n, ...]`` are flattened. Squared distances are formed in
    float64 as ``|q|^2 - 2 q.y + |y|^2`` per chunk of ``chunk_size`` training points, so memory
    stays ``O(B * chunk_size)``. Returns ``(distances [B, k], indices [B, k])``, nearest first.
    """
    q = queries.reshape(queries.shape[0], -1).to(torch.float64)
    y_all = train.reshape(train.shape[0], -1)
    if q.shape[1] != y_all.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features but training points have {y_all.shape[1]}")
    if not 1 <= k <= y_all.shape[0]:
        raise ValueError(f"k must be in 1..{y_all.shape[0]} (number of training points), got {k}")
    q_sq = q.square().sum(1, keepdim=True)
    best_d = torch.full((q.shape[0], k), float("inf"), dtype=torch.float64, device=q.device)
    best_i = torch.zeros((q.shape[0], k), dtype=torch.long, device=q.device)
    for start in range(0, y_all.shape[0], chunk_size):
        y = y_all[start : start + chunk_size].to(device=q.device, dtype=torch.float64)
        d2 = (q_sq - 2 * q @ y.T + y.square().sum(1)).clamp_min(0)
        cand_d = torch.cat([best_d, d2], 1)
        cand_i = torch.cat([best_i, torch.arange(start, start + y.shape[0], device=q.device).expand(q.shape[0], -1)], 1)
        best_d, pos = torch.topk(cand_d, k, dim=1, largest=False)
        best_i = torch.gather(cand_i, 1, pos)
    return best_d.sqrt(), best_i
