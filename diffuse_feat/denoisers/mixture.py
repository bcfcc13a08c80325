"""Exact denoiser of an isotropic Gaussian mixture ``sum_k w_k N(m_k, s_k^2 I)`` (the population score)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..per_sample import as_sigma
from .base import ExactDenoiser

__all__ = ["GaussianMixtureDenoiser"]


class GaussianMixtureDenoiser(ExactDenoiser):
    """``D(x; sigma) = sum_k r_k(x) [m_k + s_k^2 / (s_k^2 + sigma^2) (x - m_k)]``,
    with responsibilities ``r_k(x) ∝ w_k N(x; m_k, (s_k^2 + sigma^2) I)``.
    """

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None, data_shape=None):
        means = means.reshape(means.shape[0], -1)
        super().__init__(tuple(data_shape) if data_shape is not None else (means.shape[1],))
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights)
        if (stds < 0).any() or (weights <= 0).any():
            raise ValueError("component stds must be >= 0 and weights > 0")
        self.register_buffer("means", means.to(torch.float64))
        self.register_buffer("stds", stds)
        self.register_buffer("log_weights", torch.log(weights.to(torch.float64) / weights.sum()))

    def responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``P(component k | x)`` at noise level sigma: ``[B, K]``. An oracle labeler at sigma = 0."""
        flat = self.flatten(x).to(torch.float64)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        return torch.softmax(self._log_joint(flat, s), dim=1)

    def _log_joint(self, flat: Tensor, sigma: Tensor) -> Tensor:
        var = self.stds.square() + sigma.reshape(-1, 1).square()  # [B, K]
        var = var.clamp_min(1e-300)
        sq = torch.cdist(flat, self.means).square()  # [B, K]
        return self.log_weights - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def log_density(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        flat = self.flatten(x).to(torch.float64)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        return torch.logsumexp(self._log_joint(flat, s), dim=1)

    def denoise_flat(self, x, sigma):
        x = x.to(torch.float64)
        resp = torch.softmax(self._log_joint(x, sigma), dim=1)  # [B, K]
        s2 = self.stds.square()
        shrink = s2 / (s2 + sigma.reshape(-1, 1).square()).clamp_min(1e-300)  # [B, K]
        # sum_k r_k [m_k (1 - shrink_k) + shrink_k x]
        return (resp * (1 - shrink)) @ self.means + (resp * shrink).sum(1, keepdim=True) * x

    def sample(self, num: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``(x, component)`` pairs."""
        comp = torch.multinomial(self.log_weights.exp(), num, replacement=True, generator=generator)
        z = torch.randn(num, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[comp] + self.stds[comp].reshape(-1, 1) * z
        return x.float().reshape(num, *self.data_shape), comp
