"""Preconditioning of a raw network ``F`` into a denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x; sigma)``.

The coefficients and the matching loss weight ``lambda(sigma)`` follow Karras et al. 2022 (EDM,
Table 1). With ``lambda = 1 / c_out^2`` every choice trains ``F`` on a unit-variance target.
Coefficients are computed in fp32 even under autocast (EDM keeps this boundary explicit).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Preconditioning", "EDMPreconditioning", "EpsilonPreconditioning", "VEPreconditioning", "NoPreconditioning"]


class Preconditioning:
    """Return ``(c_skip, c_out, c_in)`` per sample and the loss weight ``lambda(sigma)``."""

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def loss_weight(self, sigma: Tensor) -> Tensor:
        _, c_out, _ = self.coefficients(sigma)
        return 1.0 / c_out.square()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class EDMPreconditioning(Preconditioning):
    """EDM: ``c_skip = sd^2/(s^2+sd^2)``, ``c_out = s sd / sqrt(s^2+sd^2)``, ``c_in = 1/sqrt(s^2+sd^2)``."""

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = sigma_data

    def coefficients(self, sigma):
        sigma = sigma.float()
        sd2 = self.sigma_data**2
        total = sigma.square() + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), total.rsqrt()

    def loss_weight(self, sigma):
        sigma = sigma.float()
        return (sigma.square() + self.sigma_data**2) / (sigma * self.sigma_data).square()


class EpsilonPreconditioning(Preconditioning):
    """Noise prediction (DDPM / VP): ``D = x - sigma F(x / sqrt(1 + sigma^2))``; the loss is ``||F - z||^2``.

    ``c_in x`` is exactly the variance-preserving state ``x_t = sqrt(alpha_bar) (x0 + sigma z)``.
    """

    def coefficients(self, sigma):
        sigma = sigma.float()
        return torch.ones_like(sigma), -sigma, (1 + sigma.square()).rsqrt()


class VEPreconditioning(Preconditioning):
    """Song et al. VE: ``D = x + sigma F(x)``."""

    def coefficients(self, sigma):
        sigma = sigma.float()
        return torch.ones_like(sigma), sigma, torch.ones_like(sigma)


class NoPreconditioning(Preconditioning):
    """The network predicts ``x_0`` directly: ``D = F(x)``, uniform loss weight."""

    def coefficients(self, sigma):
        sigma = sigma.float()
        return torch.zeros_like(sigma), torch.ones_like(sigma), torch.ones_like(sigma)
