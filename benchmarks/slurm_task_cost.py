"""What a task costs on SLURM through submitit, on a single-node cluster started here (``tests/slurm_cluster.py``):
seconds from submitting a trivial task (``tests/grid_toy.py``) to its record on disk, one task at a time, and
for a grid of ``--array`` tasks as one job array. Needs root and Debian's ``slurm-wlm`` and ``munge``.

    python benchmarks/slurm_task_cost.py [--single 10] [--array 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import write_results  # noqa: E402

from diffuse_feat.reproduce.grid import make_executor, run_grid  # noqa: E402
from tests import grid_toy  # noqa: E402
from tests.slurm_cluster import local_slurm, missing_reason  # noqa: E402


def grid_seconds(out: Path, xs) -> float:
    executor = make_executor("submitit", out=out, experiment="tests.grid_toy", cluster="slurm",
                             parameters={"timeout_min": 5})
    start = time.perf_counter()
    run_grid(grid_toy.cells(xs=xs), out, executor, log=lambda line: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=10, help="tasks submitted one at a time")
    parser.add_argument("--array", type=int, default=8, help="tasks of the job array")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    with local_slurm() as env, tempfile.TemporaryDirectory() as scratch:
        os.environ.update(env)
        os.environ["PYTHONPATH"] = str(REPO)
        os.chdir(REPO)
        grid_seconds(Path(scratch) / "warm-up", [0])  # the first job after start-up waits for a scheduling tick
        single = [grid_seconds(Path(scratch) / f"single-{k}", [k]) for k in range(args.single)]
        array = grid_seconds(Path(scratch) / "array", list(range(args.array)))
    figures = {"single_task_seconds": single, "single_task_median_seconds": statistics.median(single),
               "array_tasks": args.array, "array_seconds": array, "array_seconds_per_task": array / args.array,
               "cpus": 2}
    print(f"one task, submit to record: median {figures['single_task_median_seconds']:.2f} s; an array of "
          f"{args.array}: {array:.1f} s ({figures['array_seconds_per_task']:.2f} s a task on 2 CPUs)")
    write_results("slurm_task_cost", "cpu", figures)


if __name__ == "__main__":
    main()
