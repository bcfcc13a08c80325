"""Wall time of real runs: ``python train.py`` (the default experiment) and N steps of each image config.

Each run is the command a user types, in a fresh process and a scratch folder, timed from the outside
(start-up, data loading, validation, callbacks, checkpoint writing included). The image configs read
full-size fake datasets in the real file formats (60,000 MNIST / 50,000 CIFAR-10 images, written first):
step time does not depend on pixel values. Each image config runs twice, ``--short`` and ``--steps`` steps,
so the difference gives the per-step time without the start-up, and the projected wall time of the
config's whole run (``max_epochs`` epochs) is ``start-up + steps_per_run * per-step``.

    python benchmarks/run_walltime.py [--steps 500] [--short 100] [--configs mnist_unet cifar10_unet]
                                      [--skip-default] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

from tests.fake_images import write_fake_cifar10, write_fake_mnist  # noqa: E402

FULL_SIZE = {"mnist_unet": 60_000, "cifar10_unet": 50_000}
WRITERS = {"mnist_unet": write_fake_mnist, "cifar10_unet": write_fake_cifar10}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def timed_run(args: list[str], cwd: Path) -> float:
    """Seconds for ``python train.py *args`` in ``cwd``; raises with its output if it fails."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def steps_per_run(config: dict, n_images: int) -> int:
    batch = int(config["data"]["init_args"]["batch_size"])
    return int(config["trainer"]["max_epochs"]) * math.ceil(n_images / batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--short", type=int, default=100, help="steps of the run that measures the start-up")
    parser.add_argument("--configs", nargs="*", default=list(FULL_SIZE), choices=list(FULL_SIZE))
    parser.add_argument("--fake-size", type=int, default=None, help="images in the fake sets (default: real size)")
    parser.add_argument("--skip-default", action="store_true", help="do not time `python train.py`")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    figures: dict = {"steps": args.steps, "short": args.short, "configs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if not args.skip_default:
            seconds = timed_run([], scratch)
            figures["default_train_py_seconds"] = seconds
            print(f"python train.py (configs/default.yaml): {seconds:.1f} s", flush=True)
            write_results("run_walltime", device, figures, args.out)  # after every figure: a cut run keeps them
        for name in args.configs:
            n = args.fake_size or FULL_SIZE[name]
            WRITERS[name](scratch / "data", n=n)
            config = yaml.safe_load((REPO / f"configs/images/{name}.yaml").read_text())
            common = ["fit", "--config", str(REPO / f"configs/images/{name}.yaml"), *QUIET,
                      f"--trainer.logger.init_args.name={name}_walltime"]
            short = timed_run([*common, f"--trainer.max_steps={args.short}"], scratch)
            full = timed_run([*common, f"--trainer.max_steps={args.steps}"], scratch)
            per_step = (full - short) / (args.steps - args.short)
            startup = short - args.short * per_step
            total_steps = steps_per_run(config, n)
            hours = (startup + total_steps * per_step) / 3600
            figures["configs"][name] = {"seconds": full, "seconds_short": short, "per_step_ms": 1e3 * per_step,
                                        "startup_seconds": startup, "steps_per_run": total_steps,
                                        "projected_run_hours": hours, "images": n}
            print(f"{name}: {args.steps} steps {full:.1f} s ({args.short} steps {short:.1f} s): "
                  f"{1e3 * per_step:.1f} ms/step, start-up {startup:.1f} s; whole run ({total_steps} steps) "
                  f"~{hours:.2f} h", flush=True)
            write_results("run_walltime", device, figures, args.out)


if __name__ == "__main__":
    main()
