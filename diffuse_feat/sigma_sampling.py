"""Training noise-level densities p_train(sigma). Each draws one sigma per sample from a generator."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .process import NoiseProcess, VarianceExploding

__all__ = ["SigmaSampler", "LogNormalSigma", "LogUniformSigma", "UniformTimeSigma", "FixedSigma", "MixtureSigma"]


class SigmaSampler:
    """Draws ``[batch]`` noise levels. Subclass and implement :meth:`sample`."""

    def sample(self, batch: int, *, device=None, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class LogNormalSigma(SigmaSampler):
    """EDM: ``ln sigma ~ N(p_mean, p_std^2)``."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean, self.p_std = p_mean, p_std

    def sample(self, batch, *, device=None, generator=None):
        z = torch.randn(batch, device=device, generator=generator)
        return torch.exp(self.p_mean + self.p_std * z)


class LogUniformSigma(SigmaSampler):
    """``ln sigma`` uniform on ``[ln sigma_min, ln sigma_max]``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sample(self, batch, *, device=None, generator=None):
        u = torch.rand(batch, device=device, generator=generator)
        return torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))


class UniformTimeSigma(SigmaSampler):
    """``t`` uniform on ``[t_min, t_max]`` of a noise process, mapped to ``sigma(t)`` (DDPM-style training)."""

    def __init__(self, process: NoiseProcess | None = None, t_min: float = 1.0, t_max: float = 1000.0):
        self.process = process if process is not None else VarianceExploding()
        self.t_min, self.t_max = t_min, t_max

    def sample(self, batch, *, device=None, generator=None):
        u = torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
        t = self.t_min + u * (self.t_max - self.t_min)
        return self.process.sigma(t).to(dtype=torch.float32)  # on the device: no per-step copy to the host


class FixedSigma(SigmaSampler):
    """A single noise level (e.g. the fixed diffusion time of Han et al.)."""

    def __init__(self, sigma: float = 1.0):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def sample(self, batch, *, device=None, generator=None):
        return torch.full((batch,), float(self.sigma), device=device)


class MixtureSigma(SigmaSampler):
    """Each sigma from ``samplers[k]`` with probability ``weights[k]`` (e.g. EDM's log-normal for the mid band plus a
    log-uniform share so the extremes of the sampling range are trained too)."""

    def __init__(self, samplers: list[SigmaSampler], weights: list[float] | None = None):
        weights = [1.0] * len(samplers) if weights is None else list(weights)
        if not samplers or len(weights) != len(samplers) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"MixtureSigma needs samplers and as many weights >= 0 (not all 0), got {weights}")
        self.samplers, self.weights = list(samplers), [w / sum(weights) for w in weights]

    def sample(self, batch, *, device=None, generator=None):
        edges = torch.tensor(self.weights, device=device).cumsum(0)[:-1]
        choice = torch.searchsorted(edges, torch.rand(batch, device=device, generator=generator), right=True)
        draws = torch.stack([s.sample(batch, device=device, generator=generator).float() for s in self.samplers])
        return draws.gather(0, choice.reshape(1, -1)).reshape(-1)
