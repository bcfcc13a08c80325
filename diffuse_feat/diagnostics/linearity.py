"""Linearity score of a denoiser (Li, Dai, Qu 2024, section 3.1 and App. A, eqs. 11-12).

For noisy in-distribution inputs ``x1 = a1 + sigma n1``, ``x2 = a2 + sigma n2`` (held-out clean points
``a``, fixed noise ``n``) and ``alpha^2 + beta^2 = 1`` (so ``alpha x1 + beta x2`` again carries noise of
variance ``sigma^2``), compare the output on the combination with the combination of the outputs:

    cosine(sigma)     = E | cos( D(alpha x1 + beta x2), alpha D(x1) + beta D(x2) ) |
    norm_ratio(sigma) = E ||D(alpha x1 + beta x2) - alpha D(x1) - beta D(x2)|| / ||D(alpha x1 + beta x2)||

``cosine = 1`` and ``norm_ratio = 0`` for every *linear* denoiser. The Gaussian denoiser is *affine*:
``D_G(alpha x1 + beta x2) - alpha D_G(x1) - beta D_G(x2) = (1 - alpha - beta)(I - W_sigma) mu``, so with a
nonzero data mean ``mu`` the norm-ratio form of the exact Gaussian denoiser tends to ``|1 - alpha - beta|``
(0.414 for alpha = beta = 1/sqrt 2) at high sigma: that form is not informative at high sigma. The cosine
form ignores scale and stays near 1 there; the informative band is intermediate sigma, where ``sigma^2``
is comparable to the data's eigenvalues (about 0.1-10 for data in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoisers.base import Denoiser
from ..process import edm_sigma_grid
from .gaussian_distance import denoise_batched, normalized_error, probe_noise

__all__ = ["linearity_sigma_grid", "linearity_score", "affine_offset_norm_ratio_limit", "PAPER_ALPHA_SQ_GRID"]

#: the alpha^2 values of the paper's Fig. 10 (the authors' ``linspace(0.99, 0.5, 5)``)
PAPER_ALPHA_SQ_GRID = (0.99, 0.8675, 0.745, 0.6225, 0.5)


def linearity_sigma_grid(num: int = 40, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """The EDM rho-grid the paper scores linearity on (40 levels from 80 down to 0.002 by default), float64."""
    return edm_sigma_grid(num, sigma_min, sigma_max, rho)


@torch.no_grad()
def linearity_score(
    denoiser: Denoiser,
    x1: Tensor,
    x2: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    alpha_sq: float | Sequence[float] = 0.5,
    noise: tuple[Tensor, Tensor] | None = None,
    outputs: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 2048,
) -> dict[str, Tensor]:
    """Cosine and norm-ratio linearity scores over ``sigmas`` for the pairs ``(x1[i], x2[i])`` of clean points.

    ``alpha_sq`` is ``alpha^2`` (``beta^2 = 1 - alpha^2``): one value gives curves ``[S]``, a sequence gives
    ``[A, S]``. ``noise = (n1, n2)`` fixes the probe noise; by default it is drawn from ``seed`` and, as in
    the authors' code, the same draw is reused at every sigma. Per sigma, the ``(2 + A) P`` denoiser calls
    go through :func:`denoise_batched`, ``batch_size`` rows at a time. ``outputs = (D(x1 + s n1), D(x2 + s n2))``
    stacked over sigma (``[S, P, ...]``, e.g. from :func:`~.gaussian_distance.denoise_on_probes` with the same
    noise) skips recomputing them.

    Returns ``{"sigmas" [S], "alpha_sq" [A], "cosine", "norm_ratio"}`` (float64).
    """
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {list(x1.shape)} and {list(x2.shape)}")
    scalar_alpha = isinstance(alpha_sq, int | float)
    a_sq = torch.as_tensor([alpha_sq] if scalar_alpha else list(alpha_sq), dtype=torch.float64)
    if bool(((a_sq <= 0) | (a_sq >= 1)).any()):
        raise ValueError(f"alpha_sq must lie in (0, 1) (beta^2 = 1 - alpha^2 > 0), got {a_sq.tolist()}")
    if noise is None:
        both = probe_noise((2, *x1.shape), seed, device=x1.device, dtype=x1.dtype)
        noise = (both[0], both[1])
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    num_s, num_a, num_p = sig.numel(), a_sq.numel(), x1.shape[0]
    alphas, betas = a_sq.sqrt().tolist(), (1 - a_sq).sqrt().tolist()

    cosine = torch.empty(num_a, num_s, dtype=torch.float64)
    norm_ratio = torch.empty_like(cosine)
    for j, sigma in enumerate(sig.tolist()):  # one sigma at a time bounds memory for large images
        noisy1, noisy2 = x1 + sigma * noise[0], x2 + sigma * noise[1]
        mixes = [a * noisy1 + b * noisy2 for a, b in zip(alphas, betas, strict=True)]
        inputs = torch.cat(mixes if outputs is not None else [noisy1, noisy2, *mixes])
        out = denoise_batched(denoiser, inputs, torch.tensor(sigma), batch_size).reshape(-1, num_p, x1[0].numel())
        if outputs is not None:
            out = torch.cat([outputs[0][j].reshape(1, num_p, -1), outputs[1][j].reshape(1, num_p, -1), out])
        out = out.to(torch.float64)
        d1, d2, d_mix = out[0], out[1], out[2:]  # d_mix: [A, P, d]
        combo = torch.stack([a * d1 + b * d2 for a, b in zip(alphas, betas, strict=True)])
        norm_mix, norm_combo = d_mix.norm(dim=-1), combo.norm(dim=-1)
        cos = (d_mix * combo).sum(-1).abs() / (norm_mix * norm_combo).clamp_min(1e-300)
        cosine[:, j] = cos.mean(-1).cpu()
        norm_ratio[:, j] = normalized_error(combo, d_mix, dim_start=2).mean(-1).cpu()  # the project's one NMSE
    if scalar_alpha:
        cosine, norm_ratio = cosine[0], norm_ratio[0]
    return {"sigmas": sig, "alpha_sq": a_sq, "cosine": cosine, "norm_ratio": norm_ratio}


def affine_offset_norm_ratio_limit(alpha_sq: float = 0.5) -> float:
    """``|1 - alpha - beta|``: the high-sigma limit of the norm-ratio score of any affine denoiser with ``mu != 0``."""
    return abs(1 - math.sqrt(alpha_sq) - math.sqrt(1 - alpha_sq))
