"""A tiny experiment for the grid tests, importable by ``Task("tests.grid_toy", ...)`` in any process: each cell
squares its ``x``, says how many torch threads it ran with, notes that it ran (``out/ran/<id>``), waits while a file
``out/hold/<x>`` exists and fails while a file ``out/fail/<x>`` exists."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from diffuse_feat.reproduce.grid import Task


def cells(xs=(3, 1, 2), seeds=(0,), **settings) -> list[Task]:
    return [Task("tests.grid_toy", (("x", x),), s, dict(settings)) for x in xs for s in seeds]


def tasks(quick, seed, args) -> tuple[list[Task], dict]:
    """The reproduction interface (``diffuse_feat.reproduce``): the three cells, and what the merge needs."""
    return cells(seeds=(seed,)), {"quick": quick}


def run_task(task: Task, out: Path) -> dict:
    ran = Path(out) / "ran" / task.id.replace("/", "_")
    ran.parent.mkdir(parents=True, exist_ok=True)
    with open(ran, "a") as f:
        f.write("ran\n")
    time.sleep(task.settings.get("sleep", 0.0))
    while (Path(out) / "hold" / str(task["x"])).exists():  # a cell waits while this file is there
        time.sleep(0.1)
    if (Path(out) / "fail" / str(task["x"])).exists():  # a cell fails while this file is there
        raise ValueError(f"x={task['x']} fails on purpose")
    return {"square": task["x"] ** 2 + task.seed, "threads": torch.get_num_threads()}


def merge(grid, records, info, out) -> dict:
    return {"squares": [saved["record"]["square"] for saved in records], **info}
