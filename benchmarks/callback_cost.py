"""Each diagnostic callback's cost at its default cadence, as a fraction of training time.

The default experiment (``configs/default.yaml``: digits, MLP, 720 steps) is trained once with no
diagnostic callback (the baseline) and once per callback, added with its default arguments (plus what
digits needs: class labels by nearest training point for ``RegimesCallback``, two pixel directions for
``FeatureLearningCallback``, which digits cannot provide). Everything else is identical: seed, data,
model, EMA. Printed per callback: ``seconds_spent`` (time inside the callback, counted by the callback)
over the baseline's fit time, and the ratio of fit times. Target: <= 10% each.

    python benchmarks/callback_cost.py [--max-steps N] [--only GaussianStructureCallback ...]

Timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

import callbacks
from callbacks.base import DiagnosticCallback
from diffuse_feat.cli import DiffuseFeatCLI

REPO = Path(__file__).resolve().parent.parent
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def callbacks_at_default_cadence() -> dict[str, DiagnosticCallback]:
    return {
        "SampleGridCallback": callbacks.SampleGridCallback(),
        "GaussianStructureCallback": callbacks.GaussianStructureCallback(),
        "RegimesCallback": callbacks.RegimesCallback(labeler="nearest_train"),
        "ForwardBackwardCallback": callbacks.ForwardBackwardCallback(),
        "FeatureLearningCallback": callbacks.FeatureLearningCallback(directions=torch.eye(2, 64).tolist()),
    }


def fit_seconds(extra: DiagnosticCallback | None, max_steps: int | None) -> float:
    args = ["--config", str(REPO / "configs/default.yaml"), *QUIET]
    if max_steps:
        args.append(f"--trainer.max_steps={max_steps}")
    cli = DiffuseFeatCLI(args=args, run=False)
    others = [cb for cb in cli.trainer.callbacks if not isinstance(cb, DiagnosticCallback)]
    cli.trainer.callbacks = others + ([extra] if extra is not None else [])
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="cap the runs (default: the config's 720 steps)")
    parser.add_argument("--only", nargs="+", default=None, help="callback class names to measure")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    chosen = callbacks_at_default_cadence()
    if args.only:
        chosen = {name: cb for name, cb in chosen.items() if name in args.only}
    print(f"load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the runs' folders and checkpoints are thrown away
        baseline = fit_seconds(None, args.max_steps)
        print(f"baseline (no diagnostics): {baseline:.1f} s")
        for name, cb in chosen.items():
            seconds = fit_seconds(cb, args.max_steps)
            print(f"  {name:<28} every {cb.every_n_steps:>4} steps: {cb.seconds_spent:6.2f} s inside "
                  f"= {100 * cb.seconds_spent / baseline:5.1f}% of training time; fit ratio {seconds / baseline:.3f}")


if __name__ == "__main__":
    main()
