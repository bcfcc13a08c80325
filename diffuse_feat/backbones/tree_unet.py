"""A sigma-conditioned 1-D U-Net whose every level merges ``s`` neighbours: the shape of an RHM derivation tree.

Inputs are sequences ``[B, C, s^L]`` (one-hot RHM strings: ``C = v`` channels, ``s^L`` leaves). Going down,
a convolution with kernel = stride = ``s`` turns the ``s`` children of each node into the node (an upward BP
message has exactly this receptive field), followed by residual position-wise blocks; going up, a transposed
convolution hands each node's state back to its ``s`` children and a skip connection adds what the encoder
saw at that level (the downward message). So level ``l`` of the network sees exactly level ``l`` of the tree,
which is the inductive bias that lets a small network learn a deep grammar from samples. With
``output_shape = (num_classes,)`` the same class is a classifier on the root's state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .base import SigmaEmbedding

__all__ = ["TreeUNet"]


class _NodeNorm(nn.LayerNorm):
    """LayerNorm over the channels of each position of ``[B, C, N]``: no statistics shared between nodes
    (GroupNorm's would carry information across the whole string and break the tree's locality)."""

    def forward(self, h: Tensor) -> Tensor:
        return super().forward(h.transpose(1, 2)).transpose(1, 2)


class _NodeBlock(nn.Module):
    """Position-wise residual block: LayerNorm, 1x1 conv to ``2 width``, FiLM from sigma, SiLU, 1x1 conv back."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = _NodeNorm(width)
        self.inner = nn.Conv1d(width, 2 * width, 1)
        self.film = nn.Linear(emb_dim, 4 * width)
        self.outer = nn.Conv1d(2 * width, width, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
        return h + self.outer(F.silu(self.inner(self.norm(h)) * (1 + scale) + shift))


class TreeUNet(nn.Module):
    """Encoder ``s^L -> 1`` positions by ``levels`` merges of ``s`` neighbours, decoder back, skips per level.

    Args:
        input_shape: ``(channels, length)`` with ``length = s^levels`` (more generally divisible by ``s^levels``).
        output_shape: ``input_shape`` for a denoiser, ``(num_classes,)`` for a classifier.
        width: channels at every level.
        s: branching factor (kernel and stride of the merges).
        levels: number of merges (default: all the way to one position, ``log_s length``).
        blocks: residual position-wise blocks after each merge and after each split.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        width: int = 256,
        s: int = 2,
        levels: int | None = None,
        blocks: int = 1,
    ):
        super().__init__()
        self.input_shape = tuple(int(n) for n in input_shape)
        self.output_shape = tuple(int(n) for n in output_shape)
        if len(self.input_shape) != 2:
            raise ValueError(f"TreeUNet needs input_shape (channels, length), got {list(input_shape)}")
        channels, length = self.input_shape
        if levels is None:
            levels = round(math.log(length, s))
        if levels < 1 or length % s**levels:
            raise ValueError(f"TreeUNet: length {length} is not divisible by s^levels = {s}^{levels}")
        self.is_classifier = len(self.output_shape) == 1
        if not self.is_classifier and self.output_shape[1:] != self.input_shape[1:]:
            raise ValueError(f"TreeUNet output_shape must be (num_classes,) or (channels, {length}), "
                             f"got {list(output_shape)}")
        self.s, self.levels = s, levels
        emb_dim = width
        self.embed = SigmaEmbedding(emb_dim)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(_NodeBlock(width, emb_dim) for _ in range(blocks))

        self.stem = nn.Conv1d(channels, width, 1)
        self.leaf_blocks = stack()
        self.merge = nn.ModuleList(nn.Conv1d(width, width, s, stride=s) for _ in range(levels))
        self.down = nn.ModuleList(stack() for _ in range(levels))
        self.out_norm = _NodeNorm(width)
        if self.is_classifier:
            self.head = nn.Linear(width, self.output_shape[0])
            return
        self.split = nn.ModuleList(nn.ConvTranspose1d(width, width, s, stride=s) for _ in range(levels))
        self.up = nn.ModuleList(stack() for _ in range(levels))
        self.out = nn.Conv1d(width, self.output_shape[0], 1)

    def _encode(self, x: Tensor, sigma: Tensor) -> tuple[list[Tensor], Tensor]:
        """States at every level, leaves first and root last, and the sigma embedding."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"TreeUNet was built for inputs [batch, {', '.join(map(str, self.input_shape))}], "
                             f"got {list(x.shape)}")
        emb = F.silu(self.embed(sigma))
        h = self.stem(x)
        for block in self.leaf_blocks:
            h = block(h, emb)
        states = [h]
        for merge, stage in zip(self.merge, self.down, strict=True):
            h = merge(h)
            for block in stage:
                h = block(h, emb)
            states.append(h)
        return states, emb

    def hidden_features(self, x: Tensor, sigma: Tensor) -> list[Tensor]:
        """The encoder's state at every level of the tree, leaves first."""
        return self._encode(x, sigma)[0]

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        states, emb = self._encode(x, sigma)
        h = states.pop()
        if self.is_classifier:
            return self.head(F.silu(self.out_norm(h)).mean(-1))
        for split, stage in zip(self.split, self.up, strict=True):
            h = split(h) + states.pop()
            for block in stage:
                h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))
