"""What every reproduction shares: a quiet Trainer, JSON output, timing."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ..checkpoint_io import AtomicCheckpointIO
from ..cli import auto_precision
from ..reporting import to_jsonable
from .task_training import resume_path, task_checkpoint

__all__ = ["make_trainer", "fit", "fit_quietly", "write_json", "write_results", "pick_device", "quiet"]


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available (or when asked), else ``cpu``."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def quiet(threads: int | None = None, ignore: Sequence[str] = ()):
    """Lightning's per-fit banners and known harmless warnings off while a reproduction trains its models
    (plus the ``ignore`` message patterns). ``threads`` sets torch's intra-op CPU threads meanwhile, unless
    ``OMP_NUM_THREADS`` says otherwise: the reproductions' models are tiny, and on a shared CPU a second thread
    mostly waits for a core (measured 3.3 s vs 0.18 s per step at load 12, before waiting threads slept:
    :mod:`diffuse_feat.threads`)."""
    logger = logging.getLogger("lightning.pytorch")
    level, previous_threads = logger.level, torch.get_num_threads()
    logger.setLevel(logging.ERROR)
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:  # the user's explicit choice wins
        torch.set_num_threads(max(1, threads))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            for pattern in (".*does not have many workers.*", ".*num_workers.*", ".*LeafSpec.*", *ignore):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        logger.setLevel(level)
        torch.set_num_threads(previous_threads)


def make_trainer(
    *,
    max_steps: int = -1,
    max_epochs: int | None = None,
    callbacks: list | None = None,
    log_dir: str | os.PathLike | None = None,
    name: str = "run",
    check_val_every_n_epoch: int | None = 1,
    **kwargs: Any,
) -> pl.Trainer:
    """A Trainer for scripted runs: no progress bar or summary, automatic precision, TensorBoard only if
    ``log_dir`` is given (then the run's ``diagnostics.jsonl`` lands in ``log_dir/name/version_N``). Inside a SLURM
    job, Lightning's own requeue on SIGUSR1 is off: a grid's job is requeued by submitit (:mod:`.grid`), and two
    requeues of one job would fight. Inside a grid task the trainer also checkpoints as it goes, and :func:`fit`
    resumes it when the task runs again (:mod:`.task_training`)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    plugins = list(kwargs.pop("plugins", None) or [])
    if SLURMEnvironment.detect() and not any(isinstance(p, SLURMEnvironment) for p in plugins):
        plugins.append(SLURMEnvironment(auto_requeue=False))
    checkpoint = task_checkpoint()
    if checkpoint is not None:
        callbacks = [*(callbacks or []), checkpoint]
        plugins.append(AtomicCheckpointIO())  # a kill mid-write leaves the previous checkpoint whole
    if plugins:
        kwargs["plugins"] = plugins
    logger = False
    if log_dir is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(log_dir), name=name, default_hp_metric=False)
    kwargs.setdefault("precision", auto_precision(kwargs.get("accelerator")))
    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=max_epochs,
        callbacks=callbacks or [],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        check_val_every_n_epoch=check_val_every_n_epoch,
        **kwargs,
    )


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
    """``trainer.fit``, continued from the training's own checkpoint when a grid task runs again after a kill or a
    requeue (:mod:`.task_training`); a fresh start everywhere else. The checkpoint is the task's own (its
    hyperparameters are Python objects, so it is unpickled in full)."""
    resume = resume_path(trainer)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=False if resume else None)


def fit_quietly(module: pl.LightningModule, datamodule: pl.LightningDataModule, steps: int, device: torch.device,
                **trainer_kwargs: Any) -> pl.LightningModule:
    """Train ``module`` for ``steps`` optimizer steps on one ``device`` without validation or console noise;
    returns it on ``device`` in eval mode."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with quiet():
        trainer = make_trainer(max_steps=steps, limit_val_batches=0, accelerator=accelerator, devices=1,
                               **trainer_kwargs)
        fit(trainer, module, datamodule)
    return module.to(device).eval()


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Strict JSON (NaN/inf become null; tensors become lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=1, allow_nan=False))
    return path


def write_results(out: Path, name: str, payload: dict, plot: Callable[[dict, Path], None]) -> dict:
    """The end of every reproduction: ``out/<name>.json`` (strict JSON), then ``plot(payload, out/<name>.png)``
    drawn from the JSON-ready payload (lists, not tensors), which is returned."""
    write_json(out / f"{name}.json", payload)
    payload = to_jsonable(payload)
    plot(payload, out / f"{name}.png")
    return payload
