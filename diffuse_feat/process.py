"""Noise processes in one convention: ``x_t = s(t) * (x_0 + sigma(t) * z)``.

Every analysis in the library works in *sigma-space* (``x = x_0 + sigma z``, the VE/EDM form).
A process only says how a user's time variable ``t`` maps onto ``(s, sigma)``, so that models
trained or analysed with DDPM indices or Ornstein-Uhlenbeck time can be moved into sigma-space
with one call (:meth:`NoiseProcess.to_sigma_space`) and back.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "append_dims",
    "NoiseProcess",
    "VarianceExploding",
    "OrnsteinUhlenbeck",
    "DDPM",
    "as_sigma",
    "edm_sigma_grid",
]


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


def edm_sigma_grid(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *, append_zero: bool = False
) -> Tensor:
    """Karras et al. (EDM) rho-schedule, from ``sigma_max`` down to ``sigma_min`` (float64).

    ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if num_steps == 1:
        grid = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(num_steps, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        grid = (a + i / (num_steps - 1) * (b - a)) ** rho
    if append_zero:
        grid = torch.cat([grid, grid.new_zeros(1)])
    return grid


class NoiseProcess:
    """``x_t = s(t) (x_0 + sigma(t) z)``. Subclasses define :meth:`sigma`, :meth:`scale`, :meth:`t_of_sigma`."""

    def sigma(self, t: Tensor | float) -> Tensor:
        raise NotImplementedError

    def scale(self, t: Tensor | float) -> Tensor:
        raise NotImplementedError

    def t_of_sigma(self, sigma: Tensor | float) -> Tensor:
        raise NotImplementedError

    def scale_of_sigma(self, sigma: Tensor | float) -> Tensor:
        return self.scale(self.t_of_sigma(sigma))

    def to_sigma_space(self, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Map a state at time ``t`` to ``(x_t / s(t), sigma(t))``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        s = self.scale(t).to(x_t.dtype).to(x_t.device)
        return x_t / _per_sample(s, x_t), self.sigma(t).to(x_t.device)

    def from_sigma_space(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
        """Map a sigma-space state to ``(s(t) x, t)``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        t = self.t_of_sigma(sigma)
        s = self.scale(t).to(x.dtype).to(x.device)
        return x * _per_sample(s, x), t.to(x.device)

    def add_noise(self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
        """Sample ``x_t`` given ``x_0``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        s = _per_sample(self.scale(t).to(x0), x0)
        sig = _per_sample(self.sigma(t).to(x0), x0)
        return s * (x0 + sig * z)


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """``v`` of shape ``[B]`` (one value per sample) as ``[B, 1, ..., 1]`` with ``ndim`` dimensions, so it
    broadcasts against a batch ``[B, ...]`` of that many dimensions."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or ``[B]`` tensor to broadcast against ``x`` of shape ``[B, ...]``."""
    v = v.to(device=x.device)
    return append_dims(v, x.ndim) if v.ndim == 1 else v


class VarianceExploding(NoiseProcess):
    """VE / EDM: ``s = 1``, ``sigma = t``."""

    def sigma(self, t):
        return torch.as_tensor(t, dtype=torch.float64)

    def scale(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def t_of_sigma(self, sigma):
        return torch.as_tensor(sigma, dtype=torch.float64)


class OrnsteinUhlenbeck(NoiseProcess):
    """``dx = -x dt + sqrt(2) dW``: ``x(t) = a e^{-t} + sqrt(1 - e^{-2t}) z`` (Biroli et al.).

    In sigma-space: ``s = e^{-t}``, ``sigma = sqrt(e^{2t} - 1)``, ``t = log(1 + sigma^2) / 2``.
    """

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.sqrt(torch.expm1(2 * t))

    def scale(self, t):
        return torch.exp(-torch.as_tensor(t, dtype=torch.float64))

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return 0.5 * torch.log1p(sigma**2)

    @staticmethod
    def delta(t):
        """``Delta_t = 1 - e^{-2t}``, the variance of the noise in OU time."""
        return -torch.expm1(-2 * torch.as_tensor(t, dtype=torch.float64))


class DDPM(NoiseProcess):
    """Discrete variance-preserving schedule (Ho et al.; Nichol & Dhariwal for ``cosine``).

    ``alpha_bar_k = prod_{i<=k} (1 - beta_i)`` for ``k = 0..T`` with ``alpha_bar_0 = 1``;
    ``s = sqrt(alpha_bar)``, ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. Non-integer ``t`` is
    interpolated linearly in ``log alpha_bar`` so ``t <-> sigma`` is a smooth monotone bijection.
    """

    def __init__(
        self,
        num_steps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ):
        self.num_steps = num_steps
        self.schedule = schedule
        k = torch.arange(1, num_steps + 1, dtype=torch.float64)
        if schedule == "linear":
            betas = beta_start + (beta_end - beta_start) * (k - 1) / max(num_steps - 1, 1)
        elif schedule == "cosine":
            f = lambda u: torch.cos((u / num_steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2  # noqa: E731
            betas = (1 - f(k) / f(k - 1)).clamp(max=0.999)
        else:
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        self.betas = betas
        self.log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])

    def __getstate__(self) -> dict:
        # the per-device copies stay out of pickles (checkpoints' hyperparameters): CPU tables only
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    def _table(self, device: torch.device) -> Tensor:
        """``log alpha_bar`` on ``device``, copied there once (a copy per call would sync a GPU every step)."""
        if self.log_alpha_bar.device != device:
            cache = self.__dict__.setdefault("_tables", {})
            if device not in cache:
                cache[device] = self.log_alpha_bar.to(device)
            return cache[device]
        return self.log_alpha_bar

    def _log_alpha_bar(self, t):
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_steps)
        table = self._table(t.device)
        lo = t.floor().long().clamp(max=self.num_steps - 1)
        w = t - lo
        return (1 - w) * table[lo] + w * table[lo + 1]

    def alpha_bar(self, t):
        return torch.exp(self._log_alpha_bar(t))

    def sigma(self, t):
        return torch.sqrt(torch.expm1(-self._log_alpha_bar(t)))

    def scale(self, t):
        return torch.exp(0.5 * self._log_alpha_bar(t))

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        target = -torch.log1p(sigma**2)  # log alpha_bar, decreasing in t
        table = self._table(sigma.device)
        if bool((target < table[-1] - 1e-12).any()):
            raise ValueError(
                f"sigma={float(sigma.max()):.4g} exceeds this DDPM schedule's maximum "
                f"{float(self.sigma(self.num_steps)):.4g}"
            )
        hi = torch.searchsorted(-table, -target).clamp(1, self.num_steps)
        lo = hi - 1
        w = (table[lo] - target) / (table[lo] - table[hi])
        return lo.to(torch.float64) + w.clamp(0, 1)
