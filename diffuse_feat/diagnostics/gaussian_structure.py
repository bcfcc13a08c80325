"""Li, Dai, Qu (2024) on one model: is a denoiser becoming the Gaussian (Wiener) denoiser ``D_G`` of its training
set, or the memorizing empirical denoiser ``D_M``?

:func:`gaussian_structure_references` computes, once, everything a model is compared with on a fixed probe set
with fixed noise: ``D_G``'s and ``D_M``'s outputs, linearity and distillation curves, ``D_G``'s samples and
Jacobian spectra. :func:`measure_gaussian_structure` then measures any denoiser against them (a trained model,
``D_G`` or ``D_M`` themselves): the linearity score, RMSE/NMSE to ``D_G`` and ``D_M``, linear distillation, the
Jacobian (top singular values, overlap with the principal components, distance to ``J_G``), and samples from
the same noise as ``D_G``'s with their memorized fraction. ``GaussianStructureCallback`` schedules it during
training; the reproduction calls it on every training-set size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..process import edm_sigma_grid
from ..samplers import SamplerName, generate
from .gaussian_distance import (
    denoise_on_probes,
    gaussian_weights,
    generation_similarity,
    linear_distillation,
    output_distance,
    probe_noise,
    relative_weight_error,
)
from .jacobian import gaussian_jacobian_distance, gaussian_jacobian_spectrum, jacobian_top_singular, subspace_overlap
from .linearity import linearity_score, linearity_sigma_grid
from .memorization import memorization_scores

__all__ = ["GaussianStructureSettings", "gaussian_structure_probe_pool", "gaussian_structure_references",
           "measure_gaussian_structure", "sigma_key"]


def sigma_key(name: str, sigma: float) -> str:
    """A scalar's key at one noise level, e.g. ``jacobian_distance_s1`` (a TensorBoard-safe tag)."""
    return f"{name}_s{sigma:g}"


@dataclass(frozen=True)
class GaussianStructureSettings:
    """What to measure; ``GaussianStructureCallback``'s arguments say what each means."""

    num_pairs: int = 100
    num_sigmas: int = 20
    alpha_sq: float = 0.5
    mid_band: tuple[float, float] = (0.1, 10.0)
    high_sigma: float = 10.0
    jacobian_sigmas: Sequence[float] = (10.0, 1.0, 0.1)
    jacobian_points: int = 2
    jacobian_k: int = 8
    jacobian_probes: int = 16
    distill: bool = True
    num_distill_sigmas: int = 10
    num_samples: int = 32
    sample_steps: int = 18
    sampler: SamplerName = "heun"
    seed: int = 0
    name: str = "GaussianStructure"
    #: the noise levels of the linearity and distillation grids and of the samplers (narrower for a model trained on
    #: a narrower range, e.g. a DDPM table)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    distill_sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.num_pairs < 1 or self.num_sigmas < 2 or self.num_samples < 1:
            raise ValueError(f"{self.name} needs num_pairs >= 1, num_sigmas >= 2 and num_samples >= 1")
        if not 0 < self.alpha_sq < 1:
            raise ValueError(f"{self.name}.alpha_sq must lie in (0, 1), got {self.alpha_sq}")
        object.__setattr__(self, "mid_band", (float(self.mid_band[0]), float(self.mid_band[1])))
        object.__setattr__(self, "jacobian_sigmas", [float(s) for s in self.jacobian_sigmas])
        object.__setattr__(self, "distill_sigmas",
                           edm_sigma_grid(self.num_distill_sigmas, self.sigma_min, self.sigma_max))


def gaussian_structure_probe_pool(datamodule) -> tuple[Tensor, bool]:
    """Candidate probe points ``[m, *data_shape]`` and whether they are held out: the DataModule's held-out points
    when it has at least two, else its training points."""
    held_out = datamodule.val_tensor()
    if held_out.shape[0] >= 2:
        return held_out, True
    return datamodule.train_tensor(), False


def gaussian_structure_references(train: Tensor, gaussian, empirical, pool: Tensor, held_out: bool,
                                  settings: GaussianStructureSettings, device: torch.device) -> dict[str, Any]:
    """The probe set (pairs drawn from ``pool``, seeded), its noise, and ``D_G``'s and ``D_M``'s measurements.

    Args:
        train: the training set (``[n, *d]``, on ``device``); gaussian, empirical: its ``D_G`` and ``D_M``.
        pool: candidate probe points; held_out: whether they are held out from training.
    """
    num_pairs = min(settings.num_pairs, pool.shape[0] // 2)
    order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(settings.seed))
    x1 = pool[order[:num_pairs]].to(device).float()
    x2 = pool[order[num_pairs : 2 * num_pairs]].to(device).float()
    noise = probe_noise((2, *x1.shape), settings.seed + 1, device=device)
    clean, flat_noise = torch.cat([x1, x2]), noise.reshape(-1, *x1.shape[1:])
    sigmas = linearity_sigma_grid(settings.num_sigmas, settings.sigma_min, settings.sigma_max)
    refs: dict[str, Any] = dict(
        train=train, gaussian=gaussian, sigmas=sigmas, x1=x1, x2=x2, noise=(noise[0], noise[1]),
        clean=clean, flat_noise=flat_noise, held_out=held_out,
    )
    refs["gaussian_out"] = denoise_on_probes(gaussian, clean, sigmas, flat_noise)
    refs["empirical_out"] = denoise_on_probes(empirical, clean, sigmas, flat_noise)
    lin_kw = dict(alpha_sq=settings.alpha_sq, noise=refs["noise"])
    refs["curves"] = {
        "gaussian_linearity_cosine": linearity_score(gaussian, x1, x2, sigmas, **lin_kw)["cosine"],
        "empirical_linearity_cosine": linearity_score(empirical, x1, x2, sigmas, **lin_kw)["cosine"],
        "empirical_rmse_to_gaussian": output_distance(refs["empirical_out"], refs["gaussian_out"])["rmse"],
    }
    if settings.distill:
        refs["gaussian_weight"] = gaussian_weights(gaussian, settings.distill_sigmas)[0]
        fit = linear_distillation(empirical, clean, settings.distill_sigmas, seed=settings.seed + 2)
        refs["curves"]["empirical_distill_error"] = relative_weight_error(fit["weight"], refs["gaussian_weight"])
    seeds = list(range(settings.seed, settings.seed + settings.num_samples))
    refs["seeds"] = seeds
    refs["gaussian_samples"] = generate(gaussian, gaussian.data_shape, seeds, num_steps=settings.sample_steps,
                                        sampler=settings.sampler, device=device, sigma_min=settings.sigma_min,
                                        sigma_max=settings.sigma_max)
    refs["heldout_gl"] = float(memorization_scores(clean, train)["relative_nn_distance"]) if held_out else None
    jac_noise = noise[0][: settings.jacobian_points]
    refs["jacobian_inputs"] = [x1[: settings.jacobian_points] + s * jac_noise for s in settings.jacobian_sigmas]
    refs["pcs"] = gaussian.eigenvectors[:, : settings.jacobian_k]
    refs["gaussian_jacobian_top"] = [gaussian_jacobian_spectrum(gaussian, s)[: settings.jacobian_k]
                                     for s in settings.jacobian_sigmas]
    return refs


def _mid_band_mask(settings: GaussianStructureSettings, sigmas: Tensor) -> Tensor:
    lo, hi = settings.mid_band
    mask = (sigmas >= lo) & (sigmas <= hi)
    if not bool(mask.any()):
        raise ValueError(f"{settings.name}: no sigma of the grid lies in mid_band={settings.mid_band}; widen it")
    return mask


def measure_gaussian_structure(model, refs: dict[str, Any], settings: GaussianStructureSettings,
                               device: torch.device) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Measure the denoiser ``model`` against ``refs``: returns the values (scalars and curves against sigma),
    the model's samples and the nearest training point to each."""
    sigmas, mid = refs["sigmas"], _mid_band_mask(settings, refs["sigmas"])
    out = denoise_on_probes(model, refs["clean"], sigmas, refs["flat_noise"])
    num_pairs = refs["x1"].shape[0]  # the probes are [x1; x2]: their outputs are half the linearity score's calls
    lin = linearity_score(model, refs["x1"], refs["x2"], sigmas, alpha_sq=settings.alpha_sq, noise=refs["noise"],
                          outputs=(out[:, :num_pairs], out[:, num_pairs:]))
    to_g, to_m = output_distance(out, refs["gaussian_out"]), output_distance(out, refs["empirical_out"])
    values: dict[str, Any] = {
        "linearity_min_mid": float(lin["cosine"][mid].min()),
        "rmse_to_gaussian_mid": float(to_g["rmse"][mid].mean()),
        "nmse_to_gaussian_mid": float(to_g["nmse"][mid].mean()),
        "rmse_to_empirical_mid": float(to_m["rmse"][mid].mean()),
    }
    high = sigmas >= settings.high_sigma  # where D_G and D_M agree (both near the data mean): training reaches it?
    if bool(high.any()):
        values["rmse_to_gaussian_high"] = float(to_g["rmse"][high].mean())
    curves: dict[str, Any] = {
        "sigmas": sigmas,
        "linearity_cosine": lin["cosine"],
        "linearity_norm_ratio": lin["norm_ratio"],
        "rmse_to_gaussian": to_g["rmse"],
        "nmse_to_gaussian": to_g["nmse"],
        "rmse_to_empirical": to_m["rmse"],
        "nmse_to_empirical": to_m["nmse"],
    }
    if settings.distill:
        fit = linear_distillation(model, refs["clean"], settings.distill_sigmas, seed=settings.seed + 2)
        error = relative_weight_error(fit["weight"], refs["gaussian_weight"])
        values["distill_error_mid"] = float(error[_mid_band_mask(settings, settings.distill_sigmas)].mean())
        curves.update(distill_sigmas=settings.distill_sigmas, distill_error=error,
                      distill_residual_rmse=fit["residual_rmse"])
    values.update(_jacobian(model, refs, curves, settings))
    gen = generation_similarity(model, refs["gaussian"], model.data_shape, refs["seeds"],
                                num_steps=settings.sample_steps, sampler=settings.sampler, device=device,
                                reference_samples=refs["gaussian_samples"], sigma_min=settings.sigma_min,
                                sigma_max=settings.sigma_max)
    mem = memorization_scores(gen["samples"], refs["train"])
    nearest = refs["train"][mem["nearest_index"]]
    values.update(
        generation_nmse_to_gaussian=float(gen["nmse"]),
        memorized_fraction=float(mem["memorized_fraction"]),
        relative_nn_distance=float(mem["relative_nn_distance"]),
        probes_held_out=float(refs["held_out"]),
    )
    if refs["heldout_gl"] is not None:
        values["heldout_relative_nn_distance"] = refs["heldout_gl"]
    return {**values, **curves, **refs["curves"]}, gen["samples"], nearest


def _jacobian(model, refs: dict[str, Any], curves: dict[str, Any], settings: GaussianStructureSettings
              ) -> dict[str, float]:
    if not settings.jacobian_sigmas:
        return {}
    values, tops = {}, []
    for sigma, points in zip(settings.jacobian_sigmas, refs["jacobian_inputs"], strict=True):
        dist, overlap, top = [], [], []
        for i, x in enumerate(points):
            u, s, _ = jacobian_top_singular(model, x, sigma, settings.jacobian_k, seed=settings.seed + i)
            top.append(s)
            overlap.append(float(subspace_overlap(u, refs["pcs"])))
            dist.append(float(gaussian_jacobian_distance(model, x, sigma, refs["gaussian"],
                                                         num_probes=settings.jacobian_probes, seed=settings.seed + i)))
        values[sigma_key("jacobian_distance", sigma)] = sum(dist) / len(dist)
        values[sigma_key("jacobian_pc_overlap", sigma)] = sum(overlap) / len(overlap)
        tops.append(torch.stack(top).mean(0))
    curves.update(jacobian_sigmas=settings.jacobian_sigmas, jacobian_top_singular=torch.stack(tops),
                  gaussian_jacobian_top=torch.stack(refs["gaussian_jacobian_top"]))
    return values
