"""``DiffusersUNet``: diffusers' own ``UNet2DModel`` as a backbone, so our modules train it (by ``class_path``).

The U-Net is told EDM's ``c_noise = ln(sigma) / 4`` as its timestep: with the default EDM preconditioning the trained
network is then exactly what diffusers' ``EDMEulerScheduler`` drives (``precondition_inputs``, ``precondition_noise``,
``precondition_outputs``), which is how :func:`diffuse_feat.interop.diffusers.export_diffusers` writes it out.
Needs the optional extra: ``pip install -e ".[diffusers]"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..denoisers.adapters import edm_noise_conditioning
from ..errors import ConfigError

__all__ = ["DiffusersUNet", "require_diffusers", "attention_for_jacobians"]


def require_diffusers():
    """The ``diffusers`` module, or a one-sentence error naming the extra that installs it."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError('this needs the optional diffusers package; install it with pip install -e ".[diffusers]"') \
            from None
    return diffusers


def attention_for_jacobians(module: nn.Module):
    """Plain-math attention while an evaluated network is differentiated (diagnostics' Jacobians differentiate it
    twice, which PyTorch's fused attention kernels do not support); the fused kernels otherwise."""
    if torch.is_grad_enabled() and not module.training:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class DiffusersUNet(nn.Module):
    """``UNet2DModel`` for images ``[C, H, W]`` (``H`` and ``W`` divisible by ``2^(levels - 1)``).

    Args:
        input_shape, output_shape: filled in by the module (channels first; the output has the input's size).
        block_out_channels: channels per level (one level per entry).
        layers_per_block: ResNet blocks per level.
        norm_num_groups: GroupNorm groups (must divide every channel count).
        down_block_types, up_block_types: diffusers block names per level (default ``DownBlock2D`` /
            ``UpBlock2D`` everywhere; e.g. ``AttnDownBlock2D`` adds self-attention).
        add_attention: self-attention in the middle block.
    """

    def __init__(self, input_shape: Sequence[int], output_shape: Sequence[int],
                 block_out_channels: Sequence[int] = (32, 64), layers_per_block: int = 1, norm_num_groups: int = 8,
                 down_block_types: Sequence[str] | None = None, up_block_types: Sequence[str] | None = None,
                 add_attention: bool = True):
        super().__init__()
        diffusers = require_diffusers()
        if len(input_shape) != 3 or len(output_shape) != 3 or tuple(input_shape[1:]) != tuple(output_shape[1:]):
            raise ConfigError(f"DiffusersUNet needs images [C, H, W] in and out of the same size, got input "
                              f"{list(input_shape)} and output {list(output_shape)}; use it for image data")
        levels, factor = len(block_out_channels), 2 ** (len(block_out_channels) - 1)
        if input_shape[1] % factor or input_shape[2] % factor:
            raise ConfigError(f"DiffusersUNet with {levels} levels needs H and W divisible by {factor}, got "
                              f"{input_shape[1]}x{input_shape[2]}; use fewer block_out_channels")
        self.unet = diffusers.UNet2DModel(
            sample_size=tuple(int(s) for s in input_shape[1:]), in_channels=int(input_shape[0]),
            out_channels=int(output_shape[0]), block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
            down_block_types=tuple(down_block_types or ("DownBlock2D",) * levels),
            up_block_types=tuple(up_block_types or ("UpBlock2D",) * levels), add_attention=add_attention)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        with attention_for_jacobians(self):
            return self.unet(x, edm_noise_conditioning(sigma.float())).sample
