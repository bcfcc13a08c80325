"""Samplers in sigma-space for any denoiser ``D(x, sigma)``.

* :func:`sample_euler`, :func:`sample_heun`: the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma``
  (Karras et al. 2022, Alg. 1 without churn);
* :func:`sample_stochastic`: the ancestral discretisation of the reverse SDE (exact Gaussian transitions
  between consecutive sigmas);
* :func:`generate` (from pure noise) and :func:`forward_backward` (noise data to sigma, denoise back).

Every sampler, here and the Ornstein-Uhlenbeck ones of :mod:`diffuse_feat.ou`, has one signature,
``sampler(denoiser, x, grid, *, noise=None, hook=None) -> x_end`` (k-diffusion's), so :data:`SAMPLERS` is a lookup
by name. ``hook(step)`` is called once per step with one dict: ``i``, ``x`` (the state at the step's start),
``sigma`` (or ``t`` for the OU samplers), ``denoised`` (``E[x0 | x]``), and for Heun ``corrector`` (the same three
keys at its second evaluation); a hook reads the keys it needs, so new ones can be added without breaking it.
Randomness comes from a :class:`SeededNoise` (one generator per sample, so sample ``i`` is the same whatever the
batch it is drawn in) or a plain ``torch.Generator`` (faster, batch-dependent); the ODE samplers draw none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from .denoisers.base import Denoiser
from .per_sample import as_sigma
from .process import SigmaOutOfRangeError, edm_sigma_grid, refuse_sigma_outside

__all__ = [
    "noise_like",
    "SeededNoise",
    "StepHook",
    "Sampler",
    "SAMPLERS",
    "sample_euler",
    "sample_heun",
    "sample_stochastic",
    "run_sampler",
    "generate",
    "forward_backward",
]

EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # EDM's default range, narrowed to a model's own where it has one

#: ``hook(step)``: ``step`` holds ``i``, ``x``, ``sigma`` (or ``t``), ``denoised`` and maybe more (module docstring)
StepHook = Callable[[dict[str, Any]], None]
SamplerName = Literal["euler", "heun", "stochastic"]


class SeededNoise:
    """Per-sample Gaussian noise: sample ``i`` owns ``torch.Generator().manual_seed(seeds[i])``.

    Like EDM's ``StackedRandomGenerator``: the noise a sample sees is a function of its seed only,
    not of the batch size or of its position in the batch.
    """

    def __init__(self, seeds: Sequence[int] | Tensor):
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        self.seeds = seeds
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], *, device=None, dtype=torch.float32) -> Tensor:
        """``[len(seeds), *shape]`` standard normal draws (generated on CPU, then moved)."""
        out = torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.generators])
        return out.to(device)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"SeededNoise has {len(self)} seeds but the batch has {x.shape[0]} samples")
        return self.randn(x.shape[1:], device=x.device, dtype=x.dtype)


NoiseSource = SeededNoise | torch.Generator | None


class Sampler(Protocol):
    """What every sampler is: ``x`` at ``grid[0]`` -> the state at ``grid[-1]``."""

    def __call__(self, denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                 hook: StepHook | None = None) -> Tensor: ...


def noise_like(x: Tensor, noise: NoiseSource) -> Tensor:
    """Standard normal noise shaped like ``x`` from ``noise``: per-sample seeds, a generator, or the global RNG."""
    if isinstance(noise, SeededNoise):
        return noise.randn_like(x)
    if isinstance(noise, torch.Generator) and noise.device != x.device:
        return torch.randn(x.shape, generator=noise, dtype=x.dtype).to(x.device)
    return torch.randn(x.shape, generator=noise, device=x.device, dtype=x.dtype)


def model_sigma_range(denoiser: Denoiser) -> tuple[float, float]:
    """The noise range ``denoiser`` was trained on, when it says (``sigma_min``, ``sigma_max``), else ``(0, inf)``."""
    return float(getattr(denoiser, "sigma_min", 0.0) or 0.0), float(getattr(denoiser, "sigma_max", math.inf))


def default_grid_range(denoiser: Denoiser, sigma_min: float | None, sigma_max: float | None) -> tuple[float, float]:
    """``sigma_min``/``sigma_max`` as given, or EDM's defaults (0.002, 80) narrowed to the model's own range."""
    low, high = model_sigma_range(denoiser)
    return (max(EDM_SIGMA_MIN, low) if sigma_min is None else float(sigma_min),
            min(EDM_SIGMA_MAX, high) if sigma_max is None else float(sigma_max))


def rounded_grid(denoiser: Denoiser, sigmas: Tensor) -> Tensor:
    """The grid's non-zero levels rounded by the model's ``round_sigma`` (EDM networks, quantized k-diffusion models),
    as EDM's sampler does; unchanged for models without one."""
    round_sigma = getattr(denoiser, "round_sigma", None)
    if round_sigma is None:
        return sigmas
    positive = sigmas > 0
    out = sigmas.clone()
    out[positive] = torch.as_tensor(round_sigma(sigmas[positive]), dtype=sigmas.dtype).reshape(-1).cpu()
    return out


def _steps(denoiser: Denoiser, grid: Tensor) -> list[tuple[int, float, float]]:
    """``(i, sigma_i, sigma_{i+1})`` along a non-increasing grid, stopping at the first sigma = 0; the grid is checked
    against the model's noise range before any evaluation (one sentence naming the level and the range)."""
    sigmas = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if sigmas.numel() < 2:
        raise ValueError("a sigma grid needs at least two levels (start and end)")
    if bool((sigmas < 0).any()) or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError(f"sigma grid must be non-negative and non-increasing, got {sigmas.tolist()}")
    values = sigmas.tolist()
    steps = []
    for i, (s, s_next) in enumerate(zip(values[:-1], values[1:], strict=True)):
        if s == 0:
            break
        steps.append((i, s, s_next))
    low, high = model_sigma_range(denoiser)
    evaluated = [s for _, s, _ in steps] + [s_next for *_, s_next in steps[-1:] if s_next > 0]
    if evaluated and (low > 0 or high < math.inf):
        try:
            refuse_sigma_outside(min(evaluated), max(evaluated), low, high, f"{type(denoiser).__name__}")
        except SigmaOutOfRangeError as err:
            raise SigmaOutOfRangeError(f"the sampler's grid reaches sigma={err.sigma:.4g}, outside the range {low:.4g} "
                                       f"to {high:.4g} the model was trained on; keep the grid inside it (generate "
                                       "and forward_backward default to it when sigma_min and sigma_max are left "
                                       "out)", err.sigma, low, high) from None
    return steps


def _denoise(denoiser: Denoiser, x: Tensor, sigma: float) -> Tensor:
    return denoiser(x, as_sigma(sigma, x.shape[0], device=x.device, dtype=x.dtype))


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                 hook: StepHook | None = None) -> Tensor:
    """First-order Euler steps of the probability-flow ODE over the grid (last entry usually 0); draws no noise."""
    for i, s, s_next in _steps(denoiser, grid):
        denoised = _denoise(denoiser, x, s)
        if hook is not None:
            hook({"i": i, "x": x, "sigma": s, "denoised": denoised})
        x = x + (s_next - s) * (x - denoised) / s
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                hook: StepHook | None = None) -> Tensor:
    """Heun's second-order method (EDM Alg. 1, no churn); the step onto sigma = 0 stays first order (no
    ``corrector`` in its hook dict). Draws no noise."""
    for i, s, s_next in _steps(denoiser, grid):
        denoised = _denoise(denoiser, x, s)
        d = (x - denoised) / s
        x_next = x + (s_next - s) * d
        step = {"i": i, "x": x, "sigma": s, "denoised": denoised}
        if s_next > 0:
            denoised_next = _denoise(denoiser, x_next, s_next)
            step["corrector"] = {"x": x_next, "sigma": s_next, "denoised": denoised_next}
            d_next = (x_next - denoised_next) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        if hook is not None:
            hook(step)
        x = x_next
    return x


@torch.no_grad()
def sample_stochastic(denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                      hook: StepHook | None = None) -> Tensor:
    """Ancestral sampling of the reverse SDE: from ``sigma`` to ``sigma_next`` the posterior
    ``p(x_{sigma_next} | x_sigma)`` of the VE process is ``N(x + (sigma_down - sigma) d, sigma_up^2)``,
    with ``sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2`` and
    ``sigma_down^2 = sigma_next^2 - sigma_up^2``.

    This is DDPM's ancestral step with ``E[x0 | x]`` plugged in: it ignores the posterior spread of
    ``x0``, so on coarse grids samples are under-dispersed (on a 2-D Gaussian with the exact
    denoiser: variance -15% with 60 EDM steps, -6% with 200, ~1% with 1000). Use fine grids for statistics.
    """
    for i, s, s_next in _steps(denoiser, grid):
        denoised = _denoise(denoiser, x, s)
        if hook is not None:
            hook({"i": i, "x": x, "sigma": s, "denoised": denoised})
        var_up = s_next**2 * (s**2 - s_next**2) / s**2
        s_down = (s_next**2 - var_up) ** 0.5
        x = x + (s_down - s) * (x - denoised) / s
        if var_up > 0:
            x = x + var_up**0.5 * noise_like(x, noise)
    return x


#: the sigma-space samplers by name (the OU ones, on a grid of OU times: :data:`diffuse_feat.ou.OU_SAMPLERS`)
SAMPLERS: dict[str, Sampler] = {"euler": sample_euler, "heun": sample_heun, "stochastic": sample_stochastic}


def run_sampler(sampler: SamplerName, denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSource = None,
                hook: StepHook | None = None) -> Tensor:
    """The sampler :data:`SAMPLERS` names ``sampler``, run over the grid ``sigmas``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    return SAMPLERS[sampler](denoiser, x, sigmas, noise=noise, hook=hook)


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    data_shape: Sequence[int],
    seeds: Sequence[int] | Tensor,
    *,
    num_steps: int = 18,
    sampler: SamplerName = "heun",
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
    device=None,
    hook: StepHook | None = None,
) -> Tensor:
    """Samples from pure noise ``x = sigma_max z`` on the EDM rho-grid; one sample per seed.

    ``sigma_min``/``sigma_max`` left out are EDM's 0.002 and 80 narrowed to the model's own range (a DDPM table's
    0.01 to 157 gives 0.01 to 80); the grid is rounded by the model's ``round_sigma`` when it has one (EDM
    networks, quantized k-diffusion models) and checked against its range before the first evaluation.
    """
    sigma_min, sigma_max = default_grid_range(denoiser, sigma_min, sigma_max)
    sigmas = rounded_grid(denoiser, edm_sigma_grid(num_steps, sigma_min, sigma_max, rho, append_zero=True))
    noise = SeededNoise(seeds)
    x = _start_level(denoiser, sigmas, sigma_max) * noise.randn(tuple(data_shape), device=device)
    return run_sampler(sampler, denoiser, x, sigmas, noise=noise, hook=hook)


@torch.no_grad()
def forward_backward(
    denoiser: Denoiser,
    x0: Tensor,
    sigma: float,
    *,
    num_steps: int = 18,
    sampler: SamplerName = "heun",
    noise: NoiseSource = None,
    sigma_min: float | None = None,
    rho: float = 7.0,
    hook: StepHook | None = None,
) -> Tensor:
    """Noise ``x0`` to level ``sigma`` (``x = x0 + sigma z``), then denoise back to sigma = 0.

    The backward pass runs the EDM rho-grid from ``sigma`` to ``sigma_min`` (a single step when
    ``sigma <= sigma_min``); left out, ``sigma_min`` is 0.002 or the model's own lower end, whichever is larger, and
    the grid is rounded by the model's ``round_sigma`` when it has one. ``sigma = 0`` returns ``x0`` unchanged.
    """
    sigma = float(as_sigma(sigma, 1)[0])
    if sigma == 0:
        return x0.clone()
    sigma_min, _ = default_grid_range(denoiser, sigma_min, None)
    if sigma <= sigma_min:
        sigmas = torch.tensor([sigma, 0.0], dtype=torch.float64)
    else:
        sigmas = rounded_grid(denoiser, edm_sigma_grid(num_steps, sigma_min, sigma, rho, append_zero=True))
    x = x0 + _start_level(denoiser, sigmas, sigma) * noise_like(x0, noise)
    return run_sampler(sampler, denoiser, x, sigmas, noise=noise, hook=hook)


def _start_level(denoiser: Denoiser, sigmas: Tensor, requested: float) -> float:
    """The noise level a sampler starts from: the requested one, or its rounding when the model rounds its grid."""
    return float(sigmas[0]) if getattr(denoiser, "round_sigma", None) is not None else requested
