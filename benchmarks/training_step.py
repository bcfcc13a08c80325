"""A DiffusionModule training step under the Lightning Trainer vs a hand-written PyTorch loop.

Same backbone, same data loader, same optimizer, same loss; the Trainer run includes everything the
framework adds per step (loss logging, the per-sigma loss buckets, the NaN check, Lightning's loop and
hooks). The step ratio times the steady state: from the start of step ``--warmup`` to the end of the last
step (batch loading included), so it compares steps, not ``Trainer.fit``'s one-off start-up, which the
second ratio (whole ``fit`` vs the whole hand loop) includes. Both are timed in one process, alternating,
and the median of several repeats is compared; each repeat's own ratio is kept, so the JSON shows the spread.
Target: step ratio <= 1.05.

What the framework adds to a step is broken down in the JSON (``per_step_us``): each piece of ours timed alone on a
real batch (the input check, the per-sigma loss buckets, the NaN note, the logging decision, the noise generator's
lookup; median of many calls), and the rest of the measured difference, Lightning's loop (hooks, closure, progress
tracking, batch transfer). The TensorBoard writers, the resumable loader's bookkeeping and EMA are not in this
benchmark's Trainer run: a logger writes every ``log_every_n_steps`` (50) steps, the loader counts a batch with one
Python add, and EMA is a callback a user adds (``callbacks.EMA``: one foreach call a step).

    python benchmarks/training_step.py [--backbone mlp unet] [--steps 300] [--warmup 20] [--repeats 5]
                                       [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from diffuse_feat.backbones import MLP
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402


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


class Clock:
    """Wall-clock marks with the device synchronised first, so GPU work is counted where it happens."""

    def __init__(self, device: str) -> None:
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.sync()
        self.marks[name] = time.perf_counter()

    def between(self, first: str, last: str) -> float:
        return self.marks[last] - self.marks[first]


def hand_loop(model: DiffusionModule, dm: DigitsDataModule, steps: int, warmup: int, clock: Clock) -> None:
    clock.mark("start")
    device = model.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loader = dm.train_dataloader()
    g = torch.Generator(device=device).manual_seed(0)
    done = 0
    while done < steps:
        for x0, _ in loader:
            if done == warmup:
                clock.mark("steady")
            x0 = x0.to(device, non_blocking=True)
            loss = model.loss(model.denoiser, x0, g).per_sample.mean()  # draws sigma, then the noise
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    clock.mark("end")


class StepClock(pl.Callback):
    """Marks the start of step ``warmup`` and the end of the last step, as the hand loop does."""

    def __init__(self, steps: int, warmup: int, clock: Clock) -> None:
        self.steps, self.warmup, self.clock = steps, warmup, clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.clock.mark("steady")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.steps:
            self.clock.mark("end")


def trainer_loop(model: DiffusionModule, dm: DigitsDataModule, steps: int, warmup: int, clock: Clock) -> None:
    clock.mark("start")
    trainer = pl.Trainer(max_steps=steps, accelerator=model.device.type, devices=1, precision="32-true",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[StepClock(steps, warmup, clock)])
    trainer.fit(model, dm)
    clock.mark("fit_end")


def median_us(fn, calls: int) -> float:
    """Median wall time of ``fn()`` in microseconds over ``calls`` calls (in blocks of 10, so the clock's own cost
    is small)."""
    times = []
    for _ in range(calls // 10):
        start = time.perf_counter()
        for _ in range(10):
            fn()
        times.append((time.perf_counter() - start) / 10)
    return 1e6 * statistics.median(times)


def framework_pieces(backbone: str, device: str, calls: int = 2000) -> dict[str, float]:
    """Microseconds per step of each piece our ``training_step`` adds to the hand loop's, timed alone."""
    model, dm = build(backbone, device)
    x0 = next(iter(dm.train_dataloader()))[0].to(device)
    losses, sigma = model.loss(model.denoiser, x0, model.noise_generator)
    loss = losses.mean()
    pieces = {"input_check": lambda: model.check_input(x0),
              "loss_buckets": lambda: model.loss_buckets.update(losses, sigma),
              "nonfinite_note": lambda: model._note_nonfinite(loss),
              "log_decision": model.log_this_step,
              "noise_generator_lookup": lambda: model.noise_generator}
    return {name: median_us(fn, calls) for name, fn in pieces.items()}


def compare(backbone: str, steps: int, warmup: int, repeats: int, device: str) -> dict[str, float]:
    """Median steady-state step time by hand and under the Trainer (ms), and their ratios."""
    hand_loop(*build(backbone, device), 20, 0, Clock(device))  # warm-up: allocator, kernels, Lightning imports
    trainer_loop(*build(backbone, device), 20, 0, Clock(device))
    hand, lit = [], []
    for _ in range(repeats):  # alternating, so drifts in machine speed hit both alike
        hand.append(Clock(device))
        hand_loop(*build(backbone, device), steps, warmup, hand[-1])
        lit.append(Clock(device))
        trainer_loop(*build(backbone, device), steps, warmup, lit[-1])
    timed = steps - warmup
    h = statistics.median(c.between("steady", "end") for c in hand) / timed
    t = statistics.median(c.between("steady", "end") for c in lit) / timed
    h_all = statistics.median(c.between("start", "end") for c in hand)
    t_all = statistics.median(c.between("start", "fit_end") for c in lit)
    ratios = [b.between("steady", "end") / a.between("steady", "end") for a, b in zip(hand, lit, strict=True)]
    pieces = framework_pieces(backbone, device)
    extra_us = 1e6 * (t - h)
    per_step = {**pieces, "lightning_loop_and_rest": extra_us - sum(pieces.values()), "total_extra": extra_us}
    return {"hand_ms_per_step": 1e3 * h, "trainer_ms_per_step": 1e3 * t, "step_ratio": t / h,
            "step_ratio_per_repeat": ratios, "step_ratio_spread": max(ratios) - min(ratios),
            "fit_ratio": t_all / h_all, "per_step_us": per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["mlp", "unet"], nargs="+", default=["mlp", "unet"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="steps run before the step clock starts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="write training_step-<device>.json here (default: benchmarks/results)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    print(f"device={args.device} threads={torch.get_num_threads()} steps={args.steps} (first {args.warmup} "
          f"untimed) repeats={args.repeats}; digits, batch 128, Adam")
    print(f"{'backbone':>8} {'hand ms/step':>10} {'Trainer ms/step':>12} {'extra ms':>10} {'ratio':>8} "
          f"{'ratio w/ fit start-up':>12}")
    rows = {}
    for backbone in args.backbone:
        r = rows[backbone] = compare(backbone, args.steps, args.warmup, args.repeats, args.device)
        print(f"{backbone:>8} {r['hand_ms_per_step']:10.2f} {r['trainer_ms_per_step']:12.2f} "
              f"{r['trainer_ms_per_step'] - r['hand_ms_per_step']:+10.2f} {r['step_ratio']:8.3f} "
              f"{r['fit_ratio']:12.3f}", flush=True)
        print(f"{'':>8} per repeat: {' '.join(f'{x:.3f}' for x in r['step_ratio_per_repeat'])}; per step (us): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["per_step_us"].items()), flush=True)
    print("target: step ratio <= 1.05. Lightning's loop adds a fixed time per step (hooks, closure, batch "
          "transfer), so the ratio is largest for the smallest step.")
    import os

    load = os.getloadavg()[0]  # the machine's load when the run ended: say it beside the figures
    write_results("training_step", args.device, {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                                                 "load_average_1min": load, "backbones": rows}, args.out)

if __name__ == "__main__":
    main()
