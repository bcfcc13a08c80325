"""The Ornstein-Uhlenbeck time of Biroli et al. (2024) on top of any sigma-space denoiser.

Forward process ``dx = -x dt + sqrt(2) dW``: ``x(t) = a e^{-t} + sqrt(Delta_t) z``, ``Delta_t = 1 - e^{-2t}``.
It is :class:`~diffuse_feat.process.OrnsteinUhlenbeck`: in sigma-space ``y = x e^{t} = a + sigma(t) z`` with
``sigma(t) = sqrt(e^{2t} - 1)``, so a denoiser ``D(y, sigma) = E[a | y]`` gives the OU score

    ``F(x, t) = grad_x log P_t(x) = (e^{-t} D(x e^{t}; sigma(t)) - x) / Delta_t``.

Backward dynamics, from ``t = T`` down to ``t_min`` on a decreasing grid (step ``eta = t_k - t_{k+1}``):

* SDE, the authors' Euler-Maruyama: ``x(t - eta) = x + eta [x + 2 F(x, t)] + sqrt(2 eta) xi`` (:func:`sample_ou_sde`);
* probability-flow ODE: ``x(t - eta) = x + eta [x + F(x, t)]`` (:func:`sample_ou_ode`).

Both have the signature of every sampler (:mod:`diffuse_feat.samplers`) on a grid of OU times, ``hook`` receiving
``t`` where the sigma-space samplers give ``sigma``; :data:`OU_SAMPLERS` names them by method.

The exact empirical score is stiff near ``t = 0`` (``1/Delta_t ~ 1/2t``), hence :func:`ou_time_grid`:
uniform above ``t = 1``, geometric below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .denoisers.base import Denoiser
from .per_sample import as_sigma
from .process import OrnsteinUhlenbeck
from .samplers import NoiseSource, Sampler, SeededNoise, StepHook, noise_like

__all__ = [
    "OU",
    "OU_SAMPLERS",
    "ou_delta",
    "ou_sigma",
    "ou_denoise",
    "ou_score",
    "ou_log_density",
    "ou_forward",
    "ou_time_grid",
    "merge_times",
    "ou_step",
    "sample_ou_sde",
    "sample_ou_ode",
    "ou_sample",
]

OU = OrnsteinUhlenbeck()

Method = Literal["sde", "ode"]


def ou_delta(t: float) -> float:
    """``Delta_t = 1 - e^{-2t}``."""
    return -math.expm1(-2 * t)


def ou_sigma(t: float) -> float:
    """``sigma(t) = sqrt(e^{2t} - 1)``: the sigma-space noise level of OU time ``t``."""
    return math.sqrt(math.expm1(2 * t))


def ou_denoise(denoiser: Denoiser, x: Tensor, t: float) -> Tensor:
    """``E[a | x(t) = x] = D(x e^{t}; sigma(t))``, in data units."""
    return denoiser(x * math.exp(t), as_sigma(ou_sigma(t), x.shape[0], device=x.device, dtype=x.dtype))


def ou_score(denoiser: Denoiser, x: Tensor, t: float) -> Tensor:
    """``F(x, t) = (e^{-t} D(x e^{t}; sigma(t)) - x) / Delta_t`` (needs ``t > 0``)."""
    if t <= 0:
        raise ValueError(f"the OU score needs t > 0, got t={t}")
    return (math.exp(-t) * ou_denoise(denoiser, x, t) - x) / ou_delta(t)


def ou_log_density(model, x: Tensor, t: float) -> Tensor:
    """``log P_t(x)`` in OU space from a sigma-space density ``model.log_density(y, sigma)``.

    ``x = e^{-t} y`` is a linear change of variables in ``d`` dimensions, so
    ``log P_t(x) = log p_sigma(t)(x e^{t}) + d t``. Works with :class:`EmpiricalDenoiser` (``log P_t^e``),
    :class:`GaussianDenoiser` and :class:`GaussianMixtureDenoiser`.
    """
    d = x[0].numel()
    sigma = as_sigma(ou_sigma(t), x.shape[0], device=x.device, dtype=torch.float64)
    return model.log_density(x * math.exp(t), sigma) + d * t


def ou_forward(a: Tensor, t: float, generator: torch.Generator | None = None) -> Tensor:
    """``x(t) = a e^{-t} + sqrt(Delta_t) z``."""
    z = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    return a * math.exp(-t) + math.sqrt(ou_delta(t)) * z


def ou_time_grid(
    t_max: float = 10.0, t_min: float = 1e-3, step: float = 0.01, t_switch: float = 1.0, num_geometric: int = 400
) -> Tensor:
    """Decreasing OU times from ``t_max`` to ``t_min`` (float64): steps of about ``step`` down to ``t_switch``,
    then ``num_geometric`` geometric steps from ``t_switch`` to ``t_min``.

    ``t_min = 0`` or ``num_geometric = 0`` gives a uniform grid all the way (fine for smooth population scores;
    the exact empirical score needs the geometric tail, the note uses ``step = 0.01``, 400 steps to 1e-3).
    """
    if not 0 <= t_min < t_max:
        raise ValueError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    geometric = t_min > 0 and num_geometric > 0 and t_min < t_switch
    t_low = min(max(t_switch, t_min), t_max) if geometric else t_min
    parts = []
    if t_max > t_low:
        n = max(1, math.ceil((t_max - t_low) / step - 1e-9))
        parts.append(torch.linspace(t_max, t_low, n + 1, dtype=torch.float64))
    if geometric:
        tail = torch.logspace(math.log10(t_low), math.log10(t_min), num_geometric + 1, dtype=torch.float64)
        parts.append(tail[1:] if parts else tail)
    return torch.cat(parts)


def merge_times(grid: Tensor, times: Sequence[float] | Tensor, atol: float = 1e-9) -> Tensor:
    """``grid`` with ``times`` inserted (decreasing, duplicates within ``atol`` dropped); every time must lie in
    ``[grid[-1], grid[0]]``."""
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() and (times.max() > grid[0] + atol or times.min() < grid[-1] - atol):
        raise ValueError(f"times must lie in the grid's range [{float(grid[-1]):.4g}, {float(grid[0]):.4g}], "
                         f"got [{float(times.min()):.4g}, {float(times.max()):.4g}]")
    merged = torch.sort(torch.cat([grid, times]), descending=True).values
    keep = torch.ones_like(merged, dtype=torch.bool)
    keep[1:] = (merged[:-1] - merged[1:]) > atol
    return merged[keep]


def ou_step(x: Tensor, denoised: Tensor, t: float, t_next: float, method: Method = "sde",
            noise: NoiseSource = None) -> Tensor:
    """One backward step from ``t`` to ``t_next < t`` given ``denoised = E[a | x(t)]`` (see the module docstring)."""
    if method not in ("sde", "ode"):
        raise ValueError(f"method must be 'sde' or 'ode', got {method!r}")
    eta, delta = t - t_next, ou_delta(t)
    drift = 2 * eta if method == "sde" else eta  # the SDE's drift carries the score twice
    # x + eta x + drift (e^{-t} D - x) / Delta, as one linear combination (fewer passes over the batch)
    out = x.mul(1 + eta - drift / delta).add_(denoised, alpha=drift * math.exp(-t) / delta)
    if method == "sde":
        out.add_(noise_like(x, noise), alpha=math.sqrt(2 * eta))
    return out


def _ou_backward(denoiser: Denoiser, x: Tensor, times: Tensor, method: Method, noise: NoiseSource,
                 hook: StepHook | None) -> Tensor:
    """From state ``x`` at ``times[0]`` down to ``times[-1]``; ``hook`` sees every grid time, the last one included
    (its ``denoised`` is ``E[a | x(times[-1])]``, evaluated only for a hook)."""
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() < 2 or bool((times[1:] >= times[:-1]).any()) or float(times[-1]) < 0:
        raise ValueError("times must be a strictly decreasing grid of at least two OU times >= 0")
    grid = times.tolist()
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        denoised = ou_denoise(denoiser, x, t)
        if hook is not None:
            hook({"i": i, "x": x, "t": t, "denoised": denoised})
        x = ou_step(x, denoised.to(x.dtype), t, t_next, method, noise)
    if hook is not None:
        hook({"i": len(grid) - 1, "x": x, "t": grid[-1], "denoised": ou_denoise(denoiser, x, grid[-1])})
    return x


@torch.no_grad()
def sample_ou_sde(denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                  hook: StepHook | None = None) -> Tensor:
    """The backward SDE (the authors' Euler-Maruyama) from state ``x`` at ``grid[0]`` down to ``grid[-1]``, a
    strictly decreasing grid of OU times (:func:`ou_time_grid`, or a tail of it to restart from a cloned state).
    Noise: a :class:`SeededNoise` (sample ``i`` depends only on its seed), a generator, or the global RNG."""
    return _ou_backward(denoiser, x, grid, "sde", noise, hook)


@torch.no_grad()
def sample_ou_ode(denoiser: Denoiser, x: Tensor, grid: Tensor, *, noise: NoiseSource = None,
                  hook: StepHook | None = None) -> Tensor:
    """The probability-flow ODE over a decreasing grid of OU times, as :func:`sample_ou_sde`; draws no noise."""
    return _ou_backward(denoiser, x, grid, "ode", noise, hook)


#: the OU samplers by method
OU_SAMPLERS: dict[str, Sampler] = {"sde": sample_ou_sde, "ode": sample_ou_ode}


@torch.no_grad()
def ou_sample(
    denoiser: Denoiser,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    times: Tensor,
    *,
    method: Method = "sde",
    device=None,
    dtype: torch.dtype = torch.float32,
    hook: StepHook | None = None,
) -> Tensor:
    """Generate one sample per seed: ``x(T) ~ N(0, I)`` (the stationary law), then the ``method`` sampler of
    :data:`OU_SAMPLERS` down to ``times[-1]``. Sample ``i`` depends only on ``seeds[i]``."""
    if method not in OU_SAMPLERS:
        raise ValueError(f"method must be 'sde' or 'ode', got {method!r}")
    noise = SeededNoise(seeds)
    x = noise.randn(tuple(data_shape), device=device, dtype=dtype)
    return OU_SAMPLERS[method](denoiser, x, times, noise=noise, hook=hook)
