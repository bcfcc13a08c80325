"""Speciation and collapse of *trained* networks on the Gaussian mixture (the ``source: "trained"`` blocks of
``regimes.json``; :mod:`diffuse_feat.reproduce.regimes` runs them).

* :func:`speciation_learned`: a residual MLP trained on a fresh mixture sample every batch (so it can only learn the
  population score, never a training set), cloned like the exact score and read by the oracle labeler. Its EDM
  ``sigma_data`` is the component std (1): ``c_skip x`` is then already the within-component Wiener filter
  ``x / (1 + sigma^2)``, and the network only has to learn the rank-one ``m tanh(m.x / (1 + sigma^2))`` part.
  Noise levels are drawn log-uniformly up to sigma = 200 (OU t = 5.3), because speciation happens at
  sigma_OU(t_S) ~ 8, far above EDM's default log-normal density.
* :func:`collapse_learned`: the same network trained on ``n_small`` points (it memorizes them) and on ``n_large``
  points (it generalizes), each cloned against its own training set, beside the exact empirical score of the small
  set: the memorizer's mean collapse time ``t_hat_C`` should match the exact one, and the generalizer's samples
  should not sit on training points (memorized fraction: nearest / second-nearest distance < 1/3). Each batch
  draws its points with replacement, so 32 points still fill a batch of 256 noise draws; noise levels are
  log-normal around sigma = 1, where collapse is decided (t_C ~ 0.5, sigma_OU ~ 1.4). In a CPU pilot (seed 0, 3000
  steps) EDM's default density (around 0.3) with full-batch steps of the 32 points memorized 23% of samples, with
  ``t_hat_C`` at 0.42 of the exact one; these two changes gave 99% and 0.94.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..backbones import MLP
from ..data import GaussianMixtureDataModule
from ..denoisers import GaussianMixtureDenoiser
from ..diagnostics.cloning import cloning_experiment
from ..diagnostics.collapse import COLLAPSE_PHI_LEVEL, estimate_collapse_time, estimate_speciation_time
from ..diagnostics.memorization import memorization_scores
from ..losses import DenoisingScoreMatching
from ..modules import DiffusionModule
from ..ou import ou_time_grid
from ..preconditioning import EDMPreconditioning
from ..regimes_theory import gm_collapse_time, gm_speciation_time
from ..samplers import generate
from ..sigma_sampling import LogNormalSigma, LogUniformSigma
from .common import fit_quietly

__all__ = ["LearnedSettings", "EndlessBatches", "speciation_learned", "collapse_learned"]

#: collapse is decided at sigma ~ 1-2 (t_C ~ 0.5-0.8): EDM's log-normal moved up there
COLLAPSE_SIGMAS = LogNormalSigma(0.0, 1.2)


@dataclass(frozen=True)
class LearnedSettings:
    spec_dim: int
    spec_steps: int
    spec_batch: int
    spec_pairs: int
    spec_step: float
    spec_clone_times: tuple[float, ...]
    coll_dim: int
    coll_n_small: int
    coll_n_large: int
    coll_steps: int
    coll_batch: int
    coll_pairs: int
    coll_clone_factors: tuple[float, ...]
    width: int
    depth: int


class _Draws(IterableDataset):
    def __init__(self, draw: Callable[[int, torch.Generator], tuple], batch_size: int, seed: int, skip: int = 0):
        self.draw, self.batch_size, self.seed, self.skip = draw, batch_size, seed, skip

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.skip):  # a resumed training: the batches it already trained on, drawn again and dropped
            self.draw(self.batch_size, g)
        while True:
            yield self.draw(self.batch_size, g)


class EndlessBatches(pl.LightningDataModule):
    """Endless batches of ``draw(batch_size, generator) -> (x, y)``: fresh mixture samples (:meth:`fresh`, so only
    the population score can be fitted) or training points drawn with replacement (:meth:`resampled`, so a tiny
    training set still fills a batch of noise draws every step).

    Resumable: a checkpoint holds the number of batches trained on (the trainer's step; the loader itself cannot
    tell, as Lightning fetches one batch ahead of an iterable), and a resumed training's stream draws that many
    batches again and drops them, so it continues with the very batches an uninterrupted run trains on (drawing a
    batch costs microseconds next to a training step)."""

    def __init__(self, draw: Callable[[int, torch.Generator], tuple], data_shape, batch_size: int, seed: int = 0):
        super().__init__()
        self.draw, self.data_shape, self.batch_size, self.seed = draw, tuple(data_shape), batch_size, seed
        self._skip = 0

    @classmethod
    def fresh(cls, mixture: GaussianMixtureDenoiser, batch_size: int, seed: int = 0) -> EndlessBatches:
        return cls(lambda b, g: mixture.sample(b, generator=g), mixture.data_shape, batch_size, seed)

    @classmethod
    def resampled(cls, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0) -> EndlessBatches:
        def draw(b: int, g: torch.Generator) -> tuple:
            idx = torch.randint(x.shape[0], (b,), generator=g)
            return x[idx], y[idx]

        return cls(draw, x.shape[1:], batch_size, seed)

    def train_dataloader(self) -> DataLoader:
        skip, self._skip = self._skip, 0
        return DataLoader(_Draws(self.draw, self.batch_size, self.seed, skip), batch_size=None)

    def state_dict(self) -> dict[str, int]:
        return {"batches": int(self.trainer.global_step) if self.trainer is not None else 0}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._skip = int(state_dict["batches"])


def _model(cfg: LearnedSettings, data_shape, seed: int, sigma_sampler) -> DiffusionModule:
    torch.manual_seed(seed)
    return DiffusionModule(functools.partial(MLP, width=cfg.width, depth=cfg.depth), data_shape=data_shape,
                           preconditioning=EDMPreconditioning(1.0), loss=DenoisingScoreMatching(sigma_sampler),
                           lr=2e-3, lr_warmup_steps=100, seed=seed)


def speciation_learned(cfg: LearnedSettings, seed: int, device: torch.device) -> dict:
    dm = GaussianMixtureDataModule(dim=cfg.spec_dim, pool_size=16, n_val=0, seed=seed)
    data = EndlessBatches.fresh(dm.population_denoiser(), cfg.spec_batch, seed)
    model = fit_quietly(_model(cfg, dm.data_shape, seed, LogUniformSigma(0.01, 200.0)), data, cfg.spec_steps, device)
    grid = ou_time_grid(max(cfg.spec_clone_times) + 1.5, 1e-3, cfg.spec_step, 0.5, 20)
    res = cloning_experiment(model, dm.data_shape, cfg.spec_clone_times, labeler=dm.oracle_labels,
                             num_pairs=cfg.spec_pairs, times=grid, seed=seed + 11, device=device)
    times = res["clone_times"]
    theory = dm.cloning_theory(times)
    return {
        "dim": cfg.spec_dim, "training_steps": cfg.spec_steps, "batch_size": cfg.spec_batch,
        "fresh_samples": cfg.spec_steps * cfg.spec_batch, "num_pairs": cfg.spec_pairs, "times": times,
        "phi": res["phi"], "phi_se": res["phi_se"], "phi_theory": theory,
        "t_S_theory": gm_speciation_time(cfg.spec_dim),
        "t_S_measured": estimate_speciation_time(times, res["phi"]),
        "max_abs_deviation": float((res["phi"] - theory).abs().max()),
    }


def _cloned(denoiser, dm: GaussianMixtureDataModule, clone_times, pairs: int, seed: int, device) -> dict:
    """Cloning against ``dm``'s training set, and the memorized fraction of ``pairs`` fresh samples (Heun)."""
    train = dm.train_tensor().to(device)
    grid = ou_time_grid(4.0, 1e-3, 0.02, 1.0, 150)
    res = cloning_experiment(denoiser, dm.data_shape, clone_times, train=train, num_pairs=pairs, times=grid,
                             seed=seed, device=device)
    samples = generate(denoiser, dm.data_shape, range(seed * 100_000, seed * 100_000 + pairs), num_steps=40,
                       device=device)
    return {"n": train.shape[0], "phi_C": res["phi_collapse"], "phi_C_se": res["phi_collapse_se"],
            "t_C_measured": float(res["t_hat_C"].mean()),
            "t_C_phi": estimate_collapse_time(res["clone_times"], res["phi_collapse"], COLLAPSE_PHI_LEVEL),
            "end_distance_mean": float(res["end_distance"].mean()),
            "memorized_fraction": float(memorization_scores(samples, train)["memorized_fraction"])}


def collapse_learned(cfg: LearnedSettings, seed: int, device: torch.device) -> dict:
    d = cfg.coll_dim
    t_c = gm_collapse_time(cfg.coll_n_small, d)
    clone_times = [f * t_c for f in cfg.coll_clone_factors]
    out: dict = {"dim": d, "t_C_theory": t_c, "clone_times": clone_times, "training_steps": cfg.coll_steps}
    for name, n in (("small", cfg.coll_n_small), ("large", cfg.coll_n_large)):
        dm = GaussianMixtureDataModule(dim=d, pool_size=n, n_val=0, seed=seed)
        data = EndlessBatches.resampled(dm.train_tensor(), dm.train_labels(), cfg.coll_batch, seed)
        model = fit_quietly(_model(cfg, dm.data_shape, seed, COLLAPSE_SIGMAS), data, cfg.coll_steps, device)
        out[name] = _cloned(model, dm, clone_times, cfg.coll_pairs, seed + 5, device)
        if name == "small":
            out["exact_small"] = _cloned(dm.empirical_denoiser().to(device), dm, clone_times, cfg.coll_pairs,
                                         seed + 5, device)
    out["t_C_ratio_to_exact"] = out["small"]["t_C_measured"] / out["exact_small"]["t_C_measured"]
    return out
