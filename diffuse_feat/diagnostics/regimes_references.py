"""What a cloning / collapse measurement is compared with, computed once from the training set.

Used by ``RegimesCallback`` during training and by ``python -m diffuse_feat.reproduce regimes`` (digits), so
both draw the same references: the theory (t_S, t_C, the excess entropy, and for a Gaussian mixture the
population ``phi(t)``) and the curves of the exact empirical score, i.e. of a model that memorized its
training set (``phi``, ``phi_C`` by forward Monte Carlo, and the entropy proxy ``f^e / alpha``).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..capabilities import MixtureTheory
from ..denoisers.base import Denoiser
from ..regimes_theory import gaussian_collapse_time, gaussian_excess_entropy, gm_excess_entropy, speciation_time
from .cloning import exact_cloning_predictions
from .collapse import (
    COLLAPSE_ENTROPY_LEVEL,
    COLLAPSE_PHI_LEVEL,
    entropy_proxy,
    estimate_collapse_time,
    estimate_speciation_time,
)

__all__ = ["regimes_references", "regimes_references_of_data", "regimes_summary"]


def regimes_references(
    empirical: Denoiser,
    clone_times: Tensor,
    *,
    n: int,
    d: int,
    eigenvalues: Tensor | None = None,
    mixture: Any | None = None,
    labels: Tensor | None = None,
    reference_samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The references at ``clone_times`` (OU time) for ``n`` training points in ``d`` dimensions.

    Args:
        empirical: the exact empirical denoiser of the training set.
        eigenvalues: the training covariance's eigenvalues (descending): Gaussian theory of t_S, t_C, f.
        mixture: instead, a DataModule with ``MixtureTheory`` (``top_eigenvalue``, ``component_std``,
            ``cloning_theory``, ``collapse_time``): the mixture's theory.
        labels: training labels, for the memorizer's ``phi``; reference_samples: forward Monte-Carlo samples.
        seed: the exact ``phi``/``phi_C`` use ``seed + 1``, the entropy proxy ``seed + 2``.

    Returns ``t_S_theory``, ``alpha = log(n)/d``, ``phi_theory`` (mixture, else None), ``t_C_theory``,
    ``f_theory_over_alpha``, ``phi_collapse_memorizer``, ``phi_memorizer`` (None without labels),
    ``f_e_over_alpha`` and ``t_C_entropy`` (where ``f^e / alpha`` crosses 0.1).
    """
    if (eigenvalues is None) == (mixture is None):
        raise ValueError("regimes_references needs exactly one of eigenvalues= (Gaussian theory) or mixture=")
    alpha = math.log(n) / d
    top = float(mixture.top_eigenvalue) if mixture is not None else float(eigenvalues[0])
    refs: dict[str, Any] = {"t_S_theory": float(speciation_time(top)), "alpha": alpha}
    if mixture is not None:
        refs["phi_theory"] = mixture.cloning_theory(clone_times)
        refs["t_C_theory"] = float(mixture.collapse_time(n))
        f_theory = gm_excess_entropy(clone_times, n, d, mixture.component_std, clip=True)
    else:
        refs["phi_theory"] = None
        refs["t_C_theory"] = gaussian_collapse_time(n, eigenvalues)
        f_theory = gaussian_excess_entropy(clone_times, n, eigenvalues, clip=True)
    refs["f_theory_over_alpha"] = f_theory / alpha
    exact = exact_cloning_predictions(empirical, clone_times, labels=labels, num_samples=reference_samples,
                                      seed=seed + 1)
    refs["phi_collapse_memorizer"] = exact["phi_collapse"]
    refs["phi_memorizer"] = exact.get("phi")
    entropy = entropy_proxy(empirical, clone_times, num_samples=reference_samples, seed=seed + 2)
    refs["f_e_over_alpha"] = entropy["f_e"] / entropy["alpha"]
    refs["t_C_entropy"] = estimate_collapse_time(clone_times, refs["f_e_over_alpha"], COLLAPSE_ENTROPY_LEVEL)
    return refs


def regimes_references_of_data(datamodule, clone_times: Tensor, *, reference_samples: int = 1000,
                               seed: int = 0) -> dict[str, Any]:
    """:func:`regimes_references` for a DataModule's training set (with its ``MixtureTheory`` when it has one, else
    the Gaussian theory of its covariance), plus ``train``, the training tensor the collapse is measured against."""
    train = datamodule.train_tensor()
    labels = datamodule.train_labels() if datamodule.num_classes >= 2 else None
    if labels is not None and bool((labels < 0).any()):
        labels = None
    mixture = datamodule if isinstance(datamodule, MixtureTheory) else None
    refs = regimes_references(
        datamodule.empirical_denoiser(), clone_times, n=train.shape[0], d=train[0].numel(),
        eigenvalues=None if mixture is not None else datamodule.covariance_eigh()[0], mixture=mixture, labels=labels,
        reference_samples=reference_samples, seed=seed)
    refs["train"] = train
    return refs


def regimes_summary(cloning: dict[str, Any], refs: dict[str, Any]) -> dict[str, Any]:
    """One measurement's values: a :func:`~diffuse_feat.diagnostics.cloning.cloning_experiment` result read
    against ``refs`` (:func:`regimes_references` at the same clone times): the measured and theoretical t_S and
    t_C, and the curves (``phi``, ``phi_collapse`` with standard errors, the memorizer's and the theory's)."""
    times, t_hat = cloning["clone_times"], cloning["t_hat_C"]
    values: dict[str, Any] = {
        "t_S_theory": refs["t_S_theory"],
        "t_S_measured": estimate_speciation_time(times, cloning["phi"]),
        "t_C_theory": refs["t_C_theory"],
        "t_C_entropy": refs["t_C_entropy"],
        "t_C_measured": float(t_hat.mean()),
        "t_C_measured_median": float(t_hat.median()),
        "t_C_phi": estimate_collapse_time(times, cloning["phi_collapse"], COLLAPSE_PHI_LEVEL),
        "end_distance": float(cloning["end_distance"].mean()),
        "clone_times": times,
        "phi": cloning["phi"],
        "phi_se": cloning["phi_se"],
        "phi_collapse": cloning["phi_collapse"],
        "phi_collapse_se": cloning["phi_collapse_se"],
        "phi_collapse_memorizer": refs["phi_collapse_memorizer"],
        "f_e_over_alpha": refs["f_e_over_alpha"],
    }
    for key in ("phi_theory", "phi_memorizer"):
        if refs[key] is not None:
            values[key] = refs[key]
    return values
