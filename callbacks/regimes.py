"""``RegimesCallback``: speciation and collapse of the model being trained (Biroli et al. 2024).

Every ``every_n_steps`` it runs the cloning experiment on the diffusion model (the model is the denoiser; OU
time, :mod:`diffuse_feat.ou`) with the same starting noise and the same noise every time:

* ``phi(t)``: both clones split at ``t`` end in the same class, and ``t_S_measured`` where it crosses 0.775,
  against ``t_S_theory = 1/2 log Lambda`` and, for the two-class Gaussian mixture, the exact theory curve;
* ``phi_C(t)``: both clones end on the same training point, and ``t_C_phi`` where it crosses 0.6;
* ``t_hat_C``: along each trunk trajectory, the last time the nearest ``e^{-t}``-scaled training point
  changed; ``t_C_measured`` is its mean;

and draws in the references, computed once: ``phi`` and ``phi_C`` of the exact empirical score (what a model that
memorized its training set does), the entropy proxy ``f^e/alpha`` of the training set with its theory, and
``t_C_theory``. As a small training set is memorized, the model's ``phi_C`` climbs onto the memorizer's curve.

Classes are read by the DataModule's ``oracle_labels`` when it has one (Gaussian mixture), else by a trained
``ClassificationModule`` checkpoint (``classifier_checkpoint``), or, with ``labeler="nearest_train"``, by the label
of the nearest training point (exact for a memorizer's samples, a 1-nearest-neighbour classifier otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from diffuse_feat.data.base import MissingGroundTruth, provides, require
from diffuse_feat.diagnostics.cloning import (
    classifier_labeler,
    cloning_experiment,
    exact_cloning_predictions,
    nearest_train_labeler,
)
from diffuse_feat.diagnostics.collapse import (
    COLLAPSE_ENTROPY_LEVEL,
    COLLAPSE_PHI_LEVEL,
    entropy_proxy,
    estimate_collapse_time,
    estimate_speciation_time,
)
from diffuse_feat.diagnostics.regimes_theory import (
    SPECIATION_LEVEL,
    gaussian_collapse_time,
    gaussian_excess_entropy,
    gm_excess_entropy,
    speciation_time,
)
from diffuse_feat.ou import Method, ou_time_grid
from diffuse_feat.reporting import RunReporter

from .base import DiagnosticCallback

__all__ = ["RegimesCallback"]


class RegimesCallback(DiagnosticCallback):
    """Cloning (``phi``, ``phi_C``) and collapse times of the model being trained, against theory.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        num_pairs: clone pairs per clone time (the binomial standard error is at most ``0.5 / sqrt(num_pairs)``).
        clone_times: OU clone times; default ``num_clone_times`` evenly spaced in ``[0.1, 0.8 t_max]``.
        t_max, t_min, step, num_geometric: the OU grid (:func:`diffuse_feat.ou.ou_time_grid`): start time,
            end time, step above ``t = 1``, geometric steps below it.
        method: ``"sde"`` (the paper's) or ``"ode"`` (probability flow; clones then never separate).
        labeler: how classes are read: ``"auto"`` (the data's ``oracle_labels``, else ``classifier_checkpoint``),
            ``"oracle"``, ``"classifier"`` or ``"nearest_train"`` (label of the nearest training point).
        classifier_checkpoint: a ``ClassificationModule`` checkpoint that labels samples when the data has no
            ``oracle_labels``; ``classifier_sigma`` is the noise level it is told.
        reference_samples: forward Monte-Carlo samples of the references (exact-score ``phi``, ``phi_C``, ``f^e``).
        max_batch: evaluate the model on at most this many states at once (memory).
        use_ema, seed, at_train_end, name: as in :class:`DiagnosticCallback`.

    The defaults are sized for monitoring during training (under 10% of the default experiment's training
    time, ``benchmarks/callback_cost.py``); the reproduction uses more pairs and a finer grid.

    Subclass and override :meth:`make_labeler` to read classes another way.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_pairs: int = 64,
        clone_times: Sequence[float] | None = None,
        num_clone_times: int = 6,
        t_max: float = 6.0,
        t_min: float = 1e-3,
        step: float = 0.2,
        num_geometric: int = 20,
        method: Method = "sde",
        labeler: Literal["auto", "oracle", "classifier", "nearest_train"] = "auto",
        classifier_checkpoint: str | None = None,
        classifier_sigma: float = 0.0,
        reference_samples: int = 1000,
        max_batch: int | None = None,
        use_ema: bool = True,
        seed: int = 0,
        at_train_end: bool = True,
        name: str | None = None,
    ):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        if num_pairs < 1 or num_clone_times < 2:
            raise ValueError("RegimesCallback needs num_pairs >= 1 and num_clone_times >= 2")
        self.num_pairs, self.method, self.max_batch = num_pairs, method, max_batch
        self.grid = ou_time_grid(t_max, t_min, step, 1.0, num_geometric)
        if clone_times is None:
            clone_times = torch.linspace(0.1, 0.8 * t_max, num_clone_times).tolist()
        self.clone_times = torch.tensor(sorted(float(t) for t in clone_times), dtype=torch.float64)
        if float(self.clone_times[0]) <= t_min or float(self.clone_times[-1]) > t_max:
            raise ValueError(f"RegimesCallback.clone_times must lie in (t_min, t_max] = ({t_min}, {t_max}]")
        if labeler not in ("auto", "oracle", "classifier", "nearest_train"):
            raise ValueError(f"RegimesCallback.labeler must be auto, oracle, classifier or nearest_train, "
                             f"got {labeler!r}")
        self.labeler = labeler
        self.classifier_checkpoint, self.classifier_sigma = classifier_checkpoint, classifier_sigma
        self.reference_samples = reference_samples
        self._labeler = None
        self._refs: dict[str, Any] | None = None
        self._last: dict[str, Any] | None = None

    # ----- labeler and references (once) -----------------------------------------------------------
    def make_labeler(self, trainer: pl.Trainer, device: torch.device):
        """``x -> class`` as ``labeler`` says (``"auto"``: the data's oracle, else the classifier checkpoint),
        or a clear error naming what is missing."""
        dm, choice = trainer.datamodule, self.labeler
        owner = type(dm).__name__ if dm is not None else "no DataModule"
        if choice in ("auto", "oracle") and provides(dm, "oracle_labels"):
            return dm.oracle_labels
        if choice == "oracle":
            raise MissingGroundTruth(f"RegimesCallback.labeler='oracle' but {owner} has no `oracle_labels`; use "
                                     "labeler='classifier' with classifier_checkpoint, or labeler='nearest_train'")
        if choice == "nearest_train":
            needed_by = type(self).__name__
            train = require(dm, "train_tensor", needed_by=needed_by)()
            return nearest_train_labeler(train, require(dm, "train_labels", needed_by=needed_by)())
        if self.classifier_checkpoint:
            from diffuse_feat.modules.classification import ClassificationModule

            classifier = ClassificationModule.load_from_checkpoint(
                self.classifier_checkpoint, map_location=device, weights_only=False
            ).eval()
            return classifier_labeler(classifier, self.classifier_sigma)
        raise MissingGroundTruth(
            f"RegimesCallback needs a labeler for phi(t), but {owner} has no `oracle_labels`; pass "
            "classifier_checkpoint=<path to a ClassificationModule .ckpt> "
            "(e.g. trained with configs/digits/classifier.yaml), or labeler='nearest_train'"
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._labeler is None:  # fail before training, not at the first measurement
            self._labeler = self.make_labeler(trainer, pl_module.device)

    def _references(self, trainer: pl.Trainer) -> dict[str, Any]:
        if self._refs is not None:
            return self._refs
        dm, needed_by = trainer.datamodule, type(self).__name__
        train = require(dm, "train_tensor", needed_by=needed_by)()
        n, d = train.shape[0], train[0].numel()
        labels = dm.train_labels() if provides(dm, "train_labels") and getattr(dm, "num_classes", 0) >= 2 else None
        if labels is not None and bool((labels < 0).any()):
            labels = None
        if provides(dm, "top_eigenvalue"):
            top = float(dm.top_eigenvalue)
            eigenvalues = None
        else:
            eigenvalues = require(dm, "covariance_eigh", needed_by=needed_by)()[0]
            top = float(eigenvalues[0])
        times = self.clone_times
        refs: dict[str, Any] = {"train": train, "t_S_theory": float(speciation_time(top)), "alpha": math.log(n) / d}
        refs["phi_theory"] = dm.cloning_theory(times) if provides(dm, "cloning_theory") else None
        gm = provides(dm, "collapse_time") and provides(dm, "component_std")
        if gm:
            refs["t_C_theory"] = float(dm.collapse_time(n))
            f_theory = gm_excess_entropy(times, n, d, dm.component_std, clip=True)
        else:
            eigenvalues = eigenvalues if eigenvalues is not None else dm.covariance_eigh()[0]
            refs["t_C_theory"] = gaussian_collapse_time(n, eigenvalues)
            f_theory = gaussian_excess_entropy(times, n, eigenvalues, clip=True)
        refs["f_theory_over_alpha"] = f_theory / refs["alpha"]
        empirical = require(dm, "empirical_denoiser", needed_by=needed_by)()
        exact = exact_cloning_predictions(empirical, times, labels=labels, num_samples=self.reference_samples,
                                          seed=self.seed + 1)
        refs["phi_collapse_memorizer"] = exact["phi_collapse"]
        refs["phi_memorizer"] = exact.get("phi")
        entropy = entropy_proxy(empirical, times, num_samples=self.reference_samples, seed=self.seed + 2)
        refs["f_e_over_alpha"] = entropy["f_e"] / entropy["alpha"]
        refs["t_C_entropy"] = estimate_collapse_time(times, refs["f_e_over_alpha"], COLLAPSE_ENTROPY_LEVEL)
        self._refs = refs
        return refs

    # ----- measurement ------------------------------------------------------------------------------
    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        refs = self._references(trainer)
        if self._labeler is None:
            self._labeler = self.make_labeler(trainer, pl_module.device)
        res = cloning_experiment(
            model, model.data_shape, self.clone_times, labeler=self._labeler, train=refs["train"],
            num_pairs=self.num_pairs, times=self.grid, method=self.method, seed=self.seed, device=pl_module.device,
            max_batch=self.max_batch,
        )
        t_hat = res["t_hat_C"]
        times = self.clone_times
        values: dict[str, Any] = {
            "t_S_theory": refs["t_S_theory"],
            "t_S_measured": estimate_speciation_time(times, res["phi"]),
            "t_C_theory": refs["t_C_theory"],
            "t_C_entropy": refs["t_C_entropy"],
            "t_C_measured": float(t_hat.mean()),
            "t_C_measured_median": float(t_hat.median()),
            "t_C_phi": estimate_collapse_time(times, res["phi_collapse"], COLLAPSE_PHI_LEVEL),
            "end_distance": float(res["end_distance"].mean()),
            "clone_times": times,
            "phi": res["phi"],
            "phi_se": res["phi_se"],
            "phi_collapse": res["phi_collapse"],
            "phi_collapse_se": res["phi_collapse_se"],
            "phi_collapse_memorizer": refs["phi_collapse_memorizer"],
            "f_e_over_alpha": refs["f_e_over_alpha"],
        }
        if refs["phi_theory"] is not None:
            values["phi_theory"] = refs["phi_theory"]
        if refs["phi_memorizer"] is not None:
            values["phi_memorizer"] = refs["phi_memorizer"]
        self._last = {"t_hat_C": t_hat}
        return values

    # ----- figure -------------------------------------------------------------------------------------
    def report(self, reporter: RunReporter, values, step, trainer, model) -> None:
        from diffuse_feat.plotting import plt

        refs, t = self._refs, self.clone_times.numpy()
        fig, (ax_s, ax_c, ax_h) = plt.subplots(1, 3, figsize=(13, 3.6))
        ax_s.errorbar(t, values["phi"], yerr=values["phi_se"], fmt="o-", ms=3, label="model")
        if "phi_theory" in values:
            ax_s.plot(t, values["phi_theory"], "k-", lw=1, label="theory (population score)")
        if "phi_memorizer" in values:
            ax_s.plot(t, values["phi_memorizer"], "k:", lw=1, label="exact empirical score")
        ax_s.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
        ax_s.axvline(values["t_S_theory"], color="k", ls="--", lw=1, label="$t_S$ theory")
        if math.isfinite(values["t_S_measured"]):
            ax_s.axvline(values["t_S_measured"], color="C0", lw=1, label="$t_S$ measured")
        ax_s.set(xlabel="clone time t (OU)", ylabel=r"$\phi$ (same class)", title="speciation")
        ax_c.errorbar(t, values["phi_collapse"], yerr=values["phi_collapse_se"], fmt="o-", ms=3,
                      label=r"model $\phi_C$")
        ax_c.plot(t, values["phi_collapse_memorizer"], "k:", lw=1, label=r"exact empirical $\phi_C$")
        ax_c.plot(t, values["f_e_over_alpha"], "C2--", lw=1, label=r"$f^e/\alpha$ (training set)")
        ax_c.plot(t, refs["f_theory_over_alpha"].numpy(), "C2-", lw=0.7, label=r"$\max(f,0)/\alpha$ theory")
        ax_c.axvline(values["t_C_theory"], color="k", ls="--", lw=1, label="$t_C$ theory")
        ax_c.axvline(values["t_C_measured"], color="C0", lw=1, label=r"mean $\hat t_C$")
        ax_c.set(xlabel="clone time t (OU)", ylabel="probability", title="collapse", ylim=(-0.05, 1.05))
        ax_h.hist(self._last["t_hat_C"].numpy(), bins=30, color="C0", alpha=0.7)
        ax_h.axvline(values["t_C_theory"], color="k", ls="--", lw=1, label="$t_C$ theory")
        ax_h.axvline(values["t_C_measured"], color="C0", lw=1, label="mean")
        ax_h.set(xlabel=r"$\hat t_C$ (last change of the nearest training point)", ylabel="trajectories",
                 title=f"step {step}")
        for ax in (ax_s, ax_c, ax_h):
            ax.legend(fontsize=6)
        fig.tight_layout()
        reporter.figure(f"figures/{self.name}", fig, step)
