"""Values with one entry per sample of a batch: a noise level ``sigma`` per sample, and the broadcast of such a value
over a sample's dimensions. Every module that takes ``sigma`` (denoisers, samplers, losses, processes) uses these."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import SigmaError

__all__ = ["as_sigma", "append_dims", "check_sigma_values"]


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
        raise SigmaError(f"sigma has {s.shape[0]} values but the batch has {batch}; pass one sigma or one per sample")
    if s.numel():
        check_sigma_values(*(float(v) for v in torch.aminmax(s)))  # one reduction; NaN propagates into both ends
    return s


def check_sigma_values(smallest: float, largest: float) -> None:
    """One sentence unless every noise level from ``smallest`` to ``largest`` is finite and >= 0 (a NaN anywhere
    makes the ends of ``torch.aminmax`` NaN, and fails here)."""
    if not (smallest >= 0 and largest < math.inf):
        bad = smallest if not smallest >= 0 else largest
        raise SigmaError(f"sigma must be finite and >= 0 (the noise standard deviation), got {bad:.4g}")


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """``v`` of shape ``[B]`` (one value per sample) as ``[B, 1, ..., 1]`` with ``ndim`` dimensions, so it
    broadcasts against a batch ``[B, ...]`` of that many dimensions."""
    return v.reshape(-1, *([1] * (ndim - 1)))
