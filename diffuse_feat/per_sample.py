"""Values with one entry per sample of a batch: a noise level ``sigma`` per sample, and the broadcast of such a value
over a sample's dimensions. Every module that takes ``sigma`` (denoisers, samplers, losses, processes) uses these."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_sigma", "append_dims"]


def as_sigma(sigma: float | Tensor, batch: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Broadcast a noise level to one value per sample, refusing negative or non-finite values.

    Accepts a Python number, a 0-d tensor or a ``[batch]`` tensor. The check costs a device sync,
    so it sits on public entry points (denoisers, samplers), not inside the training step.
    """
    s = torch.as_tensor(sigma, device=device, dtype=dtype)
    if s.ndim == 0:
        s = s.expand(batch)
    s = s.reshape(-1)
    if s.shape[0] != batch:
        raise ValueError(f"sigma has {s.shape[0]} values but the batch has {batch}; pass one sigma or one per sample")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"sigma must be finite and >= 0 (noise standard deviation), got min {float(s.min()):.4g}")
    return s


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """``v`` of shape ``[B]`` (one value per sample) as ``[B, 1, ..., 1]`` with ``ndim`` dimensions, so it
    broadcasts against a batch ``[B, ...]`` of that many dimensions."""
    return v.reshape(-1, *([1] * (ndim - 1)))
