"""Time of one full-batch GD step of Han et al.'s tied quadratic denoiser (n = 30, d = 1000, m = 20), side by side:

* ``exact``: the closed-form expectation over the diffusion noise (``ExpectedNoisePredictionLoss``, what the
  feature-learning configs train on);
* ``sampled xK``: the same objective on sampled noise (``NoisePredictionLoss``) with ``K`` noise draws per sample
  (the Monte-Carlo way to get a comparable gradient: its noise shrinks only like ``1/sqrt(K)``);

each with 1 and with 2 intra-op threads (the matrices are tiny, so extra threads mostly add synchronisation).

    python benchmarks/feature_learning_step.py [--repeats 200]

Ratios are measured in the same run; absolute times depend on the machine's load (check ``uptime``).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from diffuse_feat.backbones.patch_net import PatchNet
from diffuse_feat.data.two_patch import TwoPatchDataModule
from diffuse_feat.losses import NoisePredictionLoss
from diffuse_feat.reproduce.feature_learning import paper_diffusion_module


def _time_steps(loss_fn, params, repeats: int) -> float:
    """Median seconds of ``repeats`` forward + backward + SGD steps."""
    opt = torch.optim.SGD(params, lr=1e-6)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    dm = TwoPatchDataModule(n_train=30, d=1000, mu_norm=5.0, n_val=0)
    x0 = dm.train_tensor()
    model = paper_diffusion_module(functools.partial(PatchNet, width=20, init_std=0.01), dm.data_shape)
    exact, sampled_loss = model.loss, NoisePredictionLoss(model.loss.sigma)
    generator = torch.Generator().manual_seed(0)

    def sampled(draws: int):
        reps = x0.repeat(draws, 1, 1)
        sigma = torch.full((reps.shape[0],), sampled_loss.sigma)
        noise = torch.randn(reps.shape, generator=generator)
        return lambda: sampled_loss.per_sample_loss(model.denoiser, reps, sigma, noise).mean()

    variants = {"exact": lambda: exact(model.denoiser, x0).per_sample.mean(), "sampled x1": sampled(1),
                "sampled x100": sampled(100)}
    threads_before = torch.get_num_threads()
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, fn in variants.items():
            results[name, threads] = _time_steps(fn, model.parameters(), args.repeats)
    torch.set_num_threads(threads_before)
    base = results["exact", 1]
    print(f"median seconds per GD step (repeats={args.repeats}); ratio to 'exact, 1 thread'")
    for (name, threads), seconds in results.items():
        print(f"  {name:13s} threads={threads}: {seconds * 1e3:8.3f} ms   x{seconds / base:7.2f}")


if __name__ == "__main__":
    main()
