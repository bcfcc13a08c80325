"""Training throughput (images/s) of the U-Net image configs in bf16-mixed vs fp32, side by side.

Builds the model each config describes (backbone, lr, batch size) and trains it under the Lightning
Trainer on random tensors of the config's image shape (throughput does not depend on pixel values,
and no dataset is needed); the first ``--warmup`` steps are excluded from the timing. ``--compile`` adds a
third run per config, bf16-mixed through ``torch.compile`` (``compile_backbone=true``), with its compile time
(the time to the end of the warm-up steps, minus eager bf16-mixed's); ``--compile cifar10_unet`` only for
that config. Repeats
alternate between the precisions and the median is reported. Needs a CUDA GPU; on a machine without
one it says so and exits (``--device cpu`` runs it anyway, with fp32 vs bf16-mixed on CPU, as a smoke
test of the script).

    python benchmarks/precision.py [--configs configs/images/mnist_unet.yaml ...] [--steps 200] [--repeats 3]
                                   [--compile [cifar10_unet ...]] [--out benchmarks/results]

Writes ``precision-<gpu>.json``: per config ``fp32_images_per_s``, ``bf16_images_per_s``, ``bf16_over_fp32``
(and with ``--compile``: ``compiled_bf16_images_per_s``, ``compile_speedup``, ``compile_seconds``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from diffuse_feat.backbones import UNet
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [REPO / "configs/images/mnist_unet.yaml", REPO / "configs/images/cifar10_unet.yaml"]
SHAPES = {"MNISTDataModule": (1, 28, 28), "FashionMNISTDataModule": (1, 28, 28), "CIFAR10DataModule": (3, 32, 32)}


class StepTimer(pl.Callback):
    """Wall time from the end of step ``warmup`` to the end of training (``seconds``) and from the start of
    training to the end of step ``warmup`` (``warmup_seconds``: kernel selection, compilation), synchronised
    with the GPU."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds, self.warmup_seconds = warmup, 0.0, 0.0, 0.0

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.train_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()
            self.warmup_seconds = self.start - self.train_start

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start


def images_per_second(config: dict, precision: str, steps: int, warmup: int, device: str,
                      compile_backbone: bool = False) -> tuple[float, float]:
    """Steady-state training images/s of ``config``'s model, and the seconds its first ``warmup`` steps took."""
    model_args = dict(config["model"]["init_args"], compile_backbone=compile_backbone)
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
    return steps * batch / timer.seconds, timer.warmup_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=CONFIGS)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (cuDNN autotune, allocator)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--compile", nargs="*", default=None, metavar="CONFIG",
                        help="also time bf16-mixed through torch.compile, for these config names (none: all)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (use --device cpu for a smoke test)")
        return
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {where}; torch {torch.__version__}; {args.steps} timed steps, median of {args.repeats}")
    print(f"{'config':<22}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16/fp32':>11}"
          + (f"{'compiled img/s':>16}{'speed-up':>10}{'compile s':>11}" if args.compile is not None else ""))
    results = {}
    for path in args.configs:
        config = yaml.safe_load(path.read_text())
        kinds = {"32-true": ("32-true", False), "bf16-mixed": ("bf16-mixed", False)}
        compiled_too = args.compile is not None and (not args.compile or path.stem in args.compile)
        if compiled_too:
            kinds["compiled"] = ("bf16-mixed", True)
        runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        with quiet(ignore=(".*validation_step.*",)):
            for _ in range(args.repeats):
                for kind, (precision, compiled) in kinds.items():  # alternate, so drifts hit all alike
                    runs[kind].append(images_per_second(config, precision, args.steps, args.warmup, args.device,
                                                        compile_backbone=compiled))
        rate = {kind: statistics.median(r for r, _ in runs[kind]) for kind in kinds}
        row = {"fp32_images_per_s": rate["32-true"], "bf16_images_per_s": rate["bf16-mixed"],
               "bf16_over_fp32": rate["bf16-mixed"] / rate["32-true"],
               "batch_size": int(config["data"]["init_args"]["batch_size"])}
        line = f"{path.stem:<22}{row['fp32_images_per_s']:>12.0f}{row['bf16_images_per_s']:>12.0f}" \
               f"{row['bf16_over_fp32']:>11.2f}"
        if compiled_too:
            # the first repeat pays the compilation; later ones hit inductor's caches
            first_warmup = runs["compiled"][0][1] - runs["bf16-mixed"][0][1]
            row.update(compiled_bf16_images_per_s=rate["compiled"],
                       compile_speedup=rate["compiled"] / rate["bf16-mixed"], compile_seconds=first_warmup)
            line += f"{rate['compiled']:>16.0f}{row['compile_speedup']:>10.2f}{first_warmup:>11.1f}"
        print(line, flush=True)
        results[path.stem] = row
    write_results("precision", args.device, {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                                             "configs": results}, args.out)

if __name__ == "__main__":
    main()
