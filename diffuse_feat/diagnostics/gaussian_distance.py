"""How far a denoiser is from the Gaussian-optimal (Wiener) one, in three ways (Li, Dai, Qu 2024).

* :func:`denoiser_distance` — per sigma, on noisy held-out inputs ``x = x0 + sigma n``:
  ``rmse(sigma) = E sqrt(||D(x) - R(x)||^2 / d)`` (their eq. 10) and
  ``nmse(sigma) = E ||D(x) - R(x)|| / ||R(x)||`` (their eq. 53: a ratio of norms, not squared; eq. 53
  divides by the first argument, we divide by the reference so every checkpoint is measured on one scale).
* :func:`linear_distillation` — per sigma, the best affine map ``W x + b`` to ``D`` under the noisy
  data distribution (their eqs. 8-9), solved exactly from second moments instead of by SGD, and
  :func:`relative_weight_error` ``||W - W_G||_F / ||W_G||_F`` against the Gaussian weights.
* :func:`generation_similarity` — samples of ``D`` and of a reference from the same initial noise
  with the same sampler, and their ``nmse``.

The probe noise ``n`` is drawn once from ``seed`` and reused at every sigma (as in the authors'
code), so curves are smooth in sigma and identical from one checkpoint to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoisers.base import Denoiser
from ..denoisers.gaussian import GaussianDenoiser
from ..per_sample import append_dims
from ..samplers import SamplerName, generate

__all__ = [
    "probe_noise",
    "denoise_batched",
    "denoise_on_probes",
    "output_distance",
    "denoiser_distance",
    "normalized_error",
    "linear_distillation",
    "gaussian_weights",
    "relative_weight_error",
    "generation_similarity",
]


def probe_noise(shape: Sequence[int], seed: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Standard normal noise of ``shape`` from a generator seeded with ``seed`` (fixed probe noise)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=dtype).to(device)


@torch.no_grad()
def denoise_batched(denoiser: Denoiser, x: Tensor, sigma: Tensor, batch_size: int = 2048) -> Tensor:
    """``D(x_i, sigma_i)`` for every row, ``batch_size`` rows per call (one sigma per row)."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).expand(x.shape[0])
    outs = [denoiser(x[i : i + batch_size], sigma[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs).to(x.dtype)


def _sigma_column(sigmas: Tensor | Sequence[float], x: Tensor) -> Tensor:
    """``[S, 1, ..., 1]`` noise levels broadcasting against ``[S, P, *data_shape]``."""
    s = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device).reshape(-1)
    return append_dims(s, x.ndim + 1)


def denoise_on_probes(
    denoiser: Denoiser, clean: Tensor, sigmas: Tensor | Sequence[float], noise: Tensor, batch_size: int = 2048
) -> Tensor:
    """``D(clean + sigma noise, sigma)`` for every sigma: ``[S, P, *data_shape]`` (all sigmas in few calls)."""
    s = _sigma_column(sigmas, clean)
    noisy = clean.unsqueeze(0) + s * noise.unsqueeze(0)  # [S, P, ...]
    num_s, num_p = noisy.shape[:2]
    flat_sigma = s.reshape(-1, 1).expand(num_s, num_p).reshape(-1)
    out = denoise_batched(denoiser, noisy.reshape(num_s * num_p, *clean.shape[1:]), flat_sigma, batch_size)
    return out.reshape(noisy.shape)


def normalized_error(estimate: Tensor, reference: Tensor, dim_start: int = 1) -> Tensor:
    """The project's one NMSE (Li et al. eq. 53, a ratio of norms, not squared): ``||estimate - reference|| /
    ||reference||`` per item, norms over dims from ``dim_start`` on. Every NMSE in diffuse_feat and its tests calls
    this function."""
    diff = (estimate - reference).flatten(dim_start).norm(dim=-1)
    return diff / reference.flatten(dim_start).norm(dim=-1).clamp_min(1e-12)


def output_distance(outputs: Tensor, reference_outputs: Tensor) -> dict[str, Tensor]:
    """``rmse`` and ``nmse`` per sigma from denoiser outputs ``[S, P, *data_shape]`` on the same noisy inputs."""
    diff = (outputs - reference_outputs).flatten(2).to(torch.float64)
    d = diff.shape[-1]
    rmse = (diff.square().sum(-1) / d).sqrt().mean(1)
    nmse = normalized_error(outputs.to(torch.float64), reference_outputs.to(torch.float64), dim_start=2).mean(1)
    return {"rmse": rmse, "nmse": nmse}


def denoiser_distance(
    denoiser: Denoiser,
    reference: Denoiser,
    clean: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    noise: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 2048,
) -> dict[str, Tensor]:
    """Li et al.'s "score field approximation error" between two denoisers on ``clean + sigma n``.

    ``rmse[s] = mean_i sqrt(||D(x_i) - R(x_i)||^2 / d)``, ``nmse[s] = mean_i ||D(x_i) - R(x_i)|| / ||R(x_i)||``
    with ``x_i = clean_i + sigmas[s] n_i``. Returns ``{"sigmas", "rmse", "nmse"}`` (float64, ``[S]``).
    """
    noise = probe_noise(clean.shape, seed, device=clean.device, dtype=clean.dtype) if noise is None else noise
    out = denoise_on_probes(denoiser, clean, sigmas, noise, batch_size)
    ref = denoise_on_probes(reference, clean, sigmas, noise, batch_size)
    return {"sigmas": torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1), **output_distance(out, ref)}


# ----- linear distillation ------------------------------------------------------------------------


@torch.no_grad()
def linear_distillation(
    denoiser: Denoiser,
    clean: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    draws: int | None = None,
    seed: int = 0,
    batch_size: int = 2048,
) -> dict[str, Tensor]:
    """Best affine approximation of ``D(., sigma)`` under ``x = x0 + sigma n`` (``x0`` from ``clean``), per sigma.

    ``min_{W,b} E ||W x + b - D(x)||^2`` is least squares; its normal equations give
    ``W = C_Dx C_xx^{-1}`` and ``b = E D - W E x`` with ``C_xx = Cov(x)``, ``C_Dx = Cov(D(x), x)``.
    The moments are accumulated in float64 over chunks of ``batch_size`` inputs (``draws`` noise draws
    per clean point; default: enough for at least ``4 d`` samples), so memory is ``O(d^2 + batch d)``.
    Li et al. reach the same optimum by Adam on a zero-initialised ``nn.Linear``; this is exact in one pass.

    Returns ``{"weight" [S, d, d], "bias" [S, d], "residual_rmse" [S]}`` (float64), where
    ``residual_rmse = sqrt(E ||W x + b - D(x)||^2 / d)`` says how much of ``D`` no affine map explains.
    """
    n, d = clean.shape[0], math.prod(clean.shape[1:])
    draws = max(1, math.ceil(4 * d / n)) if draws is None else int(draws)
    if n * draws <= d:
        raise ValueError(f"linear_distillation needs more than d={d} samples, got {n} points x {draws} draws")
    flat_clean = clean.reshape(n, d)
    shift = flat_clean.to(torch.float64).mean(0)  # centering before accumulating keeps raw moments well conditioned
    points = flat_clean.repeat(draws, 1)  # [n * draws, d]
    noise = probe_noise(points.shape, seed, device=clean.device, dtype=clean.dtype)
    weights, biases, residuals = [], [], []
    for sigma in torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).tolist():
        sum_x = torch.zeros(d, dtype=torch.float64, device=clean.device)
        sum_y = torch.zeros_like(sum_x)
        sxx = torch.zeros(d, d, dtype=torch.float64, device=clean.device)
        syx = torch.zeros_like(sxx)
        syy = torch.zeros((), dtype=torch.float64, device=clean.device)
        for start in range(0, points.shape[0], batch_size):
            x = points[start : start + batch_size] + sigma * noise[start : start + batch_size]
            sig = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
            y = denoiser(x.reshape(-1, *clean.shape[1:]), sig).reshape(x.shape[0], d).to(torch.float64) - shift
            x = x.to(torch.float64) - shift
            sum_x += x.sum(0)
            sum_y += y.sum(0)
            sxx += x.T @ x
            syx += y.T @ x
            syy += y.square().sum()
        m = points.shape[0]
        mean_x, mean_y = sum_x / m, sum_y / m
        cov_xx = sxx / m - torch.outer(mean_x, mean_x)
        cov_yx = syx / m - torch.outer(mean_y, mean_x)
        weight = torch.linalg.solve(cov_xx, cov_yx.T).T  # C_xx symmetric: W C_xx = C_yx
        # at the optimum E||y - Wx - b||^2 = tr C_yy - tr(W C_yx^T)
        resid = (syy / m - mean_y.square().sum() - (weight * cov_yx).sum()).clamp_min(0)
        weights.append(weight)
        biases.append(mean_y + shift - weight @ (mean_x + shift))
        residuals.append((resid / d).sqrt())
    return {"weight": torch.stack(weights), "bias": torch.stack(biases), "residual_rmse": torch.stack(residuals)}


def gaussian_weights(gaussian: GaussianDenoiser, sigmas: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
    """``W_G = U diag(lambda / (lambda + sigma^2)) U^T`` and ``b_G = (I - W_G) mu`` per sigma, in float64."""
    u = gaussian.eigenvectors.to(torch.float64)
    lam = gaussian.eigenvalues.to(torch.float64)
    mu = gaussian.mean.to(torch.float64)
    sig = torch.as_tensor(sigmas, dtype=torch.float64, device=u.device).reshape(-1, 1)
    shrink = lam / (lam + sig.square())  # [S, d]
    weight = torch.einsum("ik,sk,jk->sij", u, shrink, u)
    return weight, mu - weight @ mu


def relative_weight_error(weight: Tensor, reference_weight: Tensor) -> Tensor:
    """``||W - W_ref||_F / ||W_ref||_F`` for each leading index (per sigma)."""
    diff = (weight.to(torch.float64) - reference_weight.to(torch.float64)).flatten(-2).norm(dim=-1)
    return diff / reference_weight.to(torch.float64).flatten(-2).norm(dim=-1).clamp_min(1e-300)


# ----- generation -------------------------------------------------------------------------------------


def generation_similarity(
    denoiser: Denoiser,
    reference: Denoiser,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    num_steps: int = 18,
    sampler: SamplerName = "heun",
    device=None,
    reference_samples: Tensor | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
) -> dict[str, Tensor]:
    """Samples of ``denoiser`` and ``reference`` from the same initial noise (one seed per sample) and
    the same sampler, so only the denoisers differ: ``nmse = mean_i ||x_i - x_ref_i|| / ||x_ref_i||``.

    Pass ``reference_samples`` (from an earlier call with the same seeds and sampler) to skip
    regenerating them. Returns ``{"nmse" (0-d), "samples", "reference_samples"}``.
    """
    kwargs = dict(num_steps=num_steps, sampler=sampler, device=device, sigma_min=sigma_min, sigma_max=sigma_max)
    samples = generate(denoiser, data_shape, seeds, **kwargs)
    if reference_samples is None:
        reference_samples = generate(reference, data_shape, seeds, **kwargs)
    reference_samples = reference_samples.to(samples.device)
    nmse = normalized_error(samples.to(torch.float64), reference_samples.to(torch.float64)).mean()
    return {"nmse": nmse, "samples": samples, "reference_samples": reference_samples}
