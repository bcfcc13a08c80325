"""Li, Dai, Qu (2024) on one model: is a denoiser becoming the Gaussian (Wiener) denoiser ``D_G`` of its training
set, or the memorizing empirical denoiser ``D_M``?

:class:`GaussianStructure` is the measurement. At its first measurement on a DataModule it computes, once,
everything a model is compared with on a fixed probe set with fixed noise (:func:`gaussian_structure_references`):
``D_G``'s and ``D_M``'s outputs, linearity and distillation curves, ``D_G``'s samples and Jacobian spectra.
:func:`measure_gaussian_structure` then measures any denoiser against them (a trained model, ``D_G`` or ``D_M``
themselves): the linearity score, RMSE/NMSE to ``D_G`` and ``D_M``, linear distillation, the Jacobian (top singular
values, overlap with the principal components, distance to ``J_G``), and samples from the same noise as ``D_G``'s
with their memorized fraction. ``GaussianStructureCallback`` schedules it during training; ``analyze`` runs it once
on any model; the reproduction calls it on every training-set size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..capabilities import GaussianReference, TrainingSet
from ..plotting.gaussian_structure import plot_gaussian_structure
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
from .measurement import Curve, Measured, Measurement, plain
from .memorization import memorization_scores

__all__ = ["GaussianStructure", "gaussian_structure_references", "measure_gaussian_structure"]


class GaussianStructure(Measurement):
    """Linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear distillation, memorization.

    Args:
        num_pairs: linearity pairs; the distance probes are the ``2 num_pairs`` points of the pairs.
        num_sigmas: levels of the EDM rho=7 grid from ``sigma_max`` to ``sigma_min`` (the paper uses 40).
        alpha_sq: ``alpha^2`` of the linearity score (``beta^2 = 1 - alpha^2``).
        mid_band: sigma range of the ``*_mid`` summaries (where sigma^2 is comparable to the data variances).
        high_sigma: ``rmse_to_gaussian_high`` averages the RMSE to ``D_G`` over the grid's sigma >= this.
        jacobian_sigmas: noise levels of the Jacobian analysis (empty: skip it).
        jacobian_points: noisy probes per Jacobian sigma; jacobian_k: singular triplets and principal
            components compared; jacobian_probes: random probes of the Frobenius-distance estimate.
        distill: run the linear distillation (``4 d`` denoiser calls per sigma) on an EDM grid of
            ``num_distill_sigmas`` levels (the paper's 10 sampling steps by default).
        num_samples, sample_steps, sampler: the generated samples (seeds ``seed .. seed + num_samples - 1``).
        sigma_min, sigma_max: the noise range of the grids and samplers (narrower for a model trained on a narrower
            range, e.g. a DDPM table).
        seed: the probe set, its noise and the samples (the same at every measurement).

    Probes are the data's held-out points (``val_tensor``) when it has at least two, else training points;
    ``probes_held_out`` in every record says which. Subclass and override :meth:`select_probes` to choose others.
    Curves: ``jacobian_distance`` and ``jacobian_pc_overlap`` over the Jacobian sigmas.
    """

    name = "gaussian_structure"
    requires = (TrainingSet, GaussianReference)
    needs_grad = True

    def __init__(
        self,
        num_pairs: int = 100,
        num_sigmas: int = 20,
        alpha_sq: float = 0.5,
        mid_band: tuple[float, float] = (0.1, 10.0),
        high_sigma: float = 10.0,
        jacobian_sigmas: Sequence[float] = (10.0, 1.0, 0.1),
        jacobian_points: int = 2,
        jacobian_k: int = 8,
        jacobian_probes: int = 16,
        distill: bool = True,
        num_distill_sigmas: int = 10,
        num_samples: int = 32,
        sample_steps: int = 18,
        sampler: SamplerName = "heun",
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        seed: int = 0,
    ):
        if num_pairs < 1 or num_sigmas < 2 or num_samples < 1:
            raise ValueError("GaussianStructure needs num_pairs >= 1, num_sigmas >= 2 and num_samples >= 1")
        if not 0 < alpha_sq < 1:
            raise ValueError(f"GaussianStructure.alpha_sq must lie in (0, 1), got {alpha_sq}")
        self.num_pairs, self.num_sigmas, self.alpha_sq, self.high_sigma = num_pairs, num_sigmas, alpha_sq, high_sigma
        self.mid_band = (float(mid_band[0]), float(mid_band[1]))
        self.jacobian_sigmas = [float(s) for s in jacobian_sigmas]
        self.jacobian_points, self.jacobian_k, self.jacobian_probes = jacobian_points, jacobian_k, jacobian_probes
        self.distill, self.num_distill_sigmas = distill, num_distill_sigmas
        self.num_samples, self.sample_steps, self.sampler = num_samples, sample_steps, sampler
        self.sigma_min, self.sigma_max, self.seed = sigma_min, sigma_max, seed
        self.distill_sigmas = edm_sigma_grid(num_distill_sigmas, sigma_min, sigma_max)

    def noise_range(self) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def select_probes(self, data) -> tuple[Tensor, bool]:
        """Candidate probe points ``[m, *data_shape]`` and whether they are held out: the data's held-out points
        when it has at least two, else its training points."""
        held_out = data.val_tensor()
        if held_out.shape[0] >= 2:
            return held_out, True
        warnings.warn("gaussian_structure: the data has no held-out points (n_val = 0); probing with training points",
                      stacklevel=2)
        return data.train_tensor(), False

    def references(self, data, device: torch.device) -> dict[str, Any]:
        """What every model is compared with on ``data`` (computed at the first measurement, then reused)."""
        def compute():
            pool, held_out = self.select_probes(data)
            return gaussian_structure_references(data.train_tensor().to(device), data.gaussian_denoiser().to(device),
                                                 data.empirical_denoiser().to(device), pool, held_out, self, device)

        return self.cached(data, f"references:{device}", compute)

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        refs = self.references(data, device)
        values, samples, nearest = measure_gaussian_structure(denoiser, refs, self, device)
        jacobian = values.pop("jacobian", {})
        curves = {key: Curve("sigma", self.jacobian_sigmas, column) for key, column in jacobian.items()}
        return Measured(plain(values), curves, artifacts={
            "samples": samples.cpu(), "nearest": nearest.cpu(), "gaussian_samples": refs["gaussian_samples"].cpu()})

    def figure(self, measured: Measured, *, title: str | None = None, history=None):
        art = measured.artifacts
        return plot_gaussian_structure(measured.values, art.get("samples"), art.get("gaussian_samples"),
                                       art.get("nearest"), mid_band=self.mid_band, title=title or "")


def gaussian_structure_references(train: Tensor, gaussian, empirical, pool: Tensor, held_out: bool,
                                  settings: GaussianStructure, device: torch.device) -> dict[str, Any]:
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


def _mid_band_mask(settings: GaussianStructure, sigmas: Tensor) -> Tensor:
    lo, hi = settings.mid_band
    mask = (sigmas >= lo) & (sigmas <= hi)
    if not bool(mask.any()):
        raise ValueError(f"gaussian_structure: no sigma of the grid lies in mid_band={settings.mid_band}; widen it")
    return mask


def measure_gaussian_structure(model, refs: dict[str, Any], settings: GaussianStructure,
                               device: torch.device) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Measure the denoiser ``model`` against ``refs``: returns the values (scalars, curves against sigma, and
    ``jacobian``: ``{"jacobian_distance": [...], "jacobian_pc_overlap": [...]}`` over the Jacobian sigmas), the model's
    samples and the nearest training point to each."""
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


def _jacobian(model, refs: dict[str, Any], curves: dict[str, Any], settings: GaussianStructure
              ) -> dict[str, dict[str, list[float]]]:
    if not settings.jacobian_sigmas:
        return {}
    values, tops = {"jacobian_distance": [], "jacobian_pc_overlap": []}, []
    for sigma, points in zip(settings.jacobian_sigmas, refs["jacobian_inputs"], strict=True):
        dist, overlap, top = [], [], []
        for i, x in enumerate(points):
            u, s, _ = jacobian_top_singular(model, x, sigma, settings.jacobian_k, seed=settings.seed + i)
            top.append(s)
            overlap.append(float(subspace_overlap(u, refs["pcs"])))
            dist.append(float(gaussian_jacobian_distance(model, x, sigma, refs["gaussian"],
                                                         num_probes=settings.jacobian_probes, seed=settings.seed + i)))
        values["jacobian_distance"].append(sum(dist) / len(dist))
        values["jacobian_pc_overlap"].append(sum(overlap) / len(overlap))
        tops.append(torch.stack(top).mean(0))
    curves.update(jacobian_sigmas=settings.jacobian_sigmas, jacobian_top_singular=torch.stack(tops),
                  gaussian_jacobian_top=torch.stack(refs["gaussian_jacobian_top"]))
    return {"jacobian": values}
