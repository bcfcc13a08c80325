"""Biroli, Bonnaire, de Bortoli, Mezard (2024): speciation and collapse in the backward dynamics.

``python -m diffuse_feat.reproduce regimes --out DIR [--quick]`` writes ``DIR/regimes.json`` and ``DIR/regimes.png``:

* ``speciation``: cloning ``phi(t)`` for the two-class Gaussian mixture (d = 256, mu = std = 1) with its population
  score, against the exact theory curve; ``t_S_theory = 1/2 log Lambda`` and ``t_S_measured`` (phi = 0.775);
* ``collapse``: for n = 2000 and d in {16, 32, 64, 128} with the exact empirical score: ``t_C_theory``,
  ``t_C_measured`` (mean last-change time ``t_hat_C`` of the nearest training point), ``phi_C`` from cloning next
  to its exact forward Monte-Carlo value, the entropy proxy ``f^e/alpha`` next to its theory, and the crossings;
* ``digits``: the same two measurements for a diffusion model trained here on the 8x8 digits 1 and 8, with classes
  read by a classifier trained here on noised digits; ``t_C_theory`` is the exact-score ``f^e`` crossing of the
  training set.

Each block carries ``note`` with the reference numbers of the paper note (``shared/papers/biroli2024_regimes.md``)
that the measurement should be compared with.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import MLP
from ..data import DigitsDataModule, GaussianMixtureDataModule
from ..diagnostics.cloning import classifier_labeler, cloning_experiment, exact_cloning_predictions
from ..diagnostics.collapse import (
    COLLAPSE_ENTROPY_LEVEL,
    COLLAPSE_PHI_LEVEL,
    entropy_proxy,
    estimate_collapse_time,
    estimate_speciation_time,
)
from ..diagnostics.regimes_references import regimes_references
from ..diagnostics.regimes_theory import (
    SPECIATION_LEVEL,
    gm_collapse_time,
    gm_excess_entropy,
    gm_speciation_time,
    speciation_time,
)
from ..modules import ClassificationModule, DiffusionModule
from ..ou import ou_time_grid
from ..plotting import plt, save_figure
from ..sigma_sampling import LogUniformSigma
from .common import fit_quietly, pick_device, write_results

DESCRIPTION = "Biroli et al. 2024: speciation (cloning phi, t_S) and collapse (t_C) on Gaussian mixtures and digits"

# note section 6 (c): mean t_hat_C / t_C on the fine grid, exact empirical score, n = 2000
NOTE_FINE_GRID_RATIO = {16: 1.39, 32: 1.21, 64: 1.14}
# note section 4.4: MNIST (1 vs 8, 32x32) phi = 0.775 crossing over t_S, in OU time
NOTE_MNIST_TS_RATIO = 0.93


@dataclass(frozen=True)
class Settings:
    # speciation (population score)
    spec_pairs: int
    spec_t_max: float
    spec_step: float
    spec_clone_times: tuple[float, ...]
    # collapse (exact empirical score)
    coll_dims: tuple[int, ...]
    coll_pairs: int
    coll_t_max: float
    coll_step: float
    coll_geometric: int
    coll_clone_factors: tuple[float, ...]
    reference_samples: int
    # digits
    diffusion_steps: int
    diffusion_width: int
    diffusion_depth: int
    classifier_steps: int
    digit_pairs: int
    digit_step: float
    digit_geometric: int
    digit_clone_times: tuple[float, ...]


def _arange(a: float, b: float, step: float) -> tuple[float, ...]:
    return tuple(round(a + i * step, 6) for i in range(int(round((b - a) / step)) + 1))


FULL = Settings(
    spec_pairs=10000, spec_t_max=10.0, spec_step=0.01, spec_clone_times=_arange(1.0, 10.0, 0.5),
    coll_dims=(16, 32, 64, 128), coll_pairs=1000, coll_t_max=8.0, coll_step=0.01, coll_geometric=400,
    coll_clone_factors=(0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0), reference_samples=20000,
    diffusion_steps=30000, diffusion_width=256, diffusion_depth=3, classifier_steps=3000, digit_pairs=4000,
    digit_step=0.01, digit_geometric=200, digit_clone_times=_arange(0.05, 1.0, 0.05) + _arange(1.2, 4.4, 0.4),
)
QUICK = Settings(
    spec_pairs=3000, spec_t_max=7.0, spec_step=0.02, spec_clone_times=_arange(1.5, 5.0, 0.25),
    coll_dims=(16, 32, 64, 128), coll_pairs=200, coll_t_max=5.0, coll_step=0.02, coll_geometric=200,
    coll_clone_factors=(0.6, 0.8, 1.0, 1.25, 1.6), reference_samples=4000,
    diffusion_steps=2500, diffusion_width=128, diffusion_depth=2, classifier_steps=600, digit_pairs=400,
    digit_step=0.05, digit_geometric=80,
    digit_clone_times=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.1, 1.4, 1.8, 2.5, 3.5),
)
COLLAPSE_N = 2000
SPECIATION_DIM = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


# ----- speciation: Gaussian mixture, population score ------------------------------------------------
def speciation(cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = GaussianMixtureDataModule(dim=SPECIATION_DIM, mean_scale=1.0, component_std=1.0, pool_size=16, n_val=0,
                                   seed=seed)
    times = ou_time_grid(cfg.spec_t_max, 0.0, cfg.spec_step, num_geometric=0)  # smooth score: uniform to t = 0
    res = cloning_experiment(dm.population_denoiser().to(device), dm.data_shape, cfg.spec_clone_times,
                             labeler=dm.oracle_labels, num_pairs=cfg.spec_pairs, times=times, seed=seed,
                             device=device)
    clone_times = res["clone_times"]
    phi_theory = dm.cloning_theory(clone_times)
    dev = (res["phi"] - phi_theory).abs()
    return {
        "dim": SPECIATION_DIM, "mean_scale": 1.0, "std": 1.0, "num_pairs": cfg.spec_pairs, "t_max": cfg.spec_t_max,
        "step": cfg.spec_step, "times": clone_times, "phi": res["phi"], "phi_se": res["phi_se"],
        "phi_theory": phi_theory,
        "t_S_theory": float(speciation_time(dm.top_eigenvalue)),
        "t_S_theory_phi": gm_speciation_time(SPECIATION_DIM),  # where the theory curve is 0.7752
        "t_S_measured": estimate_speciation_time(clone_times, res["phi"]),
        "max_abs_deviation": float(dev.max()),
        "max_deviation_in_se": float((dev / res["phi_se"].clamp_min(1e-12)).max()),
        "note": {"acceptance": "|phi - theory| <= max(3 SE, 0.015) everywhere; t_S_measured within t_S +- 0.1",
                 "paper_d256": {"t": [2.0, 2.5, 3.0, 3.5, 4.0], "phi": [0.9775, 0.8620, 0.7012, 0.5925, 0.5343]}},
    }


# ----- collapse: Gaussian mixture, exact empirical score -----------------------------------------------
def collapse_one(dim: int, cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = GaussianMixtureDataModule(dim=dim, pool_size=COLLAPSE_N, n_val=0, seed=seed)
    train = dm.train_tensor().to(device)
    empirical = dm.empirical_denoiser().to(device)
    t_c = gm_collapse_time(COLLAPSE_N, dim)
    alpha = math.log(COLLAPSE_N) / dim
    clone_times = [f * t_c for f in cfg.coll_clone_factors]
    grid = ou_time_grid(cfg.coll_t_max, 1e-3, cfg.coll_step, 1.0, cfg.coll_geometric)
    res = cloning_experiment(empirical, dm.data_shape, clone_times, train=train, num_pairs=cfg.coll_pairs,
                             times=grid, seed=seed + dim, device=device)
    exact = exact_cloning_predictions(empirical, res["clone_times"], num_samples=cfg.reference_samples,
                                      seed=seed + 1)
    entropy_times = torch.tensor([f * t_c for f in (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0)]
                                 + [4.0, 6.0], dtype=torch.float64)
    entropy = entropy_proxy(empirical, entropy_times, num_samples=cfg.reference_samples, seed=seed + 2)
    f_over_alpha = entropy["f_e"] / alpha
    t_hat = res["t_hat_C"]
    return {
        "dim": dim, "n": COLLAPSE_N, "alpha": alpha, "t_S_theory": gm_speciation_time(dim),
        "t_C_theory": t_c,
        "t_C_measured": float(t_hat.mean()),
        "t_C_measured_ratio": float(t_hat.mean()) / t_c,
        "t_hat_C_std": float(t_hat.std()), "t_hat_C_median": float(t_hat.median()),
        "t_C_entropy": estimate_collapse_time(entropy_times, f_over_alpha, COLLAPSE_ENTROPY_LEVEL),
        "t_C_phi": estimate_collapse_time(res["clone_times"], res["phi_collapse"], COLLAPSE_PHI_LEVEL),
        "clone_times": res["clone_times"], "phi_C": res["phi_collapse"], "phi_C_se": res["phi_collapse_se"],
        "phi_C_exact": exact["phi_collapse"], "phi_C_exact_se": exact["phi_collapse_se"],
        "entropy_times": entropy_times, "f_e_over_alpha": f_over_alpha, "f_e_over_alpha_se": entropy["f_e_se"] / alpha,
        "f_theory_over_alpha": gm_excess_entropy(entropy_times, COLLAPSE_N, dim, clip=True) / alpha,
        "end_distance_max": float(res["end_distance"].max()),
        "note_fine_grid_ratio": NOTE_FINE_GRID_RATIO.get(dim),
    }


def collapse(cfg: Settings, seed: int, device: torch.device) -> dict:
    per_dim = [collapse_one(d, cfg, seed, device) for d in cfg.coll_dims]
    return {
        "n": COLLAPSE_N, "dims": list(cfg.coll_dims), "num_trajectories": cfg.coll_pairs, "t_max": cfg.coll_t_max,
        "step": cfg.coll_step, "num_geometric": cfg.coll_geometric,
        "t_C_theory": [r["t_C_theory"] for r in per_dim], "t_C_measured": [r["t_C_measured"] for r in per_dim],
        "per_dim": per_dim,
        "note": {"acceptance": "mean t_hat_C in [0.95, 1.25] t_C (d=64); ratio decreasing with d "
                               "(fine grid: 1.39 / 1.21 / 1.14 for d = 16 / 32 / 64); phi_C(t_C) in [0.45, 0.8]; "
                               "f^e/alpha = 0.1 crossing in [0.85, 1.1] t_C",
                 "fine_grid_ratio": NOTE_FINE_GRID_RATIO},
    }


# ----- digits: trained diffusion model and classifier -------------------------------------------------
@torch.no_grad()
def _accuracy(classifier: ClassificationModule, x: torch.Tensor, y: torch.Tensor, device) -> float:
    return float((classifier(x.to(device), 0.0).argmax(1).cpu() == y).double().mean())


def digits(cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = DigitsDataModule(classes=[1, 8], n_val=56, batch_size=128, seed=seed)
    dm.setup()
    train, labels = dm.train_tensor(), dm.train_labels()
    n, d = train.shape[0], train[0].numel()
    torch.manual_seed(seed)
    diffusion = DiffusionModule(functools.partial(MLP, width=cfg.diffusion_width, depth=cfg.diffusion_depth),
                                data_shape=dm.data_shape, lr=2e-3, lr_warmup_steps=100, seed=seed)
    diffusion = fit_quietly(diffusion, dm, cfg.diffusion_steps, device)
    classifier = ClassificationModule(functools.partial(MLP, width=128, depth=2), data_shape=dm.data_shape,
                                      num_classes=2, sigma_sampler=LogUniformSigma(0.01, 2.0), lr=2e-3, seed=seed)
    classifier = fit_quietly(classifier, dm, cfg.classifier_steps, device)
    eigenvalues = dm.covariance_eigh()[0]
    t_s = float(speciation_time(eigenvalues[0]))
    grid = ou_time_grid(5.0, 1e-3, cfg.digit_step, 1.0, cfg.digit_geometric)  # T ~ the paper's DDPM horizon 5.06
    res = cloning_experiment(diffusion, dm.data_shape, cfg.digit_clone_times, labeler=classifier_labeler(classifier),
                             train=train.to(device), num_pairs=cfg.digit_pairs, times=grid, seed=seed, device=device)
    clone_times = res["clone_times"]
    # the references RegimesCallback draws, from the same function
    refs = regimes_references(dm.empirical_denoiser().to(device), clone_times, n=n, d=d, eigenvalues=eigenvalues,
                              labels=labels, reference_samples=cfg.reference_samples, seed=seed)
    t_hat = res["t_hat_C"]
    t_s_measured = estimate_speciation_time(clone_times, res["phi"])
    return {
        "classes": [1, 8], "n_train": n, "dim": d, "top_eigenvalue": float(eigenvalues[0]),
        "diffusion_steps": cfg.diffusion_steps, "classifier_steps": cfg.classifier_steps,
        "classifier_val_accuracy": _accuracy(classifier, dm.val_tensor(), dm.val_labels(), device),
        "num_pairs": cfg.digit_pairs, "times": clone_times,
        "phi": res["phi"], "phi_se": res["phi_se"], "phi_memorizer": refs["phi_memorizer"],
        "t_S_theory": t_s, "t_S_measured": t_s_measured, "t_S_ratio": t_s_measured / t_s,
        "phi_C": res["phi_collapse"], "phi_C_se": res["phi_collapse_se"],
        "phi_C_memorizer": refs["phi_collapse_memorizer"],
        "f_e_over_alpha": refs["f_e_over_alpha"],
        "t_C_theory": refs["t_C_entropy"],
        "t_C_theory_gaussian": refs["t_C_theory"],
        "f_gaussian_over_alpha": refs["f_theory_over_alpha"],
        "t_C_measured": float(t_hat.mean()), "t_hat_C_median": float(t_hat.median()),
        "t_C_phi": estimate_collapse_time(clone_times, res["phi_collapse"], COLLAPSE_PHI_LEVEL),
        "t_C_phi_memorizer": estimate_collapse_time(clone_times, refs["phi_collapse_memorizer"], COLLAPSE_PHI_LEVEL),
        "end_distance_mean": float(res["end_distance"].mean()),
        "note": {"MNIST_t_S_ratio_OU": NOTE_MNIST_TS_RATIO,
                 "reading": "t_C_measured << t_C_theory and phi_C far below the memorizer: the model generalizes; "
                            "close to them: it memorized its n_train digits"},
    }


# ----- figure -----------------------------------------------------------------------------------------
def _vline(ax, t, **kwargs) -> None:
    if t is not None and math.isfinite(t):  # a crossing that was not found is null in the JSON
        ax.axvline(t, **kwargs)


def plot(payload: dict, path: Path) -> None:
    """The six panels of ``regimes.png`` from the JSON payload (lists, ``None`` for missing crossings)."""
    spec, coll, dig = payload["speciation"], payload["collapse"], payload["digits"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    ax.errorbar(spec["times"], spec["phi"], yerr=[3 * s for s in spec["phi_se"]], fmt="o", ms=3,
                label="measured (3 SE)")
    ax.plot(spec["times"], spec["phi_theory"], "k-", lw=1, label="theory")
    ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    _vline(ax, spec["t_S_theory"], color="k", ls="--", lw=1, label=r"$t_S=\frac{1}{2}\log\Lambda$")
    _vline(ax, spec["t_S_measured"], color="C0", lw=1, label=r"$\phi=0.775$ crossing")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi(t)$", title=f"speciation, GM d={spec['dim']}, population score")
    for r in coll["per_dim"]:
        x = [t / r["t_C_theory"] for t in r["clone_times"]]
        (line,) = axes[0, 1].plot(x, r["phi_C_exact"], "-", lw=1)
        axes[0, 1].errorbar(x, r["phi_C"], yerr=r["phi_C_se"], fmt="o", ms=3, color=line.get_color(),
                            label=f"d={r['dim']}")
        xe = [t / r["t_C_theory"] for t in r["entropy_times"]]
        axes[0, 2].plot(xe, r["f_theory_over_alpha"], "-", lw=1, color=line.get_color())
        axes[0, 2].errorbar(xe, r["f_e_over_alpha"], yerr=r["f_e_over_alpha_se"], fmt="o", ms=3,
                            color=line.get_color(), label=f"d={r['dim']}")
    axes[0, 1].set(xlabel=r"$t/t_C$", ylabel=r"$\phi_C$", xscale="log",
                   title=f"collapse, n={coll['n']}: cloning (dots) vs exact MC (lines)")
    axes[0, 2].set(xlabel=r"$t/t_C$", ylabel=r"$f^e/\alpha$", xscale="log",
                   title=r"entropy proxy vs $\max(f,0)/\alpha$")
    ax = axes[1, 0]
    dims = coll["dims"]
    ax.plot(dims, coll["t_C_theory"], "k-", lw=1, label="theory")
    ax.plot(dims, coll["t_C_measured"], "o", label=r"mean $\hat t_C$")
    ax.plot(dims, [r["t_C_entropy"] for r in coll["per_dim"]], "s", ms=4, label=r"$f^e/\alpha=0.1$")
    ax.plot(dims, [r["t_C_phi"] for r in coll["per_dim"]], "^", ms=4, label=r"$\phi_C=0.6$")
    ax.set(xlabel="d", ylabel="$t_C$ (OU)", xscale="log", title=f"collapse time, n={coll['n']}")
    ax = axes[1, 1]
    ax.errorbar(dig["times"], dig["phi"], yerr=dig["phi_se"], fmt="o-", ms=3, label="trained model")
    ax.plot(dig["times"], dig["phi_memorizer"], "k:", lw=1, label="exact empirical score")
    ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    _vline(ax, dig["t_S_theory"], color="k", ls="--", lw=1, label=r"$t_S=\frac{1}{2}\log\Lambda$")
    _vline(ax, dig["t_S_measured"], color="C0", lw=1, label="measured")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi(t)$", title=f"digits 1 vs 8 (n={dig['n_train']}): speciation")
    ax = axes[1, 2]
    ax.errorbar(dig["times"], dig["phi_C"], yerr=dig["phi_C_se"], fmt="o-", ms=3, label=r"model $\phi_C$")
    ax.plot(dig["times"], dig["phi_C_memorizer"], "k:", lw=1, label=r"exact empirical $\phi_C$")
    ax.plot(dig["times"], dig["f_e_over_alpha"], "C2--", lw=1, label=r"$f^e/\alpha$ (training set)")
    _vline(ax, dig["t_C_theory"], color="k", ls="--", lw=1, label=r"$t_C$ ($f^e/\alpha=0.1$)")
    _vline(ax, dig["t_C_measured"], color="C0", lw=1, label=r"mean $\hat t_C$ (model)")
    ax.set(xlabel="clone time t (OU)", ylabel="probability", title="digits: collapse", ylim=(-0.05, 1.05))
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool, seed: int, args: argparse.Namespace) -> dict:
    cfg = QUICK if quick else FULL
    device = pick_device(getattr(args, "device", None))
    payload = {
        "paper": "Biroli, Bonnaire, de Bortoli, Mezard 2024, Dynamical regimes of diffusion models",
        "quick": quick, "seed": seed, "device": str(device),
        "time": "Ornstein-Uhlenbeck t (x = a e^-t + sqrt(1-e^-2t) z)",
        "speciation": speciation(cfg, seed, device),
        "collapse": collapse(cfg, seed, device),
        "digits": digits(cfg, seed, device),
    }
    return write_results(out, "regimes", payload, plot)
