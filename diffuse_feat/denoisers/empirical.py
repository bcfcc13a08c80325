"""The exact denoiser of a finite training set: the memorizing optimum of denoising score matching.

``D_M(x; sigma) = sum_i softmax_i(-||x - y_i||^2 / (2 sigma^2)) y_i`` (EDM eq. 57; Li et al. eq. 5;
Biroli et al.'s exact empirical score). Training points are streamed in chunks with an online
log-sum-exp (as in flash attention), so n = 60,000 x d = 784 runs in bounded memory. Logits are
formed as ``(x.y - |y|^2/2) / sigma^2`` in float64: in float32 the cancellation in that expansion
is ~1e-5 absolute, which divided by sigma^2 = 4e-6 would scramble the weights at sigma = 0.002.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..per_sample import as_sigma
from .base import ExactDenoiser

__all__ = ["EmpiricalDenoiser"]

_MIN_SIGMA = 1e-12  # sigma = 0 means "nearest training point"; keep the division finite


class EmpiricalDenoiser(ExactDenoiser):
    """Posterior mean under the empirical distribution of ``train`` (shape ``[n, *data_shape]``).

    The training set is stored in ``compute_dtype`` (float64 by default: 376 MB for MNIST's 60,000 x 784);
    working memory is ``O(batch x chunk_size)``. ``compute_dtype=torch.float32`` halves both and is faster
    on GPUs with slow float64, at the cost of wrong weights between near-duplicate points below sigma ~ 0.05.
    """

    def __init__(self, train: Tensor, chunk_size: int = 4096, compute_dtype: torch.dtype = torch.float64):
        super().__init__(tuple(train.shape[1:]))
        if train.shape[0] < 1:
            raise ValueError("EmpiricalDenoiser needs at least one training point")
        flat = train.reshape(train.shape[0], -1)
        self.chunk_size = int(chunk_size)
        self.compute_dtype = compute_dtype
        # stored once in the compute dtype: no per-call conversion of the whole training set
        points = flat.to(compute_dtype)
        self.register_buffer("points", points)
        self.register_buffer("half_sq_norms", 0.5 * torch.linalg.vector_norm(points, dim=1).square())

    @property
    def num_train(self) -> int:
        return self.points.shape[0]

    def _chunks(self):
        for start in range(0, self.num_train, self.chunk_size):
            stop = min(start + self.chunk_size, self.num_train)
            yield start, stop, self.points[start:stop], self.half_sq_norms[start:stop]

    def _logits(self, x: Tensor, inv_var: Tensor, y: Tensor, half_sq: Tensor) -> Tensor:
        """``-(||x - y||^2 - ||x||^2) / (2 sigma^2)`` for one chunk: ``[B, chunk]``."""
        return (x @ y.T - half_sq) * inv_var

    def _stream(self, x: Tensor, sigma: Tensor, want_mean: bool):
        """One pass over the training set: running max, normaliser and (optionally) weighted sum."""
        xd = x.to(self.compute_dtype)
        inv_var = 1.0 / sigma.to(self.compute_dtype).clamp_min(_MIN_SIGMA).square().reshape(-1, 1)
        run_max = torch.full((x.shape[0], 1), -math.inf, dtype=self.compute_dtype, device=x.device)
        run_sum = torch.zeros_like(run_max)
        acc = torch.zeros_like(xd) if want_mean else None
        for _, _, y, half_sq in self._chunks():
            logits = self._logits(xd, inv_var, y, half_sq)
            new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
            rescale = torch.exp(run_max - new_max)
            p = torch.exp(logits - new_max)
            run_sum = run_sum * rescale + p.sum(1, keepdim=True)
            if want_mean:
                acc = acc * rescale + p @ y
            run_max = new_max
        return run_max, run_sum, acc

    def denoise_flat(self, x, sigma):
        _, run_sum, acc = self._stream(x, sigma, want_mean=True)
        return acc / run_sum

    def log_density(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log P_sigma(x) = log (1/n) sum_i N(x; y_i, sigma^2 I)`` per sample (float64)."""
        flat = self.flatten(x)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        run_max, run_sum, _ = self._stream(flat, s, want_mean=False)
        sq_norm = flat.to(torch.float64).square().sum(1)
        lse = (run_max + run_sum.log()).squeeze(1).to(torch.float64) - 0.5 * sq_norm / s.square()
        return lse - math.log(self.num_train) - 0.5 * self.dim * torch.log(2 * math.pi * s.square())

    def posterior_weights(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``w_i(x) = softmax_i(-||x - y_i||^2 / (2 sigma^2))``: ``[B, n]``, rows sum to 1."""
        flat = self.flatten(x)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        xd = flat.to(self.compute_dtype)
        inv_var = 1.0 / s.to(self.compute_dtype).clamp_min(_MIN_SIGMA).square().reshape(-1, 1)
        logits = torch.empty(x.shape[0], self.num_train, dtype=self.compute_dtype, device=x.device)
        for start, stop, y, half_sq in self._chunks():
            logits[:, start:stop] = self._logits(xd, inv_var, y, half_sq)
        return torch.softmax(logits, dim=1)
