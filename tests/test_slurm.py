"""Grids on a real (single-node, local) SLURM cluster through submitit: one job array, the same records as a run in
this process, and a cancelled job that the rerun completes. Skipped, with the reason, where SLURM is not installed."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from diffuse_feat.reproduce.grid import GridFailed, InlineExecutor, make_executor, run_grid

from . import grid_toy
from .slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)
from .test_grid import ran
from .test_training import REPO


@pytest.fixture
def on_cluster(slurm_cluster, monkeypatch):  # noqa: F811
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs import tests.grid_toy
    monkeypatch.chdir(REPO)
    return slurm_cluster


def slurm_executor(out):
    return make_executor("submitit", out=out, experiment="tests.grid_toy", cluster="slurm",
                         parameters={"timeout_min": 5, "slurm_array_parallelism": 2})


def test_a_grid_is_one_job_array_whose_records_are_those_of_a_run_here(on_cluster, tmp_path):
    here = run_grid(grid_toy.cells(), tmp_path / "here", InlineExecutor(), log=lambda line: None)
    lines = []
    there = run_grid(grid_toy.cells(), tmp_path / "slurm", slurm_executor(tmp_path / "slurm"), log=lines.append)
    assert [r["record"] for r in there] == [r["record"] for r in here]
    assert [line.split(" ")[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    logs = sorted((tmp_path / "slurm" / "tasks" / "tests.grid_toy" / "logs").rglob("*_log.out"))
    assert len(logs) == 3 and len({log.name.split("_")[0] for log in logs}) == 1  # array N_0, N_1, N_2


def test_a_cancelled_job_is_listed_and_the_rerun_completes_only_it(on_cluster, tmp_path):
    (tmp_path / "hold").mkdir()
    (tmp_path / "hold" / "1").touch()  # x=1 (array index 1) waits until it is cancelled

    def cancel_x1():
        marker = tmp_path / "ran" / "tests.grid_toy_x=1_seed=0"
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        subprocess.run(["scancel", *[job for job in queued if job.endswith("_1")]], check=True)

    canceller = threading.Thread(target=cancel_x1)
    canceller.start()
    lines = []
    with pytest.raises(GridFailed, match=r"1 of 3 tasks failed \(tests.grid_toy/x=1/seed=0\)"):
        run_grid(grid_toy.cells(), tmp_path, slurm_executor(tmp_path), log=lines.append)
    canceller.join()
    assert "log: " in lines[-1] and lines[-1].endswith("_1_0_log.err)")  # array element 1: where to look
    (tmp_path / "hold" / "1").unlink()
    records = run_grid(grid_toy.cells(), tmp_path, slurm_executor(tmp_path), log=lines.append)
    assert [r["record"]["square"] for r in records] == [9, 1, 4]
    counts = ran(tmp_path)
    assert counts["tests.grid_toy_x=1_seed=0"] == 2 and counts["tests.grid_toy_x=3_seed=0"] == 1
