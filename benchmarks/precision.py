"""Training throughput (images/s) of the U-Net image configs in bf16-mixed vs fp32, side by side.

Builds the model each config describes (backbone, lr, batch size) and trains it under the Lightning
Trainer on random tensors of the config's image shape (throughput does not depend on pixel values,
and no dataset is needed); the first ``--warmup`` steps are excluded from the timing. Repeats
alternate between the precisions and the median is reported. Needs a CUDA GPU; on a machine without
one it says so and exits (``--device cpu`` runs it anyway, with fp32 vs bf16-mixed on CPU, as a smoke
test of the script).

    python benchmarks/precision.py [--configs configs/images/mnist_unet.yaml ...] [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from diffuse_feat.backbones import UNet
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import quiet

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [REPO / "configs/images/mnist_unet.yaml", REPO / "configs/images/cifar10_unet.yaml"]
SHAPES = {"MNISTDataModule": (1, 28, 28), "FashionMNISTDataModule": (1, 28, 28), "CIFAR10DataModule": (3, 32, 32)}


class StepTimer(pl.Callback):
    """Wall time from the end of step ``warmup`` to the end of training, synchronised with the GPU."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds = warmup, 0.0, 0.0

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start


def images_per_second(config: dict, precision: str, steps: int, warmup: int, device: str) -> float:
    model_args = dict(config["model"]["init_args"])
    backbone_args = model_args.pop("backbone")["init_args"]
    shape = SHAPES[config["data"]["class_path"].rsplit(".", 1)[-1]]
    batch = int(config["data"]["init_args"]["batch_size"])
    torch.manual_seed(0)
    model = DiffusionModule(functools.partial(UNet, **backbone_args), data_shape=shape, **model_args)
    data = TensorDataset(torch.randn((steps + warmup) * batch, *shape), torch.zeros((steps + warmup) * batch))
    timer = StepTimer(warmup)
    trainer = pl.Trainer(accelerator=device, devices=1, precision=precision, max_steps=steps + warmup,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, DataLoader(data, batch_size=batch, shuffle=False, drop_last=True))
    return steps * batch / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=CONFIGS)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (cuDNN autotune, allocator)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (use --device cpu for a smoke test)")
        return
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {where}; torch {torch.__version__}; {args.steps} timed steps, median of {args.repeats}")
    print(f"{'config':<22}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16/fp32':>11}")
    for path in args.configs:
        config = yaml.safe_load(path.read_text())
        runs: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
        with quiet(ignore=(".*validation_step.*",)):
            for _ in range(args.repeats):
                for precision in runs:  # alternate, so drifts (clocks, other jobs) hit both alike
                    runs[precision].append(images_per_second(config, precision, args.steps, args.warmup, args.device))
        fp32, bf16 = (statistics.median(runs[p]) for p in ("32-true", "bf16-mixed"))
        print(f"{path.stem:<22}{fp32:>12.0f}{bf16:>12.0f}{bf16 / fp32:>11.2f}")


if __name__ == "__main__":
    main()
