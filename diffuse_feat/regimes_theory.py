"""Theory of the dynamical regimes of diffusion (Biroli, Bonnaire, de Bortoli, Mezard 2024), in OU time.

Time ``t`` is the Ornstein-Uhlenbeck time of the paper (``x(t) = a e^{-t} + sqrt(Delta_t) z``,
``Delta_t = 1 - e^{-2t}``; see :mod:`diffuse_feat.ou`). Everything here is closed form or a fixed
quadrature, float64, vectorized over ``t``:

* speciation: ``t_S = 1/2 log Lambda`` (Lambda: top eigenvalue of the data covariance) and, for the
  two-class Gaussian mixture ``1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)`` with ``|m|^2 = d mu^2``, the cloning
  curve ``phi(t)`` = probability that two clones split at time ``t`` end in the same component;
* collapse: ``t_C = 1/2 log(1 + s^2 / (n^{2/d} - 1))`` and the excess-entropy density ``f(t)`` whose zero is
  ``t_C``, for the mixture and for any Gaussian given its covariance eigenvalues.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .process import DDPM

__all__ = [
    "SPECIATION_LEVEL",
    "speciation_time",
    "gm_speciation_time",
    "gm_cloning_u",
    "cloning_curve_of_u",
    "gm_cloning_curve",
    "gm_collapse_time",
    "gm_excess_entropy",
    "gaussian_excess_entropy",
    "gaussian_collapse_time",
    "ddpm_step_of_ou_time",
    "ou_time_of_ddpm_step",
    "ddpm_speciation_step",
]

#: ``phi(t_S) = 0.775``: the paper's numerical definition of the speciation time (phi at u_t = 1 is 0.7752)
SPECIATION_LEVEL = 0.775

_NUM_NODES = 200  # Gauss-Hermite nodes: max error 5e-9 on phi over u in [0, 8] (checked against adaptive quadrature)


def _t(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


def _delta(t: Tensor) -> Tensor:
    return -torch.expm1(-2 * t)


def speciation_time(top_eigenvalue: float | Tensor) -> Tensor:
    """``t_S = 1/2 log Lambda``: where the top principal component's signal ``Lambda e^{-2t}`` meets the noise."""
    lam = _t(top_eigenvalue)
    if bool((lam <= 0).any()):
        raise ValueError(f"the top eigenvalue must be > 0, got {lam}")
    return 0.5 * torch.log(lam)


def gm_speciation_time(dim: int, mean_scale: float = 1.0, std: float = 1.0) -> float:
    """Time at which ``u_t = 1`` (so ``phi = 0.7752``) for the two-class mixture: ``1/2 log(d mu^2 + 1 - s^2)``.

    It equals ``1/2 log(d mu^2)`` for ``s = 1``, and ``1/2 log Lambda`` (``Lambda = d mu^2 + s^2``) up to O(1/d).
    """
    arg = dim * mean_scale**2 + 1 - std**2
    if arg <= 1:
        raise ValueError(f"d mu^2 + 1 - s^2 = {arg:.4g} <= 1: the mixture has no speciation at t > 0")
    return 0.5 * math.log(arg)


def gm_cloning_u(t, dim: int, mean_scale: float = 1.0, std: float = 1.0) -> Tensor:
    """``u_t = mu sqrt(d) e^{-t} / sqrt(Gamma_t)`` with ``Gamma_t = Delta_t + s^2 e^{-2t}``: the separation of the
    two noised components along ``m`` in units of their standard deviation."""
    t = _t(t)
    gamma = _delta(t) + std**2 * torch.exp(-2 * t)
    return mean_scale * math.sqrt(dim) * torch.exp(-t) / gamma.sqrt()


@lru_cache(maxsize=1)
def _hermite_nodes() -> tuple[Tensor, Tensor]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to ``E_{g ~ N(0,1)}``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_NUM_NODES)
    return torch.from_numpy(nodes), torch.from_numpy(weights / math.sqrt(2 * math.pi))


def cloning_curve_of_u(u) -> Tensor:
    """``phi(u) = E_{y ~ N(u,1)}[sigmoid(2 u y)] = 1 - 1/2 e^{-u^2/2} E_{g ~ N(0,1)}[sech(u g)]``.

    The first form is the note's reduction of the paper's 1-D integral; the second [derived: write
    ``(G_+^2 + G_-^2)/(G_+ + G_-) = G_+ + G_- - 2 G_+ G_- / (G_+ + G_-)``] is smooth in ``g``, so a fixed
    Gauss-Hermite rule is accurate to 5e-9. ``phi(0) = 1/2``, ``phi(1) = 0.7752``, ``phi(inf) = 1``.
    """
    u = _t(u)
    nodes, weights = _hermite_nodes()
    mean_sech = (weights / torch.cosh(u.unsqueeze(-1) * nodes)).sum(-1)
    return 1 - 0.5 * torch.exp(-0.5 * u.square()) * mean_sech


def gm_cloning_curve(t, dim: int, mean_scale: float = 1.0, std: float = 1.0) -> Tensor:
    """The paper's exact ``phi(t)`` for the two-class mixture with its population score (any finite ``d``):

    ``phi(t) = 1/2 int dy [G(y, m e^{-t}, Gamma_t)^2 + G(y, -m e^{-t}, Gamma_t)^2] / [G(y, m e^{-t}, Gamma_t) +
    G(y, -m e^{-t}, Gamma_t)]`` with ``m = mu sqrt(d)``, i.e. :func:`cloning_curve_of_u` at ``u_t``.
    With ``s = 1``: ``u_t = mu e^{-(t - t_S)}``, ``t_S = 1/2 log d``.
    """
    return cloning_curve_of_u(gm_cloning_u(t, dim, mean_scale, std))


def gm_collapse_time(n: int, dim: int, std: float = 1.0) -> float:
    """``t_C = 1/2 log(1 + s^2 / (n^{2/d} - 1))`` (the REM condensation time; ``log n / d = O(1)`` regime)."""
    if n < 2:
        raise ValueError(f"collapse needs n >= 2 training points, got {n}")
    return 0.5 * math.log1p(std**2 / math.expm1(2 * math.log(n) / dim))


def gm_excess_entropy(t, n: int, dim: int, std: float = 1.0, clip: bool = False) -> Tensor:
    """``f(t) = s^sep(t) - s(t) = alpha + 1/2 log(Delta_t / (Delta_t + s^2 e^{-2t}))``, ``alpha = log n / d``.

    ``f -> alpha`` as ``t -> inf``, ``f(t_C) = 0``. ``clip=True`` gives ``max(f, 0)``, what the Monte-Carlo
    proxy ``f^e`` measures (it is 0 below ``t_C``).
    """
    t = _t(t)
    delta = _delta(t)
    f = math.log(n) / dim + 0.5 * torch.log(delta / (delta + std**2 * torch.exp(-2 * t)))
    return f.clamp_min(0) if clip else f


def gaussian_excess_entropy(t, n: int, eigenvalues, clip: bool = False) -> Tensor:
    """``f(t) = alpha + 1/(2d) sum_i log(Delta_t / (Delta_t + lambda_i e^{-2t}))`` for Gaussian data with covariance
    eigenvalues ``lambda_i`` (``d`` = their number, zeros included); ``clip=True`` gives ``max(f, 0)``."""
    t = _t(t)
    lam = _t(eigenvalues).reshape(-1).clamp_min(0)
    delta = _delta(t).unsqueeze(-1)
    terms = torch.log(delta / (delta + lam * torch.exp(-2 * t).unsqueeze(-1)))
    f = math.log(n) / lam.numel() + 0.5 * terms.mean(-1)
    return f.clamp_min(0) if clip else f


def gaussian_collapse_time(n: int, eigenvalues, t_hi: float = 50.0, iterations: int = 200) -> float:
    """The zero of :func:`gaussian_excess_entropy` (``f`` increases with ``t``), by bisection.

    With every eigenvalue equal to ``s^2`` it is :func:`gm_collapse_time`.
    """
    if n < 2:
        raise ValueError(f"collapse needs n >= 2 training points, got {n}")
    lam = _t(eigenvalues).reshape(-1)
    if not bool((lam > 0).any()):
        return 0.0
    lo, hi = 0.0, t_hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid == 0 or float(gaussian_excess_entropy(mid, n, lam)) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----- the paper's DDPM step unit (Fig. 4) ------------------------------------------------------------------------
# The authors' real-data runs use a linear DDPM schedule (beta 1e-4 -> 0.02, 1000 steps) indexed like diffusers'
# alphas_cumprod: step t' = 0..999 has alpha_bar[t'] = prod_{i <= t'} (1 - beta_i), so alphas_cumprod[0] = 1 - beta_1
# is already one step of noise (the note's table: t' = 950 <-> t = 4.576, t' = 100 <-> t = 0.055). Our DDPM process
# counts from clean data (its t = 0 is alpha_bar = 1), so its t is t' + 1. OU time and step meet at
# alpha_bar = e^{-2t}.


def _paper_ddpm() -> DDPM:
    return DDPM(num_steps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02)


def ddpm_step_of_ou_time(t, process=None) -> Tensor:
    """The (fractional) DDPM step ``t'`` with ``alphas_cumprod[t'] = e^{-2t}`` (the authors' and diffusers' index,
    ``alphas_cumprod[0] = 1 - beta_1``). ``process``: a :class:`~diffuse_feat.process.DDPM` (default: the paper's
    linear 1000-step schedule), whose own ``t`` is this step + 1."""
    process = process or _paper_ddpm()
    sigma = torch.sqrt(torch.expm1(2 * _t(t)))  # the OU state's sigma-space noise level
    return process.t_of_sigma(sigma) - 1


def ou_time_of_ddpm_step(step, process=None) -> Tensor:
    """The OU time ``t = -1/2 log alphas_cumprod[t']`` of integer DDPM steps ``t'`` (the authors' index, as
    :func:`ddpm_step_of_ou_time`, whose inverse it is on integers): ``t' = 950 -> 4.576``, ``100 -> 0.055``."""
    process = process or _paper_ddpm()
    steps = torch.as_tensor(step, dtype=torch.long)
    if bool((steps < 0).any()) or bool((steps >= process.num_steps).any()):
        raise ValueError(f"DDPM steps must lie in 0..{process.num_steps - 1}, got {steps.tolist()}")
    return -0.5 * process.log_alpha_bar[steps + 1]  # DDPM's own t counts from clean data: t' + 1


def ddpm_speciation_step(top_eigenvalue: float, process=None) -> int:
    """``t'_S``: the first step (the authors' index, as :func:`ddpm_step_of_ou_time`) with
    ``alphas_cumprod[t'] < 1 / Lambda``, the unit of the paper's Fig. 4."""
    process = process or _paper_ddpm()
    alphas_cumprod_log = process.log_alpha_bar[1:]  # drop DDPM's clean t = 0: index t'
    below = torch.nonzero(alphas_cumprod_log < -math.log(float(top_eigenvalue))).reshape(-1)
    if below.numel() == 0:
        raise ValueError(f"alpha_bar never falls below 1 / Lambda = {1 / top_eigenvalue:.4g} on this schedule")
    return int(below[0])
