"""Wall time of each ``--quick`` reproduction on the task grid (``--launcher processes``, the default) against the
same command on a checkout from before the grid (the former spawn pool), measured side by side in one run.

The two commands alternate (before, grid; before, grid; ...) so that load from other jobs falls on both alike.
Each runs in a fresh process into its own empty folder, timed from the outside. The checkout from before the grid
is made by you, e.g. ``git worktree add /tmp/before bc22f69``.

    python benchmarks/grid_launcher.py --before /tmp/before [--names feature_learning ...] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

NAMES = ("feature_learning", "gaussian_structure", "regimes", "hierarchy")


def timed(checkout: Path, name: str, out: Path) -> float:
    """Seconds of ``python -m diffuse_feat.reproduce <name> --quick`` run from ``checkout`` (its own package)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffuse_feat.reproduce", name, "--quick", "--out", str(out)], cwd=checkout,
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout from before the task grid")
    parser.add_argument("--names", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--rounds", type=int, default=1, help="before/grid pairs per reproduction")
    args = parser.parse_args()
    figures = {"rounds": args.rounds, "load_at_start": os.getloadavg()[0], "reproductions": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.names:
            walls = {"before": [], "grid": []}
            for round_ in range(args.rounds):
                for which, checkout in (("before", args.before), ("grid", REPO)):
                    walls[which].append(timed(checkout, name, Path(scratch) / f"{name}-{which}-{round_}"))
                    print(f"{name} {which}: {walls[which][-1]:.1f} s", flush=True)
            before, grid = statistics.median(walls["before"]), statistics.median(walls["grid"])
            figures["reproductions"][name] = {"before_seconds": walls["before"], "grid_seconds": walls["grid"],
                                              "ratio": grid / before}
            print(f"{name}: grid / before = {grid / before:.3f}", flush=True)
    figures["load_at_end"] = os.getloadavg()[0]
    write_results("grid_launcher", "cpu", figures)


if __name__ == "__main__":
    main()
