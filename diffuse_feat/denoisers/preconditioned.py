"""Learned denoisers: a backbone ``F`` wrapped by a preconditioning into ``D(x, sigma) = E[x0 | x]``.

``PreconditionedDenoiser`` is EDM's ``EDMPrecond`` in sigma-space: ``D = c_skip x + c_out F(c_in x; sigma)``, with the
coefficients, the skip connection and the output in fp32 while the backbone may run under autocast (the fp32
boundary sits here, so every caller gets it). ``CategoricalDenoiser`` is the one-hot variant whose output is a
posterior mean by construction. Both load from a ``DiffusionModule`` checkpoint's ``state_dict`` (same ``backbone.*``
keys) without Lightning.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..per_sample import append_dims
from ..preconditioning import EDMPreconditioning, Preconditioning

__all__ = ["PreconditionedDenoiser", "CategoricalDenoiser", "CompileWhenTraining", "sigma_per_sample"]


def sigma_per_sample(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as ``[B]`` fp32 on ``x``'s device. A number is checked (free); a tensor's values are not, since
    reading them would stall the GPU every training step (``DiffusionModule.forward`` checks them, once per call)."""
    batch = x.shape[0]
    if not isinstance(sigma, Tensor):
        value = float(sigma)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"sigma must be finite and >= 0 (noise standard deviation), got {value:.4g}")
        return torch.full((batch,), value, device=x.device)
    s = sigma
    if s.dtype != torch.float32 or s.device != x.device:
        s = s.to(device=x.device, dtype=torch.float32)
    if s.ndim != 1:  # the training step's sigmas are [B] already: no extra operator launch per step
        s = s.expand(batch) if s.ndim == 0 else s.reshape(-1)
    if s.shape[0] != batch:
        raise ValueError(f"sigma has {s.shape[0]} values but the batch has {batch}; pass one sigma or one per sample")
    return s


class CompileWhenTraining:
    """Calls a backbone eagerly, or through ``torch.compile`` while it is in training mode.

    ``setting``: ``False`` (eager), ``True`` (inductor), a backend name, or ``"auto"`` (inductor when the input is
    on a CUDA GPU). Evaluation, sampling and Jacobians always run eagerly, so ``torch.func`` transforms and
    diagnostics never see a compiled graph; weights are shared. The image configs use ``"auto"``: their eager steps
    are launch-bound on a GPU and compilation pays for itself within minutes
    (``benchmarks/results/precision-h200.json``).
    The compiled wrapper is a plain attribute (no ``state_dict`` keys) and is dropped on pickling and deep copies
    (the EMA callback copies the module); it is rebuilt on demand.
    """

    def __init__(self, setting: bool | str = False):
        if not isinstance(setting, bool | str) or setting == "":
            raise ConfigError(f"model.compile_backbone must be true, false, 'auto' or a torch.compile backend name, "
                              f"got {setting!r}")
        self.setting = setting
        self.compiled: nn.Module | None = None

    def __call__(self, backbone: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
        choice = x.is_cuda if self.setting == "auto" else self.setting
        if not (choice and backbone.training):
            return backbone(x, sigma)
        if self.compiled is None:
            self.compiled = torch.compile(backbone, backend="inductor" if choice is True else str(choice))
        return self.compiled(x, sigma)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "compiled": None}


class PreconditionedDenoiser(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x; sigma)`` for a backbone ``F(x, sigma)``.

    Args:
        backbone: any ``nn.Module`` called as ``F(x, sigma)`` with ``sigma`` of shape ``[B]``, output shaped like ``x``.
        preconditioning: supplies ``(c_skip, c_out, c_in)`` (default EDM, ``sigma_data = 0.5``).
        compile_backbone: see :class:`CompileWhenTraining`.

    Called as ``D(x, sigma)`` with ``sigma`` a number or one value per sample; the result is fp32.
    """

    def __init__(self, backbone: nn.Module, preconditioning: Preconditioning | None = None,
                 compile_backbone: bool | str = False):
        super().__init__()
        self.backbone = backbone
        self.preconditioning = preconditioning if preconditioning is not None else EDMPreconditioning()
        self.backbone_call = CompileWhenTraining(compile_backbone)

    def run_backbone(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``F(x, sigma)`` in the backbone's own precision (compiled in training when ``compile_backbone`` says so)."""
        return self.backbone_call(self.backbone, x, sigma)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = sigma_per_sample(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.preconditioning.coefficients(sigma))
        x = x.float()
        raw = self.run_backbone(c_in * x, sigma).float()
        return c_skip * x + c_out * raw


class CategoricalDenoiser(PreconditionedDenoiser):
    """For one-hot data ``[B, v, N...]`` encoded as ``scale (e_a - center / v)``: the backbone outputs per-position
    logits over the ``v`` symbols and ``D(x, sigma) = scale (softmax_v F(c_in x; sigma) - center / v)``, a posterior
    mean of the codes by construction. Only ``c_in`` of the preconditioning is used.
    """

    def __init__(self, backbone: nn.Module, preconditioning: Preconditioning | None = None,
                 encoding_scale: float = 1.0, encoding_center: bool = True, compile_backbone: bool | str = False):
        super().__init__(backbone, preconditioning, compile_backbone)
        self.encoding_scale, self.encoding_center = float(encoding_scale), bool(encoding_center)

    def logits(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Per-position symbol logits ``[B, v, N...]`` of ``x`` at noise ``sigma``, in fp32."""
        sigma = sigma_per_sample(sigma, x)
        _, _, c_in = self.preconditioning.coefficients(sigma)
        return self.run_backbone(append_dims(c_in, x.ndim) * x.float(), sigma).float()

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        probs = torch.softmax(self.logits(x, sigma), dim=1)
        return self.encoding_scale * (probs - (1.0 / probs.shape[1] if self.encoding_center else 0.0))
