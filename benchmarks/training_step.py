"""A DiffusionModule training step under the Lightning Trainer vs a hand-written PyTorch loop.

Same backbone, same data loader, same optimizer, same loss; the Trainer run includes everything the
framework adds per step (loss logging, the per-sigma loss buckets, the NaN check). Both are timed in
one process, alternating, and the median of several repeats is compared. Target: ratio <= 1.05.

    python benchmarks/training_step.py [--backbone mlp|unet] [--steps 300] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch

from diffuse_feat.backbones import MLP
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule


def build(backbone: str, device: str) -> tuple[DiffusionModule, DigitsDataModule]:
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=128, n_val=0)
    dm.setup()
    if backbone == "unet":
        from diffuse_feat.backbones.unet import UNet

        factory = functools.partial(UNet, base_channels=32)
    else:
        factory = functools.partial(MLP, width=256, depth=3)
    return DiffusionModule(factory, data_shape=dm.data_shape, lr=1e-3).to(device), dm


def hand_loop(model: DiffusionModule, dm: DigitsDataModule, steps: int, device: str) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loader = dm.train_dataloader()
    g = torch.Generator(device=device).manual_seed(0)
    done = 0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    while done < steps:
        for x0, _ in loader:
            x0 = x0.to(device, non_blocking=True)
            sigma = model.sigma_sampler.sample(x0.shape[0], device=device, generator=g)
            noise = torch.randn(x0.shape, device=device, generator=g)
            loss = model.per_sample_loss(x0, sigma, noise).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    sync()
    return time.perf_counter() - start


def trainer_loop(model: DiffusionModule, dm: DigitsDataModule, steps: int, device: str) -> float:
    trainer = pl.Trainer(max_steps=steps, accelerator=device, devices=1, precision="32-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    trainer.fit(model, dm)
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["mlp", "unet"], default="mlp")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    # warm up both paths once (allocator, kernels, Lightning imports)
    hand_loop(*build(args.backbone, args.device), 20, args.device)
    trainer_loop(*build(args.backbone, args.device), 20, args.device)
    hand, lit = [], []
    for _ in range(args.repeats):
        hand.append(hand_loop(*build(args.backbone, args.device), args.steps, args.device))
        lit.append(trainer_loop(*build(args.backbone, args.device), args.steps, args.device))
    h, t = statistics.median(hand), statistics.median(lit)
    print(f"backbone={args.backbone} device={args.device} steps={args.steps} repeats={args.repeats}")
    print(f"hand-written loop : {args.steps / h:8.1f} steps/s  (median {h:.3f} s)")
    print(f"Lightning Trainer : {args.steps / t:8.1f} steps/s  (median {t:.3f} s)")
    print(f"ratio Trainer/hand: {t / h:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
