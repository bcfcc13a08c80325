"""Each diagnostic callback's cost at its default cadence, as a fraction of training time.

A config (default ``configs/default.yaml``: digits, MLP, 720 steps) is trained once with no diagnostic
callback (the baseline) and then with the callbacks added at their default arguments (plus what the data
needs: class labels by nearest training point for ``RegimesCallback``, two pixel directions for
``FeatureLearningCallback``, which images cannot provide; it is left out for backbones without a linear first
layer, such as the U-Net). Everything else is identical: seed, data,
model, EMA. Printed per callback: ``seconds_spent`` (time inside the callback, counted by the callback)
over the baseline's fit time, and each measurement's own seconds (the first one also builds the
callback's references). Target: <= 10% each.

By default each callback gets its own run (the fit ratio then shows its whole cost); ``--together`` adds
them all to one run, which costs one fit instead of five: each callback times itself, so its share
is the same, and the fit ratio is then that of all of them at once.

    python benchmarks/callback_cost.py [--config configs/images/cifar10_unet.yaml] [--max-steps N]
                                       [--only GaussianStructureCallback ...] [--together] [--out DIR]

An image config reads full-size fake files in the real format (written to a scratch folder first; cost
does not depend on pixel values). Timings are only meaningful on an otherwise idle machine; on a GPU the
results go to ``benchmarks/results/callback_cost_<config>-<gpu>.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import callbacks
from callbacks import DiagnosticCallback
from diffuse_feat.cli import DiffuseFeatCLI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

from tests.fake_images import write_fake_cifar10, write_fake_mnist  # noqa: E402

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
FAKE_DATA = {"CIFAR10DataModule": (write_fake_cifar10, 50_000), "MNISTDataModule": (write_fake_mnist, 60_000)}


def callbacks_at_default_cadence(d: int, backbone: torch.nn.Module) -> dict[str, DiagnosticCallback]:
    chosen = {
        "SampleGridCallback": callbacks.SampleGridCallback(),
        "GaussianStructureCallback": callbacks.GaussianStructureCallback(),
        "RegimesCallback": callbacks.RegimesCallback(labeler="nearest_train"),
        "ForwardBackwardCallback": callbacks.ForwardBackwardCallback(mode="images"),
    }
    if hasattr(backbone, "first_layer_filters"):  # feature learning reads a linear first layer (MLP, PatchNet)
        chosen["FeatureLearningCallback"] = callbacks.FeatureLearningCallback(directions=torch.eye(2, d).tolist())
    return chosen


def time_each_measurement(cb: DiagnosticCallback) -> list[float]:
    """Wrap ``cb.run`` so each measurement's seconds (GPU work finished) are appended to the returned list."""
    seconds: list[float] = []
    run = cb.run

    def timed_run(trainer, pl_module):
        start = cb.seconds_spent
        out = run(trainer, pl_module)
        seconds.append(cb.seconds_spent - start)
        return out

    cb.run = timed_run
    return seconds


def fit_seconds(config: Path, extra: list[DiagnosticCallback], max_steps: int | None
                ) -> tuple[float, int, torch.nn.Module]:
    """Seconds of ``trainer.fit`` with the config's non-diagnostic callbacks plus ``extra``, the data's ``d`` and
    the backbone."""
    args = ["--config", str(config), *QUIET]
    if max_steps:
        args.append(f"--trainer.max_steps={max_steps}")
    cli = DiffuseFeatCLI(args=args, run=False)
    others = [cb for cb in cli.trainer.callbacks if not isinstance(cb, DiagnosticCallback)]
    cli.trainer.callbacks = others + extra
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    sync()
    return time.perf_counter() - start, math.prod(cli.datamodule.data_shape), cli.model.backbone


def write_fake_data(config: Path, folder: Path, size: int | None) -> None:
    import yaml

    data = yaml.safe_load(config.read_text())["data"]
    name = data["class_path"].rsplit(".", 1)[-1]
    if name in FAKE_DATA:
        writer, n = FAKE_DATA[name]
        writer(folder / data["init_args"].get("root", "data"), n=size or n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the runs (default: the config's length)")
    parser.add_argument("--only", nargs="+", default=None, help="callback class names to measure")
    parser.add_argument("--together", action="store_true", help="all callbacks in one run")
    parser.add_argument("--fake-size", type=int, default=None, help="images in a fake image set (default: real size)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    config = args.config.resolve()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{config.relative_to(REPO) if config.is_relative_to(REPO) else config}; device {device}; load average "
          f"{os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    rows: dict = {}
    shown = str(config.relative_to(REPO)) if config.is_relative_to(REPO) else config.name

    def save(baseline: float) -> None:  # after every run, so a run cut short keeps what it measured
        if device == "cuda" or args.out is not None:
            write_results(f"callback_cost_{config.stem}", device,
                          {"config": shown, "max_steps": args.max_steps, "together": args.together,
                           "baseline_fit_seconds": baseline, "callbacks": rows}, args.out)

    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the runs' folders and checkpoints are thrown away
        write_fake_data(config, Path(scratch), args.fake_size)
        baseline, d, backbone = fit_seconds(config, [], args.max_steps)
        print(f"baseline (no diagnostics): {baseline:.1f} s", flush=True)
        save(baseline)
        chosen = callbacks_at_default_cadence(d, backbone)
        if "FeatureLearningCallback" not in chosen:
            print(f"  FeatureLearningCallback: not applicable ({type(backbone).__name__} has no linear first layer)")
        if args.only:
            chosen = {name: cb for name, cb in chosen.items() if name in args.only}
        timings = {name: time_each_measurement(cb) for name, cb in chosen.items()}
        groups = [list(chosen)] if args.together else [[name] for name in chosen]
        for group in groups:
            seconds, _, _ = fit_seconds(config, [chosen[name] for name in group], args.max_steps)
            for name in group:
                cb = chosen[name]
                rows[name] = {"every_n_steps": cb.every_n_steps, "seconds_inside": cb.seconds_spent,
                              "percent_of_training": 100 * cb.seconds_spent / baseline,
                              "measurement_seconds": timings[name], "fit_ratio": seconds / baseline}
                print(f"  {name:<28} every {cb.every_n_steps:>4} steps: {cb.seconds_spent:6.2f} s inside "
                      f"= {100 * cb.seconds_spent / baseline:5.1f}% of training time; measurements "
                      f"{', '.join(f'{t:.2f}' for t in timings[name])} s; fit ratio {seconds / baseline:.3f}",
                      flush=True)
            save(baseline)


if __name__ == "__main__":
    main()
