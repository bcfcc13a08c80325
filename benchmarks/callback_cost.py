"""Each diagnostic callback's cost at the cadence its config sets, as a fraction of training time.

For every config, the same run is trained twice in this process, alternating: once as configured and
once with its ``DiagnosticCallback``s removed (same seed, data, model and trainer otherwise). Printed
per config: the fit times, their ratio, and per callback ``seconds_spent`` (time inside the callback,
counted by the callback itself) over the training time of the run without callbacks. Target: each
callback <= 10% of training time at its default cadence.

    python benchmarks/callback_cost.py [--configs configs/default.yaml ...] [--max-steps N] [--repeats 1]

``--max-steps`` shortens the runs (the end-of-training measurement then weighs more than in a full run,
so fractions come out pessimistic). Timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from callbacks.base import DiagnosticCallback
from diffuse_feat.cli import DiffuseFeatCLI

REPO = Path(__file__).resolve().parent.parent
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def default_configs() -> list[Path]:
    """Every config with a diagnostic callback that runs offline (the image configs need dataset files)."""
    configs = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "images")
    return [p for p in configs if "callbacks." in p.read_text()]


def fit_once(config: Path, keep_diagnostics: bool, max_steps: int | None) -> tuple[float, dict[str, float]]:
    args = ["--config", str(config), *QUIET]
    if max_steps:
        args.append(f"--trainer.max_steps={max_steps}")
    cli = DiffuseFeatCLI(args=args, run=False)
    if not keep_diagnostics:
        cli.trainer.callbacks = [cb for cb in cli.trainer.callbacks if not isinstance(cb, DiagnosticCallback)]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    spent = {cb.name: cb.seconds_spent for cb in cli.trainer.callbacks if isinstance(cb, DiagnosticCallback)}
    return seconds, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="cap each run (default: the config's length)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    configs = args.configs or default_configs()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} at start; {args.repeats} repeat(s); median fit times")
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # runs/ and checkpoints of these runs are thrown away
        for config in configs:
            with_cb, without_cb, spent_runs = [], [], []
            for _ in range(args.repeats):
                seconds, spent = fit_once(config, True, args.max_steps)
                with_cb.append(seconds)
                spent_runs.append(spent)
                without_cb.append(fit_once(config, False, args.max_steps)[0])
            train = statistics.median(without_cb)
            name = config.relative_to(REPO / "configs") if config.is_relative_to(REPO / "configs") else config
            print(f"\n{name}: fit {statistics.median(with_cb):.1f} s with diagnostics, {train:.1f} s without "
                  f"(ratio {statistics.median(with_cb) / train:.3f})")
            for cb_name in spent_runs[0]:
                seconds = statistics.median(run[cb_name] for run in spent_runs)
                print(f"  {cb_name:<34} {seconds:7.2f} s = {100 * seconds / train:5.1f}% of training time")


if __name__ == "__main__":
    main()
