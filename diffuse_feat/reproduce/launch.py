"""From the command line to a grid: the launcher options, the grid's manifest, running and merging a reproduction.

``python -m diffuse_feat.reproduce <name> ...`` builds the reproduction's tasks (``module.tasks``), writes their
manifest (``<out>/tasks/<name>/grid.json``: every task and what the merge needs), runs the missing ones on the
chosen launcher (:mod:`.grid`) and merges the records (``module.merge``); ``merge <name> --out DIR`` merges a
grid's records again without running anything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .grid import (
    LAUNCHERS,
    InlineExecutor,
    Task,
    experiment_module,
    make_executor,
    read_record,
    run_grid,
    task_named,
)
from .seeded_tasks import check_workers
from .task_training import DEFAULT_EVERY_S

__all__ = ["add_launcher_arguments", "run_experiment", "merge_experiment", "manifest_path", "submitit_parameters"]


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the tasks run (one task per grid cell; a rerun runs only the missing)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="processes",
                       help="inline: here, in order; processes: --workers local processes of one thread each "
                            "(default); submitit: a SLURM job array (or submitit's local/debug cluster)")
    group.add_argument("--list", action="store_true", help="print the task ids and stop")
    group.add_argument("--task", metavar="ID", help="run this one task here (ids: --list), then stop")
    group.add_argument("--checkpoint-minutes", type=float, default=DEFAULT_EVERY_S / 60, metavar="M",
                       help="a task's trainings checkpoint every M minutes, so a requeued job or a rerun after a kill "
                            "continues them; 0: never (default: %(default)g)")
    group.add_argument("--cluster", default=None, help="submitit: slurm, local or debug (default: slurm when sbatch "
                       "is on PATH, else local)")
    group.add_argument("--partition", help="submitit on SLURM: the partition")
    group.add_argument("--timeout-min", type=int, help="submitit: minutes a task may run")
    group.add_argument("--cpus-per-task", type=int, help="submitit: CPUs per task")
    group.add_argument("--gpus-per-task", type=int, help="submitit: GPUs per task")
    group.add_argument("--mem-gb", type=float, help="submitit: memory per task")
    group.add_argument("--array-parallelism", type=int, help="submitit on SLURM: tasks of the job array at once")
    group.add_argument("--executor-config", type=Path, metavar="YAML",
                       help="submitit: more update_parameters (e.g. slurm_account: x), a YAML mapping")


def submitit_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit's ``update_parameters`` from the command line (its generic names) and ``--executor-config``."""
    named = {"timeout_min": args.timeout_min, "cpus_per_task": args.cpus_per_task,
             "gpus_per_node": args.gpus_per_task, "mem_gb": args.mem_gb, "slurm_partition": args.partition,
             "slurm_array_parallelism": args.array_parallelism}
    parameters = {key: value for key, value in named.items() if value is not None}
    if args.executor_config is not None:
        if not args.executor_config.is_file():
            raise ConfigError(f"--executor-config {args.executor_config}: no such file; give a YAML mapping of "
                              "submitit parameters")
        extra = yaml.safe_load(args.executor_config.read_text()) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"--executor-config {args.executor_config} is not a YAML mapping; write it as "
                              "name: value lines")
        parameters.update(extra)
    return parameters


def checkpoint_seconds(minutes: float) -> float:
    """``--checkpoint-minutes`` in seconds, refused in one sentence when negative or not a number."""
    if not minutes >= 0 or minutes == float("inf"):
        raise ConfigError(f"--checkpoint-minutes {minutes:g}: give a number of minutes >= 0 (0: no checkpoints)")
    return minutes * 60


def manifest_path(out: Path, name: str) -> Path:
    return Path(out) / "tasks" / name / "grid.json"


def _write_manifest(out: Path, name: str, grid: list[Task], info: dict[str, Any]) -> None:
    from ..reporting import to_jsonable

    path = manifest_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [{"id": t.id, "cell": t.cell, "seed": t.seed, "settings": t.settings} for t in grid]
    path.write_text(json.dumps(to_jsonable({"experiment": name, "info": info, "tasks": tasks}), indent=1))


def _read_manifest(out: Path, name: str) -> tuple[list[Task], dict[str, Any]]:
    path = manifest_path(out, name)
    if not path.is_file():
        raise ConfigError(f"{path}: no grid of {name} was started in {out}; run python -m diffuse_feat.reproduce "
                          f"{name} --out {out} first")
    saved = json.loads(path.read_text())
    grid = [Task(name, tuple(tuple(c) for c in t["cell"]), t["seed"], t["settings"]) for t in saved["tasks"]]
    return grid, saved["info"]


def _workers(launcher: str, workers: int, grid: list[Task]) -> int | None:
    """Worker processes of a launcher: ``workers`` for ``processes`` (one if the tasks use a GPU: one GPU, one
    process), one for ``inline``, None for ``submitit`` (its cluster decides)."""
    on_gpu = any(str(task.settings.get("device", "cpu")).startswith("cuda") for task in grid)
    return {"inline": 1, "processes": 1 if on_gpu else workers}.get(launcher)


def run_experiment(name: str, args: argparse.Namespace) -> dict | None:
    """The reproduction ``name`` as the command line asks: list its tasks, run one, or run the grid and merge."""
    module = experiment_module(name, getattr(args, "data", None))
    workers = check_workers(getattr(args, "workers", 1))
    grid, info = module.tasks(args.quick, args.seed, args)
    info = {**info, "workers": _workers(args.launcher, workers, grid)}
    if args.list:
        print("\n".join(task.id for task in grid))
        return None
    for task in grid:  # a record made with other settings stops here, before the manifest is replaced
        read_record(args.out, task)
    _write_manifest(args.out, name, grid, info)
    every_s = checkpoint_seconds(getattr(args, "checkpoint_minutes", DEFAULT_EVERY_S / 60))
    if args.task:
        return run_grid([task_named(grid, args.task)], args.out, InlineExecutor(), checkpoint_every_s=every_s)[0]
    executor = make_executor(args.launcher, workers=info["workers"] or 1, out=args.out, experiment=name,
                             cluster=args.cluster, parameters=submitit_parameters(args))
    start = time.perf_counter()
    try:
        records = run_grid(grid, args.out, executor, checkpoint_every_s=every_s)
    finally:
        if hasattr(executor, "shutdown"):  # local processes: drop what has not started (Ctrl-C), keep what finished
            executor.shutdown(wait=True, cancel_futures=True)
    return module.merge(grid, records, {**info, "wall_seconds": time.perf_counter() - start}, args.out)


def merge_experiment(name: str, out: Path) -> dict:
    """Merge the records of the grid started in ``out`` (every task must have one)."""
    grid, info = _read_manifest(out, name)
    records = [read_record(out, task) for task in grid]
    missing = [task.id for task, saved in zip(grid, records, strict=True) if saved is None]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(grid)} tasks of {name} have no record in "
                          f"{Path(out) / 'tasks' / name} (first: {missing[0]}); rerun python -m diffuse_feat.reproduce "
                          f"{name} with the same options to run them")
    return experiment_module(name, info.get("data")).merge(grid, records, info, out)
