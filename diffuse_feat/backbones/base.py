"""What every backbone shares: the constructor contract and the noise-level embedding.

A backbone is a plain ``nn.Module`` with no training logic. Its constructor takes
``input_shape`` and ``output_shape`` first (the module that owns it fills them in: the data shape
for a denoiser, ``(num_classes,)`` for a classifier), then its own architecture arguments.
``forward(x, sigma)`` takes ``x`` of shape ``[B, *input_shape]`` and one noise level per sample
(``sigma = 0`` for clean inputs) and returns ``[B, *output_shape]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BackboneFactory", "SigmaEmbedding", "numel"]

BackboneFactory = Callable[[Sequence[int], Sequence[int]], nn.Module]
"""``(input_shape, output_shape) -> nn.Module``: a backbone class, or a ``functools.partial`` of one.
In YAML it is ``class_path`` + ``init_args`` without the two shapes, which the module links in."""


def numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


class SigmaEmbedding(nn.Module):
    """Embeds ``c_noise = ln(sigma) / 4`` (EDM) with a fixed bank of sinusoids, then a small MLP.

    ``sigma`` is clamped at ``sigma_floor`` so clean inputs (sigma = 0) get a finite embedding.
    """

    def __init__(self, dim: int, num_frequencies: int = 32, sigma_floor: float = 1e-3):
        super().__init__()
        self.sigma_floor = sigma_floor
        # periods from 2 down to ~0.03 in c_noise units cover the range ln(0.002)/4 .. ln(80)/4
        self.register_buffer("freqs", math.pi * 2.0 ** torch.linspace(0, 6, num_frequencies), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: Tensor) -> Tensor:
        c = torch.log(sigma.float().clamp_min(self.sigma_floor)).reshape(-1, 1) / 4
        angles = c * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))
