"""The denoiser protocol: ``D(x, sigma) -> E[x_0 | x_0 + sigma z = x]`` in sigma-space.

Anything with that call signature is a denoiser: a trained :class:`~diffuse_feat.denoisers.PreconditionedDenoiser`
(or the :class:`~diffuse_feat.modules.DiffusionModule` that holds it), or an exact reference below. Samplers and
diagnostics accept any of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..per_sample import append_dims, as_sigma

__all__ = ["Denoiser", "ExactDenoiser", "score_from_denoiser"]


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor: ...


def score_from_denoiser(denoiser: Denoiser, x: Tensor, sigma: Tensor | float) -> Tensor:
    """Tweedie: ``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2``."""
    s = as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype)
    return (denoiser(x, s) - x) / append_dims(s, x.ndim).square()


class ExactDenoiser(nn.Module):
    """Base for closed-form denoisers on data of shape ``data_shape`` (flattened internally to ``d``).

    Subclasses implement :meth:`denoise_flat` on ``[B, d]`` inputs with one sigma per sample.
    """

    def __init__(self, data_shape: tuple[int, ...]):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.dim = int(torch.tensor(self.data_shape).prod())

    def flatten(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.data_shape and tuple(x.shape[1:]) != (self.dim,):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [batch, {', '.join(map(str, self.data_shape))}], "
                f"got {list(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        flat = self.flatten(x)
        s = as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64)
        return self.denoise_flat(flat, s).to(x.dtype).reshape(x.shape)

    def denoise_flat(self, x: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return score_from_denoiser(self, x, sigma)
