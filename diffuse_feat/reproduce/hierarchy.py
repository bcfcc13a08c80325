"""Sclocchi, Favero, Wyart (2024): a phase transition in forward–backward diffusion reveals hierarchical data.

``python -m diffuse_feat.reproduce hierarchy --out DIR [--quick]`` writes ``DIR/hierarchy.json`` and
``DIR/hierarchy.png``:

* ``exact``: RHM(v=32, n_c=32, m=8, s=2), L in {4, 6, 8, 10}, the soft-epsilon process and exact BP: the eps grid,
  ``p_class`` (Rao–Blackwellised root marginal), ``p_unchanged[eps][level]`` (root first, from one exact posterior
  tree per datum), the mean-field curves and ``eps_star_theory``; ``crossing`` is where the L=4 and L=10 class
  curves cross (the note's exact BP: 0.73);
* ``learned``: a diffusion model trained here on a small RHM (Gaussian noise on the one-hot encoding), its
  forward–backward curves read by exact parsing, beside exact BP on the very same noisy inputs;
* ``digits``: a diffusion model and a noised-input classifier trained here on the 8x8 digits: P(predicted class
  preserved) and the normalised change of the classifier's standardised activations at every depth, vs sigma.
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones.mlp import MLP
from ..data.digits import DigitsDataModule
from ..data.rhm import RHMDataModule, RHMGrammar
from ..denoisers.rhm_bp import RHMBeliefPropagation
from ..diagnostics.hierarchy import (
    bp_forward_backward,
    bp_gaussian_forward_backward,
    classifier_read_out,
    crossing_point,
    image_forward_backward,
    learned_forward_backward,
    mean_field_class_curve,
    mean_field_threshold,
)
from ..modules.classification import ClassificationModule
from ..modules.diffusion import DiffusionModule
from ..plotting import plt, save_figure
from ..preconditioning import EDMPreconditioning
from ..samplers import SeededNoise
from ..sigma_sampling import LogUniformSigma
from .common import fit_quietly, pick_device, write_results

DESCRIPTION = "Sclocchi et al. 2024: class transition vs smooth low-level change in forward-backward (RHM BP, digits)"


@dataclass(frozen=True)
class Settings:
    num_trees: int  # exact BP: trees per eps point (MC error of p_class ~ 0.5 / sqrt(num_trees) near eps*)
    eps_grid: tuple[float, ...]
    depths: tuple[int, ...]
    rhm_steps: int  # training steps of the small-RHM diffusion model
    rhm_width: int
    rhm_probes: int
    digits_steps: int
    classifier_steps: int
    digits_probes: int
    sampler_steps: int


EPS_FULL = (0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.73, 0.74, 0.75, 0.76, 0.8, 0.9, 1.0)
QUICK = Settings(150, (0.5, 0.65, 0.7, 0.72, 0.74, 0.76, 0.8, 0.9), (4, 6, 8, 10), 1500, 192, 128, 1200, 600, 128, 16)
FULL = Settings(1000, EPS_FULL, (4, 6, 8, 10), 20000, 512, 512, 8000, 3000, 500, 32)
RHM_BIG = {"v": 32, "n_c": 32, "m": 8, "s": 2}
RHM_SMALL = {"v": 8, "n_c": 8, "m": 2, "s": 2, "L": 3, "scale": 1.5}  # data_std 0.496 ~ EDM's sigma_data
SMALL_SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.2, 2.0, 4.0)
DIGIT_SIGMAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device for training (default: cuda if available)")


# ----- exact BP on the big RHM ---------------------------------------------------------------------------------------
def exact(cfg: Settings, seed: int) -> dict:
    v, m, s = RHM_BIG["v"], RHM_BIG["m"], RHM_BIG["s"]
    theory = mean_field_threshold(v, m, s)
    curves = {}
    for depth in cfg.depths:
        grammar = RHMGrammar.random(v, RHM_BIG["n_c"], m, s, depth, seed=seed)
        trees = grammar.sample_trees(cfg.num_trees, torch.Generator().manual_seed(seed + 1))
        bp = RHMBeliefPropagation(grammar.rules, v)
        res = bp_forward_backward(bp, trees, cfg.eps_grid, process="soft", seed=seed + 2)
        res["p_class_mean_field"] = mean_field_class_curve(cfg.eps_grid, v, m, s, depth, RHM_BIG["n_c"]).tolist()
        curves[str(depth)] = res
    lo, hi = str(min(cfg.depths)), str(max(cfg.depths))
    return {**RHM_BIG, "process": "soft", "num_trees": cfg.num_trees, "eps": list(cfg.eps_grid),
            "depths": list(cfg.depths), "curves": curves, "eps_star_theory": theory["eps_star"],
            "x_star_theory": theory["x_star"], "lambda_theory": theory["lam"],
            "crossing": crossing_point(cfg.eps_grid, curves[lo]["p_class"], curves[hi]["p_class"]),
            "chance": 1.0 / RHM_BIG["n_c"],
            "note": {"eps_star": 0.731, "crossing_height": "0.30-0.37",
                     "L8_leaves_p_unchanged": {"0.5": 0.98, "0.7": 0.89, "0.74": 0.72, "0.76": 0.61, "0.8": 0.44}}}


# ----- a diffusion model learned on a small RHM ----------------------------------------------------------------------
def learned(cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = RHMDataModule(**RHM_SMALL, pool_size=60000, n_val=cfg.rhm_probes, batch_size=128, seed=seed)
    dm.setup()
    torch.manual_seed(seed)
    model = DiffusionModule(functools.partial(MLP, width=cfg.rhm_width, depth=3), data_shape=dm.data_shape,
                            num_classes=dm.num_classes, preconditioning=EDMPreconditioning(dm.data_std),
                            lr=1e-3, lr_warmup_steps=100, seed=seed)
    model = fit_quietly(model, dm, cfg.rhm_steps, device, check_val_every_n_epoch=None)
    x0, trees = dm.val_tensor(), dm.val_trees()
    seeds = list(range(seed, seed + x0.shape[0]))
    with torch.no_grad():
        res = learned_forward_backward(model, x0.to(device), trees, SMALL_SIGMAS, dm.parse, seeds=seeds,
                                       num_steps=cfg.sampler_steps)
    bp = bp_gaussian_forward_backward(dm.bp_denoiser(), x0, trees, SMALL_SIGMAS, SeededNoise(seeds).randn_like(x0),
                                      seed=seed)
    return {**RHM_SMALL, "training_steps": cfg.rhm_steps, "num_probes": x0.shape[0], "sigma": list(SMALL_SIGMAS),
            "model": res, "bp": bp}


# ----- digits --------------------------------------------------------------------------------------------------------
def digits(cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = DigitsDataModule(n_val=cfg.digits_probes, batch_size=128, seed=seed)
    dm.setup()
    torch.manual_seed(seed)
    diffusion = DiffusionModule(functools.partial(MLP, width=256, depth=3), data_shape=dm.data_shape,
                                lr=2e-3, lr_warmup_steps=100, seed=seed)
    diffusion = fit_quietly(diffusion, dm, cfg.digits_steps, device, check_val_every_n_epoch=None)
    classifier = ClassificationModule(functools.partial(MLP, width=128, depth=3), data_shape=dm.data_shape,
                                      num_classes=10, sigma_sampler=LogUniformSigma(0.01, 2.0), lr=2e-3, seed=seed)
    classifier = fit_quietly(classifier, dm, cfg.classifier_steps, device, check_val_every_n_epoch=None)
    x0 = dm.val_tensor().to(device)
    with torch.no_grad():
        accuracy = float((classifier(x0, 0.0).argmax(1).cpu() == dm.val_labels()).double().mean())
        res = image_forward_backward(diffusion, x0, DIGIT_SIGMAS, classifier_read_out(classifier),
                                     seeds=range(seed, seed + x0.shape[0]), num_steps=cfg.sampler_steps,
                                     depth_names=[f"block{i + 1}" for i in range(3)])
    return {"training_steps": cfg.digits_steps, "classifier_steps": cfg.classifier_steps,
            "classifier_val_accuracy": accuracy, "num_probes": x0.shape[0], **res}


# ----- figure --------------------------------------------------------------------------------------------------------
def plot(payload: dict, path: Path) -> None:
    ex = payload["exact"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    for depth, c in ex["curves"].items():
        line = ax.plot(ex["eps"], c["p_class"], "o-", ms=3, label=f"BP L={depth}")[0]
        ax.plot(ex["eps"], c["p_class_mean_field"], ":", color=line.get_color())
    ax.axvline(ex["eps_star_theory"], color="k", ls="--", lw=1, label=f"mean-field eps*={ex['eps_star_theory']:.3f}")
    ax.axhline(ex["chance"], color="grey", lw=0.8)
    ax.set(xlabel="eps (soft process)", ylabel="P(class preserved)", title="RHM(32,32,8,2): class, BP (MF dotted)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    deepest = ex["curves"][str(max(ex["depths"]))]
    rows = list(zip(*deepest["p_unchanged"], strict=True))
    for level, row in enumerate(rows):
        ax.plot(ex["eps"], row, color=plt.cm.viridis(level / max(1, len(rows) - 1)), label=f"l={level}")
    ax.axvline(ex["eps_star_theory"], color="k", ls="--", lw=1)
    ax.set(xlabel="eps", ylabel="P(level-l symbol unchanged)", title=f"L={max(ex['depths'])}: root (dark) to leaves")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[0, 2]
    lam = ex["lambda_theory"]
    for depth, c in ex["curves"].items():
        z = [(e - ex["eps_star_theory"]) * lam ** int(depth) for e in ex["eps"]]
        ax.plot(z, c["p_class"], "o-", ms=3, label=f"L={depth}")
    ax.set(xlim=(-4, 4), xlabel="z = (eps - eps*) lambda^L", ylabel="P(class preserved)", title="finite-size collapse")
    ax.legend(fontsize=7)
    le = payload["learned"]
    for ax, key, title in ((axes[1, 0], "p_class", "class"), (axes[1, 1], "p_unchanged", "levels")):
        for curves, style, name in ((le["bp"], "-", "exact BP"), (le["model"], "--", "learned")):
            if key == "p_class":
                ax.plot(le["sigma"], curves["p_class"], style + "o", ms=3, label=name)
                ax.plot(le["sigma"], curves["p_valid"], style, color="grey", lw=0.8, label=f"{name}: grammatical")
            else:
                rows = list(zip(*curves["p_unchanged"], strict=True))
                for level, row in enumerate(rows):
                    ax.plot(le["sigma"], row, style, color=plt.cm.viridis(level / max(1, len(rows) - 1)),
                            label=f"l={level}" if style == "-" else None)
        ax.set(xscale="log", xlabel="sigma", ylabel=f"P({title} unchanged)",
               title=f"RHM(v={le['v']}, m={le['m']}, L={le['L']}): learned (dashed) vs BP")
        ax.legend(fontsize=6)
    dg = payload["digits"]
    ax = axes[1, 2]
    ax.plot(dg["sigma"], dg["p_class"], "ko-", ms=3, label="P(class preserved)")
    for name in dg["depths"]:
        ax.plot(dg["sigma"], [c / 2 for c in dg["change"][name]], label=f"change/2: {name}")
    ax.set(xscale="log", xlabel="sigma", title="digits: class vs activation change by depth")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool, seed: int, args: argparse.Namespace) -> dict:
    cfg = QUICK if quick else FULL
    device = pick_device(getattr(args, "device", None))
    seconds = {}
    start = time.perf_counter()
    payload = {"paper": "Sclocchi, Favero, Wyart 2024, A phase transition in diffusion models reveals the "
                        "hierarchical nature of data", "quick": quick, "seed": seed, "device": str(device)}
    payload["exact"] = exact(cfg, seed)
    seconds["exact"] = time.perf_counter() - start
    payload["learned"] = learned(cfg, seed, device)
    seconds["learned"] = time.perf_counter() - start - seconds["exact"]
    payload["digits"] = digits(cfg, seed, device)
    seconds["digits"] = time.perf_counter() - start - seconds["exact"] - seconds["learned"]
    payload["seconds"] = seconds
    return write_results(out, "hierarchy", payload, plot)
