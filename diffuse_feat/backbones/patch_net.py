"""The two-layer patch network of Han, Huang, Cao, Zou (2024), one class for both objectives.

Inputs are ``[B, P, d]``: ``P`` patches of ``d`` features (the two-patch data has ``P = 2``). Every
first-layer filter ``w_r`` is applied to every patch, followed by an activation ``s`` (``z^2`` in the
paper). What the second layer is depends on what the owning module asks for:

* **denoiser** (``output_shape == input_shape``, used by ``DiffusionModule``): the weight-tied second
  layer ``f_p(x) = c * sum_r s(<w_r, x^(p)>) w_r`` for each patch ``p``, with ``c = 1/sqrt(m)``;
* **classifier** (``output_shape == (K,)``, used by ``ClassificationModule``): ``K`` groups of ``m``
  filters with a fixed ``+1`` second layer, ``F_k(x) = c * sum_r sum_p s(<w_{k,r}, x^(p)>)`` with
  ``c = 1/m``. For ``K = 2`` the cross-entropy on ``(F_0, F_1)`` is the paper's logistic loss on
  ``F_1 - F_0`` (the ``+-1`` second layer).

Both initialise ``w ~ N(0, init_std^2 I)`` and ignore ``sigma``: the paper trains one network per
fixed noise level, which enters only through the input ``alpha x_0 + beta eps``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["PatchNet", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "square": torch.square,  # the paper's sigma(z) = z^2
    "cube": lambda z: z.pow(3),
    "relu": torch.relu,
    "relu_square": lambda z: torch.relu(z).square(),  # Cao et al.'s ReLU^q with q = 2
}


class PatchNet(nn.Module):
    """Two-layer network with first-layer filters shared across patches (see the module docstring).

    Args:
        input_shape: ``(P, d)``: patches of ``d`` features.
        output_shape: ``input_shape`` for the denoiser, ``(K,)`` for a ``K``-class classifier.
        width: filters ``m`` (per class for the classifier).
        activation: one of :data:`ACTIVATIONS` (``square`` is the paper's).
        init_std: ``sigma_0``, the standard deviation of the initial filters (same for both uses).
        output_scale: ``c``; default ``1/sqrt(m)`` for the denoiser, ``1/m`` for the classifier.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        width: int = 20,
        activation: str = "square",
        init_std: float = 0.01,
        output_scale: float | None = None,
    ):
        super().__init__()
        self.input_shape, self.output_shape = tuple(int(s) for s in input_shape), tuple(int(s) for s in output_shape)
        if len(self.input_shape) != 2:
            raise ConfigError(f"PatchNet needs inputs of shape (patches, features), got data_shape {self.input_shape}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"backbone.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if width < 1 or init_std < 0:
            raise ConfigError(f"backbone.width must be >= 1 and init_std >= 0, got {width} and {init_std}")
        self.is_denoiser = self.output_shape == self.input_shape
        if not self.is_denoiser and len(self.output_shape) != 1:
            raise ConfigError(
                f"PatchNet outputs either the input shape {self.input_shape} (denoiser) or (num_classes,), "
                f"got {self.output_shape}"
            )
        self.width, self.activation, self.init_std = width, activation, init_std
        self.patch_dim = self.input_shape[1]
        self.num_groups = 1 if self.is_denoiser else self.output_shape[0]
        default_scale = width**-0.5 if self.is_denoiser else 1.0 / width
        self.output_scale = float(output_scale) if output_scale is not None else default_scale
        self.weight = nn.Parameter(torch.randn(self.num_groups, width, self.patch_dim) * init_std)
        self.act = ACTIVATIONS[activation]

    def first_layer_filters(self) -> Tensor:
        """``[num_groups * m, d]``: every filter ``w_r`` (classifier: class 0's ``m`` filters, then class 1's, ...)."""
        return self.weight.reshape(-1, self.patch_dim)

    def filter_classes(self) -> Tensor | None:
        """The class whose logit each filter feeds, ``[num_groups * m]``; ``None`` for the shared denoiser filters."""
        if self.is_denoiser:
            return None
        return torch.arange(self.num_groups, device=self.weight.device).repeat_interleave(self.width)

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        if self.is_denoiser:
            w = self.weight[0]  # [m, d]
            pre = torch.einsum("bpd,md->bpm", x, w)
            return self.output_scale * torch.einsum("bpm,md->bpd", self.act(pre), w)
        pre = torch.einsum("bpd,kmd->bkpm", x, self.weight)
        return self.output_scale * self.act(pre).sum(dim=(2, 3))

    def extra_repr(self) -> str:
        kind = "denoiser (tied)" if self.is_denoiser else f"{self.num_groups}-class (fixed +1 second layer)"
        return (f"{kind}, patches={self.input_shape[0]}, d={self.patch_dim}, width={self.width}, "
                f"activation={self.activation}, init_std={self.init_std}, output_scale={self.output_scale:.4g}")
