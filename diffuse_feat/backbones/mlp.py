"""A sigma-conditioned residual MLP on flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import SigmaEmbedding, numel

__all__ = ["MLP"]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.emb = nn.Linear(width, 2 * width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(torch.nn.functional.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class MLP(nn.Module):
    """``input -> Linear -> depth x residual(LayerNorm, Linear, +sigma embedding, SiLU, Linear) -> Linear``.

    The first layer is a plain linear map of the input, so its rows are filters that feature-learning
    diagnostics can read (:meth:`first_layer_filters`).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        width: int = 256,
        depth: int = 3,
        sigma_conditioning: bool = True,
    ):
        super().__init__()
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        self.inp = nn.Linear(numel(input_shape), width)
        self.embed = SigmaEmbedding(width) if sigma_conditioning else None
        self.blocks = nn.ModuleList(_ResidualBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, numel(output_shape))

    def first_layer_filters(self) -> Tensor:
        """``[width, d]``: the weight of the first (linear) layer, one filter per row."""
        return self.inp.weight

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        h = self.inp(x.reshape(x.shape[0], -1))
        emb = self.embed(sigma) if self.embed is not None else torch.zeros_like(h)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(torch.nn.functional.silu(self.out_norm(h)))
        return out.reshape(x.shape[0], *self.output_shape)
