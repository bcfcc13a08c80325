"""``GaussianStructureCallback``: is the denoiser becoming the Gaussian-optimal denoiser of its training set?

Li, Dai, Qu (2024) find that diffusion models which generalize are nearly linear and close to the
Wiener filter ``D_G`` built from the training mean and covariance, while memorizing ones approach the
empirical denoiser ``D_M`` and copy training points. Every ``every_n_steps`` this callback measures,
on one fixed held-out probe set with fixed noise (so the curves of successive runs are comparable):

* the linearity score (cosine and norm-ratio forms) over an EDM sigma grid;
* RMSE / NMSE of the model's outputs to ``D_G`` and to ``D_M`` on the noisy probes;
* the best affine map of the model (linear distillation) and its distance to the Gaussian weights;
* the Jacobian at a few noisy probes: top singular values, overlap of the top singular vectors with
  the top principal components, and the relative Frobenius distance to ``J_G``;
* samples from fixed seeds next to ``D_G``'s samples from the same noise with the same sampler: their
  NMSE, and the memorized fraction and GL score of the model's samples against the training set.

Scalars go to TensorBoard as ``diagnostics/<name>/<key>``; the curves go to ``diagnostics.jsonl``; one
figure per run shows the curves with ``D_G`` (the theory) and ``D_M`` (the memorizer) drawn in, and the
samples with the Gaussian model's and the nearest training points. The references are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from diffuse_feat.data.base import require
from diffuse_feat.diagnostics.gaussian_distance import (
    denoise_on_probes,
    gaussian_weights,
    generation_similarity,
    linear_distillation,
    output_distance,
    probe_noise,
    relative_weight_error,
)
from diffuse_feat.diagnostics.jacobian import (
    gaussian_jacobian_distance,
    gaussian_jacobian_spectrum,
    jacobian_top_singular,
    subspace_overlap,
)
from diffuse_feat.diagnostics.linearity import linearity_score, linearity_sigma_grid
from diffuse_feat.diagnostics.memorization import memorization_scores
from diffuse_feat.process import edm_sigma_grid
from diffuse_feat.reporting import RunReporter
from diffuse_feat.samplers import SamplerName, generate

from .base import DiagnosticCallback

__all__ = ["GaussianStructureCallback", "sigma_key"]


def sigma_key(name: str, sigma: float) -> str:
    """A scalar's key at one noise level, e.g. ``jacobian_distance_s1`` (a TensorBoard-safe tag)."""
    return f"{name}_s{sigma:g}"


class GaussianStructureCallback(DiagnosticCallback):
    """Linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear distillation, memorization.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        num_pairs: linearity pairs; the distance probes are the ``2 num_pairs`` points of the pairs.
        num_sigmas: levels of the EDM rho=7 grid from 80 to 0.002 (the paper uses 40).
        alpha_sq: ``alpha^2`` of the linearity score (``beta^2 = 1 - alpha^2``).
        mid_band: sigma range of the ``*_mid`` summaries (where sigma^2 is comparable to the data variances).
        jacobian_sigmas: noise levels of the Jacobian analysis (empty: skip it).
        jacobian_points: noisy probes per Jacobian sigma; jacobian_k: singular triplets and principal
            components compared; jacobian_probes: random probes of the Frobenius-distance estimate.
        distill: run the linear distillation (``4 d`` denoiser calls per sigma) on an EDM grid of
            ``num_distill_sigmas`` levels (the paper's 10 sampling steps by default).
        num_samples, sample_steps, sampler: the generated samples (seeds ``seed .. seed + num_samples - 1``).
        use_ema, seed, at_train_end, name: as in :class:`DiagnosticCallback`.

    Probes are the DataModule's held-out points (``val_tensor``) when it has at least two, else training
    points; ``probes_held_out`` in every record says which. Subclass and override :meth:`select_probes`
    to choose other probes.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_pairs: int = 100,
        num_sigmas: int = 20,
        alpha_sq: float = 0.5,
        mid_band: tuple[float, float] = (0.1, 10.0),
        jacobian_sigmas: Sequence[float] = (10.0, 1.0, 0.1),
        jacobian_points: int = 2,
        jacobian_k: int = 8,
        jacobian_probes: int = 16,
        distill: bool = True,
        num_distill_sigmas: int = 10,
        num_samples: int = 32,
        sample_steps: int = 18,
        sampler: SamplerName = "heun",
        use_ema: bool = True,
        seed: int = 0,
        at_train_end: bool = True,
        name: str | None = None,
    ):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        if num_pairs < 1 or num_sigmas < 2 or num_samples < 1:
            raise ValueError("GaussianStructureCallback needs num_pairs >= 1, num_sigmas >= 2 and num_samples >= 1")
        if not 0 < alpha_sq < 1:
            raise ValueError(f"GaussianStructureCallback.alpha_sq must lie in (0, 1), got {alpha_sq}")
        self.num_pairs, self.num_sigmas, self.alpha_sq = num_pairs, num_sigmas, alpha_sq
        self.mid_band = (float(mid_band[0]), float(mid_band[1]))
        self.jacobian_sigmas = [float(s) for s in jacobian_sigmas]
        self.jacobian_points, self.jacobian_k, self.jacobian_probes = jacobian_points, jacobian_k, jacobian_probes
        self.distill = distill
        self.distill_sigmas = edm_sigma_grid(num_distill_sigmas)
        self.num_samples, self.sample_steps, self.sampler = num_samples, sample_steps, sampler
        self._refs: dict[str, Any] | None = None
        self.last_samples: Tensor | None = None  # the latest run's samples, for figures and reproductions
        self.last_nearest: Tensor | None = None  # the training point nearest to each of those samples

    # ----- probes and references (computed once) --------------------------------------------------
    def select_probes(self, trainer: pl.Trainer) -> tuple[Tensor, bool]:
        """Clean probe points ``[m, *data_shape]`` and whether they are held out from training."""
        dm = trainer.datamodule
        held_out = dm.val_tensor() if getattr(dm, "val_tensor", None) is not None else None
        if held_out is not None and held_out.shape[0] >= 2:
            return held_out, True
        rank_zero_warn(f"{self.name}: the data has no held-out points (n_val = 0); probing with training points")
        return require(dm, "train_tensor", needed_by=type(self).__name__)(), False

    def _references(self, trainer: pl.Trainer, device: torch.device) -> dict[str, Any]:
        if self._refs is not None:
            return self._refs
        needed_by = type(self).__name__
        dm = trainer.datamodule
        train = require(dm, "train_tensor", needed_by=needed_by)().to(device)
        gaussian = require(dm, "gaussian_denoiser", needed_by=needed_by)().to(device)
        empirical = require(dm, "empirical_denoiser", needed_by=needed_by)().to(device)
        pool, held_out = self.select_probes(trainer)
        num_pairs = min(self.num_pairs, pool.shape[0] // 2)
        order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(self.seed))
        x1 = pool[order[:num_pairs]].to(device).float()
        x2 = pool[order[num_pairs : 2 * num_pairs]].to(device).float()
        noise = probe_noise((2, *x1.shape), self.seed + 1, device=device)
        clean, flat_noise = torch.cat([x1, x2]), noise.reshape(-1, *x1.shape[1:])
        sigmas = linearity_sigma_grid(self.num_sigmas)
        refs: dict[str, Any] = dict(
            train=train, gaussian=gaussian, sigmas=sigmas, x1=x1, x2=x2, noise=(noise[0], noise[1]),
            clean=clean, flat_noise=flat_noise, held_out=held_out,
        )
        refs["gaussian_out"] = denoise_on_probes(gaussian, clean, sigmas, flat_noise)
        refs["empirical_out"] = denoise_on_probes(empirical, clean, sigmas, flat_noise)
        lin_kw = dict(alpha_sq=self.alpha_sq, noise=refs["noise"])
        refs["curves"] = {
            "gaussian_linearity_cosine": linearity_score(gaussian, x1, x2, sigmas, **lin_kw)["cosine"],
            "empirical_linearity_cosine": linearity_score(empirical, x1, x2, sigmas, **lin_kw)["cosine"],
            "empirical_rmse_to_gaussian": output_distance(refs["empirical_out"], refs["gaussian_out"])["rmse"],
        }
        if self.distill:
            refs["gaussian_weight"] = gaussian_weights(gaussian, self.distill_sigmas)[0]
            fit = linear_distillation(empirical, clean, self.distill_sigmas, seed=self.seed + 2)
            refs["curves"]["empirical_distill_error"] = relative_weight_error(fit["weight"], refs["gaussian_weight"])
        seeds = list(range(self.seed, self.seed + self.num_samples))
        refs["seeds"] = seeds
        refs["gaussian_samples"] = generate(gaussian, gaussian.data_shape, seeds, num_steps=self.sample_steps,
                                            sampler=self.sampler, device=device)
        refs["heldout_gl"] = float(memorization_scores(clean, train)["relative_nn_distance"]) if held_out else None
        jac_noise = noise[0][: self.jacobian_points]
        refs["jacobian_inputs"] = [x1[: self.jacobian_points] + s * jac_noise for s in self.jacobian_sigmas]
        refs["pcs"] = gaussian.eigenvectors[:, : self.jacobian_k]
        refs["gaussian_jacobian_top"] = [gaussian_jacobian_spectrum(gaussian, s)[: self.jacobian_k]
                                         for s in self.jacobian_sigmas]
        self._refs = refs
        return refs

    @property
    def reference_samples(self) -> Tensor | None:
        """The Gaussian model's samples from the same seeds and sampler as :attr:`last_samples`."""
        return None if self._refs is None else self._refs["gaussian_samples"].cpu()

    def _mid(self, sigmas: Tensor) -> Tensor:
        lo, hi = self.mid_band
        mask = (sigmas >= lo) & (sigmas <= hi)
        if not bool(mask.any()):
            raise ValueError(f"{self.name}: no sigma of the grid lies in mid_band={self.mid_band}; widen it")
        return mask

    # ----- the measurement -------------------------------------------------------------------------
    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        refs = self._references(trainer, pl_module.device)
        sigmas, mid = refs["sigmas"], self._mid(refs["sigmas"])
        out = denoise_on_probes(model, refs["clean"], sigmas, refs["flat_noise"])
        num_pairs = refs["x1"].shape[0]  # the probes are [x1; x2]: their outputs are half the linearity score's calls
        lin = linearity_score(model, refs["x1"], refs["x2"], sigmas, alpha_sq=self.alpha_sq, noise=refs["noise"],
                              outputs=(out[:, :num_pairs], out[:, num_pairs:]))
        to_g, to_m = output_distance(out, refs["gaussian_out"]), output_distance(out, refs["empirical_out"])
        values: dict[str, Any] = {
            "linearity_min_mid": float(lin["cosine"][mid].min()),
            "rmse_to_gaussian_mid": float(to_g["rmse"][mid].mean()),
            "nmse_to_gaussian_mid": float(to_g["nmse"][mid].mean()),
            "rmse_to_empirical_mid": float(to_m["rmse"][mid].mean()),
        }
        curves: dict[str, Any] = {
            "sigmas": sigmas,
            "linearity_cosine": lin["cosine"],
            "linearity_norm_ratio": lin["norm_ratio"],
            "rmse_to_gaussian": to_g["rmse"],
            "nmse_to_gaussian": to_g["nmse"],
            "rmse_to_empirical": to_m["rmse"],
            "nmse_to_empirical": to_m["nmse"],
        }
        if self.distill:
            fit = linear_distillation(model, refs["clean"], self.distill_sigmas, seed=self.seed + 2)
            error = relative_weight_error(fit["weight"], refs["gaussian_weight"])
            values["distill_error_mid"] = float(error[self._mid(self.distill_sigmas)].mean())
            curves.update(distill_sigmas=self.distill_sigmas, distill_error=error,
                          distill_residual_rmse=fit["residual_rmse"])
        values.update(self._jacobian(model, refs, curves))
        gen = generation_similarity(model, refs["gaussian"], model.data_shape, refs["seeds"],
                                    num_steps=self.sample_steps, sampler=self.sampler, device=pl_module.device,
                                    reference_samples=refs["gaussian_samples"])
        mem = memorization_scores(gen["samples"], refs["train"])
        self.last_samples = gen["samples"].cpu()
        self.last_nearest = refs["train"][mem["nearest_index"]].cpu()
        values.update(
            generation_nmse_to_gaussian=float(gen["nmse"]),
            memorized_fraction=float(mem["memorized_fraction"]),
            relative_nn_distance=float(mem["relative_nn_distance"]),
            probes_held_out=float(refs["held_out"]),
        )
        if refs["heldout_gl"] is not None:
            values["heldout_relative_nn_distance"] = refs["heldout_gl"]
        return {**values, **curves, **refs["curves"]}

    def _jacobian(self, model, refs: dict[str, Any], curves: dict[str, Any]) -> dict[str, float]:
        if not self.jacobian_sigmas:
            return {}
        values, tops = {}, []
        for sigma, points in zip(self.jacobian_sigmas, refs["jacobian_inputs"], strict=True):
            dist, overlap, top = [], [], []
            for i, x in enumerate(points):
                u, s, _ = jacobian_top_singular(model, x, sigma, self.jacobian_k, seed=self.seed + i)
                top.append(s)
                overlap.append(float(subspace_overlap(u, refs["pcs"])))
                dist.append(float(gaussian_jacobian_distance(model, x, sigma, refs["gaussian"],
                                                             num_probes=self.jacobian_probes, seed=self.seed + i)))
            values[sigma_key("jacobian_distance", sigma)] = sum(dist) / len(dist)
            values[sigma_key("jacobian_pc_overlap", sigma)] = sum(overlap) / len(overlap)
            tops.append(torch.stack(top).mean(0))
        curves.update(jacobian_sigmas=self.jacobian_sigmas, jacobian_top_singular=torch.stack(tops),
                      gaussian_jacobian_top=torch.stack(refs["gaussian_jacobian_top"]))
        return values

    # ----- the figure ------------------------------------------------------------------------------
    def report(self, reporter: RunReporter, values: dict[str, Any], step: int, trainer, model) -> None:
        fig = plot_gaussian_structure(values, self.last_samples, self.reference_samples,
                                      self.last_nearest, mid_band=self.mid_band, title=f"{self.name}, step {step}")
        reporter.figure(f"figures/{self.name}", fig, step)  # closes the figure


def _to_list(v) -> list:
    return v.tolist() if isinstance(v, Tensor) else list(v)


def plot_gaussian_structure(values: dict[str, Any], samples: Tensor | None, gaussian_samples: Tensor | None,
                            nearest: Tensor | None, *, mid_band: tuple[float, float] = (0.1, 10.0), title: str = ""):
    """One figure: linearity, distances, distillation and Jacobian spectra vs sigma (``D_G`` dashed, ``D_M``
    dotted), and the model's samples above the Gaussian model's (same noise) and the nearest training points."""
    from diffuse_feat.plotting import plt

    # fixed margins instead of tight_layout: the figure is drawn at every run and must stay cheap
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), dpi=90)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.91, wspace=0.22, hspace=0.38)
    sig = _to_list(values["sigmas"])

    def shade(ax):
        ax.axvspan(*mid_band, color="0.92", zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("sigma (grey: mid band)")
        ax.minorticks_off()  # minor log ticks are most of the drawing time

    ax = axes[0, 0]
    ax.plot(sig, _to_list(values["linearity_cosine"]), "o-", ms=3, label="model")
    ax.plot(sig, _to_list(values["gaussian_linearity_cosine"]), "k--", label="Gaussian D_G")
    ax.plot(sig, _to_list(values["empirical_linearity_cosine"]), "r:", label="empirical D_M")
    ax.set_title("linearity score (|cos|)")
    shade(ax)
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.plot(sig, _to_list(values["rmse_to_gaussian"]), "o-", ms=3, label="model vs D_G")
    ax.plot(sig, _to_list(values["rmse_to_empirical"]), "s-", ms=3, label="model vs D_M")
    ax.plot(sig, _to_list(values["empirical_rmse_to_gaussian"]), "r:", label="D_M vs D_G")
    ax.axhline(0.0, color="k", ls="--", lw=1, label="D_G vs D_G")
    ax.set_title("RMSE between denoisers")
    shade(ax)
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    if "distill_error" in values:
        dsig = _to_list(values["distill_sigmas"])
        ax.plot(dsig, _to_list(values["distill_error"]), "o-", ms=3, label="model's best affine map")
        ax.plot(dsig, _to_list(values["empirical_distill_error"]), "r:", label="D_M's best affine map")
        ax.axhline(0.0, color="k", ls="--", lw=1, label="D_G (exact)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.legend(fontsize=8)
    ax.set_title("||W_L - W_G||_F / ||W_G||_F")
    shade(ax)
    ax.minorticks_off()

    ax = axes[1, 0]
    if "jacobian_top_singular" in values:
        tops, ref = _to_list(values["jacobian_top_singular"]), _to_list(values["gaussian_jacobian_top"])
        for j, sigma in enumerate(_to_list(values["jacobian_sigmas"])):
            line = ax.plot(range(1, len(tops[j]) + 1), tops[j], "o-", ms=3, label=f"model, sigma={sigma:g}")[0]
            ax.plot(range(1, len(ref[j]) + 1), ref[j], "--", color=line.get_color())
        ax.set_xlabel("index k (dashed: J_G = lambda / (lambda + sigma^2))")
        ax.legend(fontsize=8)
    ax.set_title("top singular values of the Jacobian")

    ax = axes[1, 1]
    ax.plot(sig, _to_list(values["linearity_norm_ratio"]), "o-", ms=3, label="model")
    ax.set_title("linearity, norm-ratio form (uninformative at high sigma if mu != 0)")
    shade(ax)

    _sample_panel(axes[1, 2], samples, gaussian_samples, nearest)
    fig.suptitle(title)
    return fig


def _sample_panel(ax, samples: Tensor | None, gaussian_samples: Tensor | None, nearest: Tensor | None) -> None:
    if samples is None or gaussian_samples is None:
        ax.axis("off")
        return
    if samples.ndim == 4:  # images: rows = model, Gaussian model (same noise), nearest training point
        from torchvision.utils import make_grid

        num = min(samples.shape[0], 12)
        rows = [samples[:num], gaussian_samples[:num]] + ([nearest[:num]] if nearest is not None else [])
        grid = make_grid(((torch.cat(rows).float() + 1) / 2).clamp(0, 1), nrow=num, pad_value=1)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title("model / Gaussian (same noise) / nearest training")
        ax.axis("off")
        return
    flat_s, flat_g = samples.reshape(samples.shape[0], -1), gaussian_samples.reshape(gaussian_samples.shape[0], -1)
    ax.scatter(flat_g[:, 0], flat_g[:, -1], s=8, label="Gaussian model")
    ax.scatter(flat_s[:, 0], flat_s[:, -1], s=8, label="model")
    ax.set_title("samples (first vs last coordinate)")
    ax.legend(fontsize=8)
