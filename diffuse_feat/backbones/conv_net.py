"""A plain sigma-conditioned convolutional classifier whose blocks form a feature hierarchy.

Each block is ``conv 3x3 -> GroupNorm -> + sigma shift -> SiLU``, with no skip connection, so every block's output
is its own representation rather than one residual stream plus a small correction (as in ``MLP``). Blocks marked in
``downsample`` first halve the resolution (average pooling): early blocks see small patches (low-level features),
late ones the whole image; the head averages the last block over space and applies a linear map to the classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .base import SigmaEmbedding

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """``len(channels)`` conv blocks (``channels[i]`` channels; ``downsample[i]``: average-pool by 2 first), then a
    global average pool and a linear head. A classifier only: ``output_shape`` is ``(num_classes,)``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        channels: Sequence[int] = (32, 32, 64, 64),
        downsample: Sequence[bool] = (False, False, True, True),
        max_groups: int = 8,
        embedding_dim: int = 64,
    ):
        super().__init__()
        self.input_shape, self.output_shape = tuple(int(s) for s in input_shape), tuple(int(s) for s in output_shape)
        if len(self.input_shape) != 3 or len(self.output_shape) != 1:
            raise ValueError(f"ConvNet classifies images: input_shape (channels, height, width) and output_shape "
                             f"(num_classes,), got {list(input_shape)} and {list(output_shape)}")
        if not channels or len(downsample) != len(channels):
            raise ValueError(f"ConvNet needs one downsample flag per block, got channels={list(channels)} and "
                             f"downsample={list(downsample)}")
        factor = 2 ** sum(bool(d) for d in downsample)
        if min(self.input_shape[1:]) < factor:
            raise ValueError(f"a {self.input_shape[1]}x{self.input_shape[2]} input is too small for "
                             f"{sum(bool(d) for d in downsample)} downsamplings")
        self.downsample = tuple(bool(d) for d in downsample)
        ins = [self.input_shape[0], *channels[:-1]]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(ins, channels, strict=True))
        self.norms = nn.ModuleList(nn.GroupNorm(math.gcd(max_groups, c), c) for c in channels)
        self.embed = SigmaEmbedding(embedding_dim)
        self.shifts = nn.ModuleList(nn.Linear(embedding_dim, c) for c in channels)
        self.head = nn.Linear(channels[-1], self.output_shape[0])

    def hidden_features(self, x: Tensor, sigma: Tensor) -> list[Tensor]:
        """The output of every block, first to last (``[B, channels[i], H_i, W_i]``)."""
        emb = F.silu(self.embed(sigma))
        h, features = x, []
        for conv, norm, shift, down in zip(self.convs, self.norms, self.shifts, self.downsample, strict=True):
            if down:
                h = F.avg_pool2d(h, 2)
            h = F.silu(norm(conv(h)) + shift(emb)[:, :, None, None])
            features.append(h)
        return features

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.head(self.hidden_features(x, sigma)[-1].mean(dim=(2, 3)))
