"""A reproduction as a grid of tasks: records written atomically and read back, a rerun that runs only what is
missing, failures that stop nothing else, settings that must match, the launchers, --list and --task."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffuse_feat.errors import ConfigError
from diffuse_feat.reproduce.grid import (
    GridFailed,
    InlineExecutor,
    Task,
    execute,
    make_executor,
    read_record,
    record_path,
    run_grid,
)
from diffuse_feat.reproduce.launch import merge_experiment, run_experiment

from . import grid_toy
from .test_training import REPO


def ran(out: Path) -> dict[str, int]:
    """How many times each task ran."""
    folder = out / "ran"
    return {p.name: len(p.read_text().splitlines()) for p in folder.iterdir()} if folder.is_dir() else {}


def test_a_task_has_a_readable_id_and_its_record_lands_atomically_under_it(tmp_path):
    task = Task("tests.grid_toy", (("x", 3), ("sigma", 0.5)), 1, {"steps": 10})
    assert task.id == "tests.grid_toy/x=3/sigma=0.5/seed=1"
    assert Task("regimes", (("block", "digits"),), 0).id == "regimes/digits/seed=0"
    saved = execute(task, tmp_path)
    path = record_path(tmp_path, task)
    assert path == tmp_path / "tasks" / "tests.grid_toy" / "x=3" / "sigma=0.5" / "seed=1.json"
    assert json.loads(path.read_text()) == saved and [p.name for p in path.parent.iterdir()] == [path.name]
    assert saved["record"]["square"] == 10 and saved["settings"] == {"steps": 10}
    assert saved["wall_seconds"] >= 0 and saved["cpu_seconds"] >= 0 and saved["version"] and saved["device"] == "cpu"
    assert read_record(tmp_path, task) == saved
    with pytest.raises(ConfigError, match=r"task tests.grid_toy/x=3/sigma=0.5/seed=1 .* was run with steps=10, not 20"):
        read_record(tmp_path, Task("tests.grid_toy", task.cell, 1, {"steps": 20}))


def test_worker_processes_give_the_records_in_task_order_with_one_thread_each(tmp_path):
    executor = make_executor("processes", workers=2)
    try:
        records = run_grid(grid_toy.cells(), tmp_path, executor, log=lambda line: None)
    finally:
        executor.shutdown()
    assert [r["record"]["square"] for r in records] == [9, 1, 4]
    assert all(r["record"]["threads"] == 1 for r in records)


def test_tasks_run_here_use_one_thread_and_leave_the_callers_threads_as_they_were(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        records = run_grid(grid_toy.cells(xs=(3, 2)), tmp_path, InlineExecutor(), log=lambda line: None)
        assert [r["record"]["square"] for r in records] == [9, 4]
        assert all(r["record"]["threads"] == 1 for r in records)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_rerun_runs_only_what_is_missing_and_reads_back_the_same_records(tmp_path):
    lines = []
    first = run_grid(grid_toy.cells(), tmp_path, InlineExecutor(), log=lines.append)
    assert [line.split(" ")[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]  # one line per finished task
    assert "about" in lines[0] and "left" in lines[0] and "left" not in lines[-1]
    record_path(tmp_path, grid_toy.cells()[1]).unlink()
    lines.clear()
    again = run_grid(grid_toy.cells(), tmp_path, InlineExecutor(), log=lines.append)
    assert [r["record"] for r in again] == [r["record"] for r in first]
    assert lines[0].startswith("2 of 3 tasks already done") and len(lines) == 2
    assert ran(tmp_path) == {"tests.grid_toy_x=3_seed=0": 1, "tests.grid_toy_x=1_seed=0": 2,
                             "tests.grid_toy_x=2_seed=0": 1}


def test_a_failing_task_stops_nothing_else_and_the_rerun_runs_only_it(tmp_path):
    lines = []
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "1").touch()
    with pytest.raises(GridFailed, match=r"1 of 3 tasks failed \(tests.grid_toy/x=1/seed=0\)"):
        run_grid(grid_toy.cells(), tmp_path, InlineExecutor(), log=lines.append)
    assert "x=1 fails on purpose" in lines[-1] and "rerun the same command" in lines[-1]
    assert record_path(tmp_path, grid_toy.cells()[0]).is_file() and record_path(tmp_path, grid_toy.cells()[2]).is_file()
    assert not record_path(tmp_path, grid_toy.cells()[1]).exists()
    (tmp_path / "fail" / "1").unlink()
    records = run_grid(grid_toy.cells(), tmp_path, InlineExecutor(), log=lambda line: None)
    assert [r["record"]["square"] for r in records] == [9, 1, 4]
    assert ran(tmp_path)["tests.grid_toy_x=1_seed=0"] == 2 and ran(tmp_path)["tests.grid_toy_x=3_seed=0"] == 1


def test_list_task_and_merge_from_the_command_line_functions(tmp_path, capsys):
    def args(**kw):
        base = dict(quick=False, seed=0, out=tmp_path, list=False, task=None, launcher="inline", workers=1,
                    cluster=None, timeout_min=None, cpus_per_task=None, gpus_per_task=None, mem_gb=None,
                    partition=None, array_parallelism=None, executor_config=None)
        return argparse.Namespace(**{**base, **kw})

    assert run_experiment("tests.grid_toy", args(list=True)) is None
    assert capsys.readouterr().out.split() == [t.id for t in grid_toy.cells()]
    saved = run_experiment("tests.grid_toy", args(task="tests.grid_toy/x=1/seed=0"))
    assert saved["record"]["square"] == 1 and ran(tmp_path) == {"tests.grid_toy_x=1_seed=0": 1}
    with pytest.raises(ConfigError, match="--list prints its task ids"):
        run_experiment("tests.grid_toy", args(task="tests.grid_toy/x=7/seed=0"))
    with pytest.raises(ConfigError, match=r"2 of 3 tasks of tests.grid_toy have no record"):
        merge_experiment("tests.grid_toy", tmp_path)
    merged = run_experiment("tests.grid_toy", args())
    assert merged["squares"] == [9, 1, 4] and merged["workers"] == 1
    assert merge_experiment("tests.grid_toy", tmp_path)["squares"] == [9, 1, 4]


DRIVER = """\
import sys
from diffuse_feat.reproduce.grid import make_executor, run_grid
from tests import grid_toy

executor = make_executor("processes", workers=2)
records = run_grid(grid_toy.cells(xs=range(6), sleep=float(sys.argv[2])), sys.argv[1], executor)
executor.shutdown()
print([r["record"]["square"] for r in records])
"""


def test_a_grid_killed_mid_way_finishes_on_rerun_with_what_an_uninterrupted_run_gives(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(killed), "1.0"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    records = killed / "tasks" / "tests.grid_toy"
    deadline = time.monotonic() + 120
    while len(list(records.rglob("seed=0.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, mid-grid
    driver.wait()
    done_before = {p.parent.name for p in records.rglob("seed=0.json")}
    assert 2 <= len(done_before) < 6
    assert not list(records.rglob("*.tmp"))  # nothing half written under a record's name
    rerun = subprocess.run([sys.executable, "-c", DRIVER, str(killed), "1.0"], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True)
    full = subprocess.run([sys.executable, "-c", DRIVER, str(whole), "1.0"], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)
    assert rerun.stdout == full.stdout == "[0, 1, 4, 9, 16, 25]\n"
    assert f"{len(done_before)} of 6 tasks already done" in rerun.stderr
    counts = ran(killed)
    assert all(counts[f"tests.grid_toy_{name}_seed=0"] == 1 for name in done_before)  # not run again


def test_a_preempted_slurm_job_is_requeued_with_its_task_and_lightning_does_not_requeue_it_too(monkeypatch):
    submitit = pytest.importorskip("submitit")
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from diffuse_feat.reproduce.common import make_trainer
    from diffuse_feat.reproduce.grid import Requeueable

    task = grid_toy.cells()[0]
    again = Requeueable().checkpoint(task, "out", 60.0)
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.args == (task, "out", 60.0)
    assert isinstance(again.function, Requeueable)
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "grid", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "vm"}.items():
        monkeypatch.setenv(key, value)
    trainer = make_trainer(max_steps=1, accelerator="cpu", devices=1)
    environment = trainer._accelerator_connector.cluster_environment  # Lightning keeps it only there
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False


def test_the_submitit_launcher_without_submitit_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    with pytest.raises(ConfigError, match="--launcher submitit needs the submitit package; install it with pip"):
        make_executor("submitit")
