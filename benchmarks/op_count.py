"""Operator launches per training step of the image configs' U-Nets, in fp32 and under bf16 autocast.

On a GPU each top-level operator is at least one kernel launch with its Python and dispatcher overhead
(~10-30 us), so a step whose kernels are small is bounded by this count, not by its FLOPs; the count does not
depend on the device or the batch size, so it is taken on the CPU (batch 2). Counted with
``torch.profiler``: the forward pass (noise, preconditioning, U-Net, loss) plus the backward pass; gradient
clipping and Adam add only a handful of launches on a GPU (foreach kernels) and are left out.

    python benchmarks/op_count.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

from diffuse_feat.backbones import UNet
from diffuse_feat.modules import DiffusionModule

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

CONFIGS = {"mnist_unet": (1, 28, 28), "cifar10_unet": (3, 32, 32)}


def top_level_ops(fn) -> dict[str, int]:
    """Operators called from Python or the autograd engine (not those nested inside another operator)."""
    fn()  # warm-up: lazy initialisations are not part of a step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts: dict[str, int] = {}
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and (parent is None or not parent.name.startswith("aten::")):
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    rows = {}
    for name, shape in CONFIGS.items():
        config = yaml.safe_load((REPO / f"configs/images/{name}.yaml").read_text())
        torch.manual_seed(0)
        model = DiffusionModule(functools.partial(UNet, **config["model"]["init_args"]["backbone"]["init_args"]),
                                data_shape=shape)
        x0 = torch.randn(2, *shape)

        def step(bf16: bool, model=model, x0=x0) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(model.denoiser, x0, model.noise_generator).per_sample.mean()
            model.zero_grad(set_to_none=True)
            loss.backward()

        fp32, bf16 = top_level_ops(lambda: step(False)), top_level_ops(lambda: step(True))
        rows[name] = {"fp32_ops_per_step": sum(fp32.values()), "bf16_ops_per_step": sum(bf16.values()),
                      "bf16_casts_added": bf16.get("aten::to", 0) - fp32.get("aten::to", 0),
                      "convolutions": fp32.get("aten::conv2d", 0)}
        print(f"{name}: {rows[name]}")
    write_results("op_count", "cpu", {"configs": rows}, args.out)


if __name__ == "__main__":
    main()
