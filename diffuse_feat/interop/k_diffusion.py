"""k-diffusion, both ways.

* :func:`from_k_diffusion`: any k-diffusion denoiser (``k_diffusion.external.DiscreteEpsDDPMDenoiser``,
  ``OpenAIDenoiser`` (guided-diffusion, its learned-variance half dropped by k-diffusion), ``CompVisDenoiser``,
  ``DiscreteVDDPMDenoiser``, ``VDenoiser``, or a trained ``k_diffusion.layers.Denoiser``) is already ``model(x, sigma,
  **extra_args) -> D``; wrapped, it gets the framework's input checks, its sigma range (``model.sigmas`` of a
  discrete schedule) and, for a ``quantize=True`` schedule, ``round_sigma`` (the table's nearest sigma), so samplers
  evaluate it where k-diffusion's would.
* The other way needs nothing: every framework denoiser ``D(x, sigma)`` with ``sigma`` of shape ``[B]`` is what
  ``k_diffusion.sampling.sample_*(model, x, sigmas)`` calls (tests/test_k_diffusion.py runs its Euler, Heun and
  DPM++(2M) samplers on them).

Nothing here imports k-diffusion (``pip install -e ".[kdiffusion]"`` installs it): its models are called as they are.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..denoisers.sigma_space import SigmaSpaceDenoiser
from ..errors import ConfigError

__all__ = ["from_k_diffusion", "is_k_diffusion_denoiser"]


def is_k_diffusion_denoiser(obj: Any) -> bool:
    """Whether ``obj`` is one of k-diffusion's denoisers (a class defined in the ``k_diffusion`` package)."""
    return any(cls.__module__.split(".")[0] == "k_diffusion" for cls in type(obj).__mro__)


def _sigma_range(model) -> tuple[float, float]:
    sigmas = getattr(model, "sigmas", None)
    if isinstance(sigmas, Tensor) and sigmas.numel() >= 2:  # a discrete schedule: its table, increasing
        return float(sigmas.min()), float(sigmas.max())
    low, high = getattr(model, "sigma_min", 0.0), getattr(model, "sigma_max", math.inf)
    return float(low), float(high)


def from_k_diffusion(model, *, data_shape: tuple[int, ...] | None = None, **extra_args) -> SigmaSpaceDenoiser:
    """A k-diffusion denoiser ``model(x, sigma, **extra_args)`` as the framework's ``D(x, sigma)`` (eval mode).

    Args:
        model: the k-diffusion wrapper (or any module with its call signature).
        data_shape: the shape of one sample, when known (k-diffusion's wrappers do not say it).
        **extra_args: fixed keyword arguments of every call, as k-diffusion's ``extra_args`` (a tensor in them is
            passed as it is, so give one for the batch size you will use).
    """
    if not callable(model):
        raise ConfigError(f"from_k_diffusion takes a k-diffusion denoiser, a module model(x, sigma); got a "
                          f"{type(model).__name__}")
    sigma_min, sigma_max = _sigma_range(model)
    round_sigma = None
    if getattr(model, "quantize", False) and hasattr(model, "sigma_to_t") and hasattr(model, "t_to_sigma"):
        def round_sigma(sigma: Tensor) -> Tensor:  # the table's nearest sigma, where a quantized model is evaluated
            return model.t_to_sigma(model.sigma_to_t(sigma.to(model.sigmas.device), quantize=True))
    if hasattr(model, "eval"):
        model.eval()
    arguments = (lambda batch, device: extra_args) if extra_args else None
    return SigmaSpaceDenoiser(model, kind=f"the k-diffusion denoiser {type(model).__name__}", sigma_min=sigma_min,
                              sigma_max=sigma_max, data_shape=data_shape, round_sigma=round_sigma,
                              extra_arguments=arguments).eval()
