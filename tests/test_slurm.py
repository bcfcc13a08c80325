"""Grids on a real (single-node, local) SLURM cluster through submitit: one job array, the same records as a run in
this process, and a cancelled job that the rerun completes. Skipped, with the reason, where SLURM is not installed."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from diffuse_feat.reproduce.grid import GridFailed, InlineExecutor, make_executor, run_grid, training_folder

from . import grid_toy, grid_training_toy
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


def slurm_executor(out, experiment="tests.grid_toy"):
    return make_executor("submitit", out=out, experiment=experiment, cluster="slurm",
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


def test_a_preempted_job_is_requeued_and_its_training_continues_from_its_checkpoint(on_cluster, tmp_path):
    """SLURM's warning signal (USR2, what it sends before a time limit or a preemption) reaches submitit, which
    requeues the job; the task runs again and its training continues from its last checkpoint, ending with the very
    weights of an uninterrupted run."""
    here = run_grid(grid_training_toy.cells(steps=60), tmp_path / "here", InlineExecutor(), log=lambda line: None,
                    checkpoint_every_s=0)
    out = tmp_path / "slurm"
    grid = grid_training_toy.cells(steps=60, sleep=0.15)
    checkpoint = training_folder(out, grid[0]) / "fit-0" / "last.ckpt"

    def preempt():
        deadline = time.monotonic() + 90
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        logs = (out / "tasks" / "tests.grid_training_toy" / "logs").iterdir()
        job = [folder.name for folder in logs if folder.name.isdigit()]  # logs/%j, beside submitit's own files
        sent = subprocess.run(["scancel", "--signal=USR2", *job], capture_output=True, text=True)
        signalled.append((job, sent.returncode, sent.stderr))
        # SLURM holds a requeued job back for about two minutes (measured here: 163 s); a test need not wait
        while time.monotonic() < deadline:
            state = subprocess.run(["squeue", "-h", "-o", "%T", "-j", *job], capture_output=True, text=True).stdout
            if state.strip() == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={job[0]}", "StartTime=now"], check=True)
                return
            time.sleep(0.1)

    signalled = []
    preempter = threading.Thread(target=preempt)
    preempter.start()
    there = run_grid(grid, out, slurm_executor(out, "tests.grid_training_toy"), log=lambda line: None,
                     checkpoint_every_s=0.5)
    preempter.join()
    assert len(signalled) == 1 and signalled[0][1:] == (0, ""), signalled
    assert there[0]["record"] == here[0]["record"]
    assert len(there[0]["resumed"]) == 1 and 0 < there[0]["resumed"][0]["step"] < 60
    logs = "".join(p.read_text() for p in (out / "tasks" / "tests.grid_training_toy" / "logs").rglob("*_log.out"))
    assert "Calling checkpoint method" in logs and "Requeued job" in logs and logs.count("Starting with") == 2
