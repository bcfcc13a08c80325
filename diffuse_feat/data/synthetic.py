"""Synthetic data whose exact denoiser is known: isotropic Gaussian mixtures and low-rank Gaussians."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..capabilities import MixtureTheory, OracleLabels, PopulationScore
from ..denoisers import GaussianDenoiser, GaussianMixtureDenoiser
from ..regimes_theory import gm_cloning_curve, gm_collapse_time
from .base import TensorDataModule

__all__ = ["GaussianMixtureDataModule", "LowRankGaussianDataModule"]


class GaussianMixtureDataModule(TensorDataModule, PopulationScore, OracleLabels, MixtureTheory):
    """``sum_k (1/K) N(m_k, component_std^2 I)`` in ``dim`` dimensions with ``|m_k|^2 = dim * mean_scale^2``.

    With ``n_components = 2`` (default) the means are ``+m`` and ``-m`` (Biroli et al.'s model);
    otherwise they are independent random directions. Labels are the generating component.
    Ground truth: :meth:`population_denoiser` (exact score at every sigma), :meth:`oracle_labels`
    (posterior component), :attr:`means`, and the theory values ``top_eigenvalue = dim mu^2 + std^2``,
    :meth:`cloning_theory` (speciation curve phi(t)) and :meth:`collapse_time` (t_C of Biroli et al.).
    """

    def __init__(
        self,
        dim: int = 2,
        n_components: int = 2,
        mean_scale: float = 1.0,
        component_std: float = 1.0,
        pool_size: int = 10000,
        batch_size: int = 256,
        n_train: int | None = None,
        n_val: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers)
        if dim < 1 or n_components < 1 or component_std < 0 or pool_size < 2:
            raise ValueError("need dim >= 1, n_components >= 1, component_std >= 0, pool_size >= 2")
        self.dim, self.n_components = dim, n_components
        self.mean_scale, self.component_std, self.pool_size = mean_scale, component_std, pool_size
        self.data_shape = (dim,)
        self.num_classes = n_components
        g = torch.Generator().manual_seed(seed + 7919)
        if n_components == 2:
            direction = torch.randn(dim, generator=g, dtype=torch.float64)
            directions = torch.stack([direction, -direction])
        else:
            directions = torch.randn(n_components, dim, generator=g, dtype=torch.float64)
        directions = directions / directions.norm(dim=1, keepdim=True)
        self.means: Tensor = directions * mean_scale * math.sqrt(dim)

    def population_denoiser(self) -> GaussianMixtureDenoiser:
        return GaussianMixtureDenoiser(self.means, self.component_std)

    def oracle_labels(self, x: Tensor, sigma: float = 0.0) -> Tensor:
        """Most probable generating component of ``x`` at noise level ``sigma``."""
        return self.population_denoiser().to(x.device).responsibilities(x, sigma).argmax(1)

    def cloning_theory(self, t) -> Tensor | None:
        """Biroli et al.'s cloning curve ``phi(t)`` (OU time) with the population score: the probability that two
        backward trajectories split at ``t`` end in the same component. Two symmetric components only (else None)."""
        if self.n_components != 2:
            return None
        return gm_cloning_curve(t, self.dim, self.mean_scale, self.component_std)

    def collapse_time(self, n: int | None = None) -> float:
        """``t_C = 1/2 log(1 + std^2 / (n^{2/d} - 1))`` (OU time) for ``n`` training points (default: all of them)."""
        n = self.train_tensor().shape[0] if n is None else n
        return gm_collapse_time(n, self.dim, self.component_std)

    @property
    def top_eigenvalue(self) -> float:
        """Largest eigenvalue of the population covariance (two symmetric components): ``dim mu^2 + std^2``."""
        if self.n_components != 2:
            lam, _ = torch.linalg.eigh(self.population_covariance())
            return float(lam.max())
        return self.dim * self.mean_scale**2 + self.component_std**2

    def population_covariance(self) -> Tensor:
        centered = self.means - self.means.mean(0)
        within = self.component_std**2 * torch.eye(self.dim, dtype=torch.float64)
        return centered.T @ centered / self.n_components + within

    def build(self):
        g = torch.Generator().manual_seed(self.seed)
        mixture = self.population_denoiser()
        comp = torch.randint(self.n_components, (self.pool_size,), generator=g)
        z = torch.randn(self.pool_size, self.dim, generator=g, dtype=torch.float64)
        x = mixture.means[comp] + self.component_std * z
        return x.float(), comp


class LowRankGaussianDataModule(TensorDataModule, PopulationScore):
    """``N(mean_offset * 1, U diag(lambda) U^T)`` in ``dim`` dimensions with ``rank`` non-zero eigenvalues
    ``lambda_i = top_eigenvalue * decay^i`` along a random orthonormal basis ``U``.

    Ground truth: :meth:`population_denoiser` (the exact Wiener filter of the true distribution,
    not of the training sample), :meth:`population_covariance`.
    """

    def __init__(
        self,
        dim: int = 64,
        rank: int = 8,
        top_eigenvalue: float = 1.0,
        decay: float = 0.8,
        mean_offset: float = 0.0,
        pool_size: int = 10000,
        batch_size: int = 256,
        n_train: int | None = None,
        n_val: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers)
        if not 1 <= rank <= dim:
            raise ValueError(f"data.rank must be in 1..dim={dim}, got {rank}")
        self.dim, self.rank, self.pool_size = dim, rank, pool_size
        self.data_shape = (dim,)
        self.num_classes = 0
        g = torch.Generator().manual_seed(seed + 104729)
        self._full_basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.basis = self._full_basis[:, :rank]
        self.eigenvalues = top_eigenvalue * decay ** torch.arange(rank, dtype=torch.float64)
        self.population_mean = torch.full((dim,), float(mean_offset), dtype=torch.float64)

    def population_covariance(self) -> Tensor:
        return (self.basis * self.eigenvalues) @ self.basis.T

    def population_denoiser(self) -> GaussianDenoiser:
        lam = torch.zeros(self.dim, dtype=torch.float64)
        lam[: self.rank] = self.eigenvalues
        return GaussianDenoiser(self.population_mean, lam, self._full_basis, self.data_shape)

    def build(self):
        g = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.pool_size, self.rank, generator=g, dtype=torch.float64)
        x = self.population_mean + (z * self.eigenvalues.sqrt()) @ self.basis.T
        return x.float(), torch.full((self.pool_size,), -1, dtype=torch.long)
