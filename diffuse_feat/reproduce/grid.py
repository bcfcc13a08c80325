"""A reproduction as a grid of tasks, run by an engine that already exists, resumable cell by cell.

A reproduction declares its grid as a list of :class:`Task` (the experiment, the cell's coordinates, a seed, and
every setting the cell runs with) and one module-level function ``run_task(task, out) -> record`` (plain JSON
values). :func:`execute` runs one task wherever it lands (this process, a worker process, a SLURM job) and writes
its record atomically (a temporary file in the same folder, fsync, rename) to ``<out>/tasks/<experiment>/<cell>.json``
with the settings, their hash, CPU and wall seconds, the device and the package version; meanwhile the task's
trainings checkpoint, and a task run again (a requeued SLURM job, a rerun after a kill) continues them exactly
(:mod:`.task_training`). :func:`run_grid` submits
the tasks that have no record yet to an executor (anything with ``submit(fn, *args)`` returning an object with
``done()`` and ``result()``: a ``concurrent.futures`` executor, or submitit's), prints a line per finished task,
and lists the failures at the end; the reproduction's ``merge`` turns the records into its JSON, PNG and table.

Launchers (:func:`make_executor`): ``inline`` (this process, in order: debuggers work), ``processes`` (local worker
processes of one CPU thread each, the default) and ``submitit`` (a SLURM job array, or submitit's local/debug
clusters).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .. import __version__
from ..errors import ConfigError, UserError
from ..reporting import to_jsonable
from .task_training import DEFAULT_EVERY_S, checkpointed_trainings, discard

__all__ = ["Task", "experiment_module", "execute", "run_grid", "record_path", "read_record", "make_executor",
           "InlineExecutor", "GridFailed", "LAUNCHERS"]

LAUNCHERS = ("inline", "processes", "submitit")


@dataclass(frozen=True)
class Task:
    """One cell of a reproduction's grid.

    Attributes:
        experiment: the reproduction (``diffuse_feat.reproduce.<experiment>`` runs it), or the dotted path of a
            module of your own with the same ``run_task``.
        cell: the cell's coordinates in order, e.g. ``(("n", 32),)``; a ``block`` coordinate is named by its value
            alone in the id.
        seed: the seed of this cell.
        settings: everything else the cell runs with (plain JSON values); a record made with other settings is
            refused on resume.
    """

    experiment: str
    cell: tuple[tuple[str, Any], ...]
    seed: int
    settings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        """A stable, readable id: ``gaussian_structure/n=32/seed=1``, ``regimes/digits/seed=0``."""
        parts = [str(v) if k == "block" else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in self.cell]
        return "/".join([self.experiment, *parts, f"seed={self.seed}"])

    def __getitem__(self, key: str) -> Any:
        """A coordinate of the cell, else a setting."""
        cell = dict(self.cell)
        return cell[key] if key in cell else self.settings[key]

    @property
    def settings_hash(self) -> str:
        text = json.dumps(to_jsonable({"cell": self.cell, "seed": self.seed, "settings": self.settings}),
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_module(name: str, data: str | None = None) -> ModuleType:
    """``diffuse_feat.reproduce.<name>``, or the module a dotted ``name`` names. A run on other data (``--data mnist``:
    ``data`` in its tasks' settings, its merge info and its JSON) is the module ``<name>_<data>``, which builds on
    ``<name>``; ``<name>`` itself never imports it."""
    if data not in (None, "default"):
        name = f"{name}_{data}"
    return importlib.import_module(name if "." in name else f"diffuse_feat.reproduce.{name}")


def record_path(out: str | os.PathLike, task: Task) -> Path:
    """``<out>/tasks/<experiment>/<cell>/seed=<seed>.json``: the id as a path under ``tasks/``."""
    return Path(out) / "tasks" / f"{task.id}.json"


def _write_atomically(path: Path, payload: dict) -> None:
    """The file appears complete or not at all: written beside its final name, flushed to disk, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as f:
        f.write(json.dumps(payload, indent=1, allow_nan=False))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def read_record(out: str | os.PathLike, task: Task) -> dict | None:
    """The task's record, None when it has none; a record made with other settings stops with one sentence."""
    path = record_path(out, task)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("settings_hash") != task.settings_hash:
        now, then = to_jsonable(task.settings), saved.get("settings", {})
        changed = next((k for k in sorted(set(now) | set(then)) if now.get(k) != then.get(k)), "its settings")
        raise ConfigError(f"task {task.id} in {Path(out)} was run with {changed}={then.get(changed)!r}, not "
                          f"{now.get(changed)!r}; rerun with the same settings to finish that grid, or give another "
                          "--out")
    return saved


def _threads_for_a_task() -> int:
    """One CPU thread per task (the reproductions' models are tiny: a second thread mostly waits for a core),
    unless the user's ``OMP_NUM_THREADS`` says otherwise."""
    return int(os.environ.get("OMP_NUM_THREADS", 1))


def training_folder(out: str | os.PathLike, task: Task) -> Path:
    """Where the task's trainings checkpoint while it runs (:mod:`.task_training`); removed once its record is
    written."""
    return record_path(out, task).with_suffix(".training")


def execute(task: Task, out: str | os.PathLike, checkpoint_every_s: float = DEFAULT_EVERY_S) -> dict:
    """Run one task here, write its record atomically, and return it. The module-level function every launcher
    calls (a worker process, a SLURM job); the caller's thread count is restored afterwards. The task's trainings
    checkpoint every ``checkpoint_every_s`` seconds (0: never) and a task run again continues them from there; the
    record's ``resumed`` lists the trainings that did so and from which step."""
    module = experiment_module(task.experiment, task.settings.get("data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads_for_a_task())
    wall, cpu = time.perf_counter(), time.process_time()
    folder = training_folder(out, task)
    try:
        with checkpointed_trainings(folder, checkpoint_every_s) as trainings:
            record = to_jsonable(module.run_task(task, Path(out)))
    finally:
        torch.set_num_threads(threads)
    saved = {"task": task.id, "cell": [list(c) for c in task.cell], "seed": task.seed,
             "settings": to_jsonable(task.settings), "settings_hash": task.settings_hash,
             "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall,
             "device": _device_name(task), "host": socket.gethostname(), "version": __version__,
             "resumed": trainings.resumed, "record": record}
    _write_atomically(record_path(out, task), saved)
    discard(folder)
    return saved


def _device_name(task: Task) -> str:
    device = task.settings.get("device", "cpu")
    return torch.cuda.get_device_name(0) if str(device).startswith("cuda") and torch.cuda.is_available() else "cpu"


class Requeueable:
    """:func:`execute` as submitit's checkpointable callable: a job that SLURM preempts or times out is requeued with
    the same task, whose trainings continue from their latest checkpoint (its record is only written when it
    finishes, so nothing half done counts)."""

    def __call__(self, task: Task, out: str | os.PathLike, checkpoint_every_s: float = DEFAULT_EVERY_S) -> dict:
        return execute(task, out, checkpoint_every_s)

    def checkpoint(self, task: Task, out: str | os.PathLike, checkpoint_every_s: float = DEFAULT_EVERY_S):
        import submitit

        return submitit.helpers.DelayedSubmission(self, task, out, checkpoint_every_s)


class _Deferred:
    """A task that runs here when it is first asked whether it is done (so the grid's progress shows each one)."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args, self.future = fn, args, Future()

    def done(self) -> bool:
        if not self.future.done():
            try:
                self.future.set_result(self.fn(*self.args))
            except Exception as err:  # a failing task must not stop the others
                self.future.set_exception(err)
        return True

    def result(self) -> Any:
        self.done()
        return self.future.result()


class InlineExecutor:
    """Runs each task in this process, one after the other, in the order they were submitted."""

    def submit(self, fn: Callable, *args: Any) -> _Deferred:
        return _Deferred(fn, args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class GridFailed(UserError):
    """Some tasks of a grid failed: they are listed, and nothing is merged."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _log_path(job: Any) -> str | None:
    paths = getattr(job, "paths", None)
    return str(paths.stderr) if paths is not None else None


def run_grid(tasks: Sequence[Task], out: str | os.PathLike, executor: Any, *,
             log: Callable[[str], None] | None = None, checkpoint_every_s: float = DEFAULT_EVERY_S) -> list[dict]:
    """The records of every task, in the order of ``tasks``: those already written are read back (and checked
    against the task's settings), the others are submitted to ``executor`` (at most all at once; a submitit
    executor gets them as one job array). One line per finished task goes to ``log`` (stderr by default). The
    tasks' trainings checkpoint every ``checkpoint_every_s`` seconds (:func:`execute`).

    Raises:
        ConfigError: a record was made with other settings.
        GridFailed: some tasks failed; every other task finished and kept its record.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    records = {task.id: read_record(out, task) for task in tasks}
    todo = [task for task in tasks if records[task.id] is None]
    if len(todo) < len(tasks):
        log(f"{len(tasks) - len(todo)} of {len(tasks)} tasks already done in {Path(out) / 'tasks'}; running "
            f"{len(todo)}")
    batch = getattr(executor, "batch", None)  # submitit: the tasks as one job array
    run = Requeueable() if callable(batch) else execute
    with batch() if callable(batch) else contextlib.nullcontext():
        jobs = [(task, executor.submit(run, task, str(out), checkpoint_every_s)) for task in todo]
    start, finished, failures = time.perf_counter(), 0, []
    pending = list(jobs)
    while pending:
        still = []
        for task, job in pending:
            if not job.done():
                still.append((task, job))
                continue
            finished += 1
            try:
                records[task.id] = job.result()
                seconds = records[task.id]["wall_seconds"]
                status = f"{seconds:.0f} s"
            except Exception as err:
                failures.append((task, err, _log_path(job)))
                status = f"FAILED ({_one_line(err)[:80]})"
            left = (time.perf_counter() - start) / finished * (len(todo) - finished)
            tail = f", about {_duration(left)} left" if finished < len(todo) else ""
            log(f"[{finished}/{len(todo)}] {task.id.replace('/', ' ')} {status}{tail}")
        pending = still
        if pending:
            time.sleep(0.05)
    if failures:
        lines = [f"  {task.id}: {_one_line(err)}" + (f" (log: {path})" if path else "")
                 for task, err, path in failures]
        log("failed tasks (rerun the same command to run them and whatever is missing):\n" + "\n".join(lines))
        raise GridFailed(f"{len(failures)} of {len(tasks)} tasks failed ({', '.join(t.id for t, _, _ in failures)}); "
                         "the others kept their records, so rerunning the same command runs only what is missing")
    return [records[task.id] for task in tasks]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{math.ceil(seconds / 60):.0f} min"


# ----- launchers -----------------------------------------------------------------------------------------------------
def make_executor(launcher: str, *, workers: int = 1, out: str | os.PathLike = ".", experiment: str = "",
                  cluster: str | None = None, parameters: dict[str, Any] | None = None) -> Any:
    """The executor of a launcher: ``inline``, ``processes`` (``workers`` spawned processes) or ``submitit``
    (``AutoExecutor`` on ``cluster``, its logs under ``<out>/tasks/<experiment>/logs``, ``parameters`` its
    ``update_parameters``)."""
    if launcher == "inline":
        return InlineExecutor()
    if launcher == "processes":
        if workers <= 1:
            return InlineExecutor()
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    if launcher == "submitit":
        try:
            import submitit
        except ImportError:
            raise ConfigError("--launcher submitit needs the submitit package; install it with "
                              "pip install -e \".[cluster]\" (or pip install submitit)") from None
        folder = Path(out) / "tasks" / experiment / "logs" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        executor.update_parameters(**(parameters or {}))
        return executor
    raise ConfigError(f"--launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}; pick one of those")


def task_named(tasks: Iterable[Task], task_id: str) -> Task:
    """The task of ``task_id``, or one sentence listing how to see the ids."""
    for task in tasks:
        if task.id == task_id:
            return task
    raise ConfigError(f"--task {task_id!r} is not a task of this grid; --list prints its task ids")
