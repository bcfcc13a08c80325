"""A network that already is a sigma-space denoiser, ``net(x, sigma, ...) -> D(x, sigma)``: EDM's networks
(``EDMPrecond`` and its kin: preconditioning inside, ``sigma_min``/``sigma_max``/``round_sigma`` beside it) and
k-diffusion's wrappers (``DiscreteEpsDDPMDenoiser``, ``OpenAIDenoiser``, ``CompVisDenoiser``, ``layers.Denoiser``).

Nothing is converted; :class:`SigmaSpaceDenoiser` adds what every framework denoiser has: the input checks (sigma
finite and >= 0, one or one per sample; the samples' shape), the sigma range the model was trained on (refused
outside it, as a DDPM table is), ``round_sigma`` for samplers when the model is evaluated on a discrete set of noise
levels, and the fixed extra arguments (a class label) of every call. :mod:`diffuse_feat.interop.edm` and
:mod:`diffuse_feat.interop.k_diffusion` build it from each library's conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from ..process import refuse_sigma_outside
from .adapters import check_sample_shape, sigma_float64

__all__ = ["SigmaSpaceDenoiser"]

#: ``extra_arguments(batch, device) -> dict``: the keyword arguments of one call for a batch of that size
ExtraArguments = Callable[[int, torch.device], dict[str, Any]]


class SigmaSpaceDenoiser(nn.Module):
    """``D(x, sigma) = net(x, sigma, **extra_arguments(batch, device))`` in fp32, checked.

    Args:
        net: the network; called with ``x`` (fp32) and ``sigma`` as an fp32 ``[B]`` tensor.
        kind: what it is, in words, for error messages ("the EDM network SongUNet").
        sigma_min, sigma_max: the noise range it was trained on; sigma outside is refused in one sentence
            (:class:`~diffuse_feat.process.SigmaOutOfRangeError`). Samplers take their default grid from it.
        data_shape: the shape of one sample when the network says it (checked on every call), else ``None``.
        round_sigma: maps noise levels to those the network is evaluated at (EDM's ``round_sigma``, a quantized
            k-diffusion schedule); samplers round their grid with it, as EDM's sampler does. ``None``: identity.
        extra_arguments: the fixed keyword arguments of each call (a class label), built per batch.

    Raises:
        SigmaError: sigma NaN, infinite, negative, or neither one value nor one per sample.
        SigmaOutOfRangeError: sigma outside ``[sigma_min, sigma_max]``.
        ShapeError: samples of another shape than ``data_shape``, or an output not shaped like the input.
    """

    def __init__(self, net: nn.Module | Callable[..., Tensor], *, kind: str, sigma_min: float = 0.0,
                 sigma_max: float = math.inf, data_shape: Sequence[int] | None = None,
                 round_sigma: Callable[[Tensor], Tensor] | None = None, extra_arguments: ExtraArguments | None = None):
        super().__init__()
        self.net = net
        self.kind = kind
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.data_shape = tuple(int(d) for d in data_shape) if data_shape is not None else None
        self.round_sigma = round_sigma  # read by samplers (diffuse_feat.samplers.rounded_grid); None: no rounding
        self.extra_arguments = extra_arguments

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        check_sample_shape(x, self.data_shape, self.kind)
        s = sigma_float64(sigma, x)
        if self.sigma_min > 0 or self.sigma_max < math.inf:
            smallest, largest = (float(v) for v in torch.aminmax(s))
            refuse_sigma_outside(smallest, largest, self.sigma_min, self.sigma_max, self.kind)
        extra = self.extra_arguments(x.shape[0], x.device) if self.extra_arguments is not None else {}
        out = self.net(x.float(), s.float(), **extra)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"{self.kind} returned {got} for an input of {list(x.shape)}; a sigma-space denoiser "
                             "returns one output shaped like its input")
        return out.float()
