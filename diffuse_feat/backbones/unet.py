"""A small sigma-conditioned U-Net for 8x8 to 32x32 images, usable as a denoiser or a classifier.

With ``output_shape`` of the same spatial size as the input it is a denoiser (encoder, middle,
decoder with one skip connection per stage). With ``output_shape = (num_classes,)`` the same class
builds only the encoder and middle, then pools globally and applies a linear head (like
guided-diffusion's ``EncoderUNetModel``), so diffusion and classification share one backbone.

Everything is functional (no in-place ops on activations, GroupNorm instead of BatchNorm) so that
``torch.func.jacrev/jvp/vjp`` work on it in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SigmaEmbedding

__all__ = ["UNet"]


def _norm(channels: int, max_groups: int) -> nn.GroupNorm:
    # gcd keeps any channel count valid; with the defaults (32, 64, ...) it is ``max_groups`` groups
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, conv, FiLM from the sigma embedding, GroupNorm, SiLU, dropout, conv, plus skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2, self.conv2 = _norm(out_ch, groups), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class _SelfAttention(nn.Module):
    """Single-head self-attention over pixels, written out so torch.func can differentiate it."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(x)).flatten(2).chunk(3, dim=1)  # each [B, C, HW]
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(q.shape[1]), dim=-1)
        return x + self.proj(torch.einsum("bij,bcj->bci", weights, v).reshape(x.shape))


class UNet(nn.Module):
    """Sigma-conditioned U-Net; ``channel_mult[i] * base_channels`` channels at stage ``i``.

    Each stage after the first halves the resolution (average pooling). Inputs whose size is not
    divisible by ``2 ** (len(channel_mult) - 1)`` (28x28 with three downsamplings) are zero-padded
    inside ``forward`` and cropped back. ``attention`` adds self-attention: False (none), True (at the
    lowest resolution: deepest stages and middle), or a list of resolutions (heights after padding).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool | list[int] = False,
        dropout: float = 0.0,
        max_groups: int = 8,
    ):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in output_shape)
        if len(self.input_shape) != 3:
            raise ValueError(f"UNet needs input_shape (channels, height, width), got {list(input_shape)}")
        if not channel_mult or num_res_blocks < 1 or base_channels < 1:
            raise ValueError("UNet needs a non-empty channel_mult, num_res_blocks >= 1, base_channels >= 1")
        self.is_classifier = len(self.output_shape) == 1
        if not self.is_classifier and self.output_shape[1:] != self.input_shape[1:]:
            raise ValueError(
                f"UNet output_shape must be (num_classes,) or an image of the input's size "
                f"{list(self.input_shape[1:])}, got {list(output_shape)}"
            )
        in_ch, height, width = self.input_shape
        factor = 2 ** (len(channel_mult) - 1)
        if min(height, width) < factor:
            raise ValueError(
                f"a {height}x{width} input is too small for {len(channel_mult) - 1} downsamplings "
                f"(channel_mult={list(channel_mult)}); use fewer entries in channel_mult"
            )
        # pad so every downsampling halves an even size; the output is cropped back in forward
        self.padded_hw = (-(-height // factor) * factor, -(-width // factor) * factor)
        stage_res = [self.padded_hw[0] // 2**i for i in range(len(channel_mult))]
        lowest = stage_res[-1]
        attn_res = {lowest} if attention is True else set(attention or [])
        if not attn_res <= set(stage_res):
            raise ValueError(f"UNet attention={sorted(attn_res)} must list resolutions among {stage_res}")

        emb_dim = 4 * base_channels
        self.embed = SigmaEmbedding(emb_dim)
        chans = [base_channels * m for m in channel_mult]

        def block(cin: int, cout: int) -> _ResBlock:
            return _ResBlock(cin, cout, emb_dim, dropout, max_groups)

        def stage(cin: int, cout: int, res: int) -> nn.ModuleList:
            layers = [block(cin if i == 0 else cout, cout) for i in range(num_res_blocks)]
            return nn.ModuleList(layers + ([_SelfAttention(cout, max_groups)] if res in attn_res else []))

        self.conv_in = nn.Conv2d(in_ch, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        prev = base_channels
        for ch, res in zip(chans, stage_res, strict=True):
            self.down.append(stage(prev, ch, res))
            prev = ch
        # one residual block in the middle keeps the default 8x8 model cheap enough for CPU training
        mid_attention = [_SelfAttention(prev, max_groups)] if lowest in attn_res else []
        self.middle = nn.ModuleList([block(prev, prev), *mid_attention])
        self.out_norm = _norm(prev if self.is_classifier else base_channels, max_groups)
        if self.is_classifier:
            self.head = nn.Linear(prev, self.output_shape[0])
            return
        # decoder stage i sees [upsampled h, skip i], both with chans[i] channels; the channel
        # reduction is a 1x1 conv at the lower resolution, before the (parameter-free) upsampling
        deepest_first = list(reversed(range(len(chans))))
        self.up = nn.ModuleList(stage(2 * chans[i], chans[i], stage_res[i]) for i in deepest_first)
        self.reduce = nn.ModuleList(nn.Conv2d(chans[i], chans[i - 1], 1) for i in deepest_first[:-1])
        self.conv_out = nn.Conv2d(chans[0], self.output_shape[0], 3, padding=1)

    def _encode(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Return (middle output, per-stage encoder outputs, sigma embedding)."""
        if tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"UNet was built for inputs [batch, {expected}], got {list(x.shape)}")
        emb = F.silu(self.embed(sigma))
        pad_h, pad_w = self.padded_hw[0] - x.shape[2], self.padded_hw[1] - x.shape[3]
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, skips = self.conv_in(x), []
        for i, stage in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for layer in stage:
                h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        return h, skips, emb

    def hidden_features(self, x: Tensor, sigma: Tensor) -> list[Tensor]:
        """Activations after each encoder stage and after the middle block (padded size)."""
        middle, skips, _ = self._encode(x, sigma)
        return [*skips, middle]

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        h, skips, emb = self._encode(x, sigma)
        if self.is_classifier:
            return self.head(F.silu(self.out_norm(h)).mean(dim=(2, 3)))
        for i, stage in enumerate(self.up):
            if i > 0:
                h = F.interpolate(self.reduce[i - 1](h), scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in stage:
                h = layer(h, emb)
        out = self.conv_out(F.silu(self.out_norm(h)))
        top, left = (self.padded_hw[0] - x.shape[2]) // 2, (self.padded_hw[1] - x.shape[3]) // 2
        return out[:, :, top : top + x.shape[2], left : left + x.shape[3]]
