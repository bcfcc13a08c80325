"""A run folder (``runs/<name>/version_N``) belongs to one training process at a time, and a resume continues in it.

* :func:`read_checkpoint`: a ``--ckpt_path`` that is missing, empty or damaged stops with one sentence.
* :func:`run_folder_of`: the run folder a checkpoint belongs to (``<run>/checkpoints/<file>.ckpt``).
* :func:`continue_in_run_folder`: a resume logs into that folder itself, wherever it now lies and whatever logger
  arguments were given, so it keeps updating the run's own ``last.ckpt``.
* :func:`changed_settings`: the model, data and seed settings of a resume that differ from the run's ``config.yaml``
  (a resume continues the run as it was: it refuses them rather than silently ignoring some).
* :class:`RunLock`: an advisory ``flock`` on ``<run>/.train.lock``; the kernel drops it when its process exits or is
  killed, so a crashed run never leaves it stuck.
* :class:`RunFolderGuard`: the callback the CLI gives every ``fit``: takes the lock before anything is written,
  drops the records an interrupted run wrote after the checkpoint it resumes from, releases the lock at the end,
  and removes the folder of a start that failed before its first step (it would show up as an empty run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .errors import CheckpointError, RunFolderBusyError
from .reporting import JSONL_NAME

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against a second process
    fcntl = None

__all__ = ["read_checkpoint", "flatten_config", "run_folder_of",
           "continue_in_run_folder", "changed_settings", "RunLock",
           "RunFolderGuard", "LIGHTNING_CKPT_ALIASES", "LOCK_NAME", "RESUME_COMPARED"]

LOCK_NAME = ".train.lock"
#: ``--ckpt_path`` values Lightning resolves itself (not files)
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc")
#: the parts of a config that a resume must not change (trainer settings such as ``max_epochs`` may change)
RESUME_COMPARED = ("model", "data", "seed_everything")


def _where_to_look(path: Path) -> str:
    folder = path.parent if path.parent.is_dir() else None
    others = sorted(p.name for p in folder.glob("*.ckpt") if p != path) if folder else []
    if others:
        return f"resume from another checkpoint of {folder} ({', '.join(others[:3])})"
    return "resume from another checkpoint, or start the run again without --ckpt_path"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` (memory-mapped), or :class:`CheckpointError` saying what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        hint = "give the path of a .ckpt file, e.g. runs/default/version_0/checkpoints/last.ckpt"
        raise CheckpointError(f"--ckpt_path: there is no file '{path}'; {hint}.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"--ckpt_path: '{path}' is empty (0 bytes), so the process writing it was probably "
                              f"stopped; {_where_to_look(path)}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # truncated zip, not a checkpoint at all, unpickling failure: one sentence for all
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"--ckpt_path: '{path}' is not a readable checkpoint (truncated or damaged: "
                              f"{reason}); {_where_to_look(path)}.") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"--ckpt_path: '{path}' is not a Lightning checkpoint (no state_dict); give a .ckpt "
                              "file written by train.py.")
    return checkpoint


def run_folder_of(ckpt_path: str | os.PathLike) -> Path | None:
    """``<run>`` for a checkpoint at ``<run>/checkpoints/<file>.ckpt`` (where train.py writes them), else None."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def continue_in_run_folder(logger: Mapping | None, run_dir: Path, step: int) -> bool:
    """Point a TensorBoard logger config (``class_path``/``init_args``) at ``run_dir`` itself, and have TensorBoard
    discard the points the interrupted run logged after ``step``. Returns whether the logger was redirected."""
    if not hasattr(logger, "get"):  # a config Namespace or dict; an already built logger is left alone
        return False
    class_path = str(logger.get("class_path", ""))
    if not class_path.endswith(("TensorBoardLogger", "RunLogger")):
        return False
    init = logger["init_args"]
    save_dir = run_dir.parent.parent
    with contextlib.suppress(ValueError):  # as the run wrote it (runs/...): ModelCheckpoint then reloads its state
        save_dir = save_dir.relative_to(Path.cwd().resolve())
    numbered = re.fullmatch(r"version_(\d+)", run_dir.name)  # the number, as a new run has it (v_num=0, not "on_0")
    init["save_dir"], init["name"] = str(save_dir), run_dir.parent.name
    init["version"] = int(numbered.group(1)) if numbered else run_dir.name
    if class_path.endswith("RunLogger"):  # events after the checkpoint's step are dropped when TensorBoard reads them
        init["purge_step"] = step + 1
    return True


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.c": value}`` (lists are values)."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def changed_settings(saved: Mapping, current: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, run's value, new value)`` for every setting under :data:`RESUME_COMPARED` that both configs hold and
    that differs (a key only one of them has, e.g. an argument added to a class since, is not a change)."""
    old = flatten_config({k: saved.get(k) for k in RESUME_COMPARED})
    new = flatten_config({k: current.get(k) for k in RESUME_COMPARED})
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys()) if old[key] != new[key]]


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.train.lock`` (released when the process exits)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.path.parent} is in use by {holder}, which is still training in it; wait for it to finish or "
                "stop it before resuming this run (one process per run folder)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {os.uname().nodename}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def drop_records_after(run_dir: Path, step: int) -> None:
    """Keep the ``diagnostics.jsonl`` records up to ``step``: those after it were written by the interrupted run
    after its checkpoint, and the resumed run writes them again."""
    jsonl = run_dir / JSONL_NAME
    if jsonl.exists():
        keep = [line for line in jsonl.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        jsonl.write_text("".join(line + "\n" for line in keep))


class RunFolderGuard(Callback):
    """One process per run folder, records that continue where the checkpoint left them, no empty runs left behind.

    :meth:`claim` runs when the Trainer has been built (before anything is written); the lock is released in
    ``teardown`` (after ``fit``) or by :meth:`after_failure`.
    """

    def __init__(self, resume_step: int | None = None):
        super().__init__()
        self.resume_step = resume_step
        self.run_dir: Path | None = None
        self.lock: RunLock | None = None
        self.created = False

    def claim(self, trainer) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or rank_zero_only.rank != 0:  # one writer: global rank zero
            return
        run_dir = Path(logger.log_dir).resolve()
        existed = run_dir.exists()
        self.lock = RunLock(run_dir).acquire()  # raises before this process writes anything there
        self.run_dir, self.created = run_dir, not existed
        if self.resume_step is not None:
            drop_records_after(run_dir, self.resume_step)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.release()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.after_failure(trainer)  # Lightning does not call teardown when fit raises

    def after_failure(self, trainer) -> None:
        """The run stopped with an exception: remove its folder if this process created it and never trained a
        step nor wrote a checkpoint (a failed start), then release the lock."""
        run_dir = self.run_dir
        failed_start = trainer is None or trainer.global_step == 0
        if self.created and failed_start and run_dir is not None and run_dir.is_dir() \
                and not any(run_dir.rglob("*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        self.release()
