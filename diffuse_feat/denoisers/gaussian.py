"""The Gaussian-optimal (Wiener) denoiser and its closed-form probability-flow solution (Li, Dai, Qu 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..per_sample import as_sigma
from .base import ExactDenoiser

__all__ = ["GaussianDenoiser"]


class GaussianDenoiser(ExactDenoiser):
    """``D_G(x; sigma) = mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu)`` for data ~ N(mu, U diag(lambda) U^T).

    It is the exact posterior mean for Gaussian data and the best affine denoiser for any data
    with that mean and covariance. Build it from moments or from a data tensor
    (:meth:`from_data`, covariance normalised by 1/N as in the paper).
    """

    def __init__(self, mean: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, data_shape=None, dtype=torch.float32):
        mean = mean.reshape(-1)
        super().__init__(tuple(data_shape) if data_shape is not None else (mean.numel(),))
        order = torch.argsort(eigenvalues, descending=True)
        self.register_buffer("mean", mean.to(dtype))
        self.register_buffer("eigenvalues", eigenvalues[order].clamp_min(0).to(dtype))
        self.register_buffer("eigenvectors", eigenvectors[:, order].to(dtype))

    @classmethod
    def from_covariance(
        cls, mean: Tensor, covariance: Tensor, data_shape=None, dtype=torch.float32
    ) -> GaussianDenoiser:
        lam, u = torch.linalg.eigh(covariance.to(torch.float64))
        return cls(mean.to(torch.float64), lam, u, data_shape, dtype)

    @classmethod
    def from_data(cls, data: Tensor, dtype=torch.float32) -> GaussianDenoiser:
        flat = data.reshape(data.shape[0], -1).to(torch.float64)
        mean = flat.mean(0)
        centered = flat - mean
        cov = centered.T @ centered / flat.shape[0]
        return cls.from_covariance(mean, cov, tuple(data.shape[1:]), dtype)

    @property
    def covariance(self) -> Tensor:
        u = self.eigenvectors
        return (u * self.eigenvalues) @ u.T

    def shrinkage(self, sigma: Tensor) -> Tensor:
        """``lambda_i / (lambda_i + sigma^2)`` per sample: ``[B, d]``."""
        lam = self.eigenvalues.to(torch.float64)
        return lam / (lam + sigma.to(torch.float64).reshape(-1, 1).square())

    def denoise_flat(self, x, sigma):
        u = self.eigenvectors
        coeff = (x.to(u.dtype) - self.mean) @ u
        coeff = coeff * self.shrinkage(sigma).to(u.dtype)
        return self.mean + coeff @ u.T

    def jacobian(self, sigma: float) -> Tensor:
        """``dD/dx = U diag(lambda / (lambda + sigma^2)) U^T`` (the same at every x)."""
        u = self.eigenvectors
        shrink = self.shrinkage(torch.tensor([float(sigma)]))[0].to(u.dtype)
        return (u * shrink) @ u.T

    def affine(self, sigma: float) -> tuple[Tensor, Tensor]:
        """``(W, b)`` with ``D_G(x) = W x + b``."""
        w = self.jacobian(sigma)
        return w, self.mean - w @ self.mean

    def pf_ode_solution(self, x_start: Tensor, sigma_start: float, sigma_end: float = 0.0) -> Tensor:
        """Closed-form probability-flow ODE ``dx/dsigma = (x - D_G(x))/sigma`` from ``sigma_start`` to ``sigma_end``.

        ``x_sigma = mu + sum_i sqrt((sigma^2 + lambda_i) / (sigma_T^2 + lambda_i)) (u_i^T (x_T - mu)) u_i``.
        """
        flat = self.flatten(x_start)
        u = self.eigenvectors
        lam = self.eigenvalues.to(torch.float64)
        ratio = torch.sqrt((sigma_end**2 + lam) / (sigma_start**2 + lam)).to(u.dtype)
        out = self.mean + (((flat.to(u.dtype) - self.mean) @ u) * ratio) @ u.T
        return out.to(x_start.dtype).reshape(x_start.shape)

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``num`` samples of N(mu, Sigma), shaped like the data."""
        u = self.eigenvectors
        z = torch.randn(num, self.dim, generator=generator, dtype=u.dtype, device=u.device)
        x = self.mean + (z * self.eigenvalues.sqrt()) @ u.T
        return x.reshape(num, *self.data_shape)

    def log_density(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log N(x; mu, Sigma + sigma^2 I)`` per sample."""
        flat = self.flatten(x).to(torch.float64)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        var = self.eigenvalues.to(torch.float64) + s.reshape(-1, 1).square()
        coeff = (flat - self.mean.to(torch.float64)) @ self.eigenvectors.to(torch.float64)
        return -0.5 * ((coeff.square() / var).sum(1) + torch.log(2 * torch.pi * var).sum(1))
