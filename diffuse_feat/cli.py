"""The ``python train.py`` entry point: LightningCLI with subclass mode for model and data.

* ``python train.py`` (no arguments) = ``fit --config configs/default.yaml``.
* Data-derived sizes (``data.data_shape``, ``data.num_classes``) are linked into the model at
  instantiation, never typed twice.
* Defaults: TensorBoard logger under ``runs/<name>/version_N``, ``last.ckpt`` kept, config saved in
  the run folder, ``bf16-mixed`` on a GPU and ``32-true`` on CPU unless ``trainer.precision`` is set.
* A :class:`~diffuse_feat.errors.UserError` (bad config value, missing dataset, NaN loss, ...) is
  printed as one sentence and exits with status 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from .errors import UserError
from .lightning_private import instantiate_cli_trainer
from .modules.base import BackboneModule
from .reporting import JSONL_NAME

__all__ = ["DiffuseFeatCLI", "main", "DEFAULT_CONFIG", "auto_precision"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


def auto_precision(accelerator: str | None) -> str:
    """``bf16-mixed`` when training will run on a CUDA GPU that supports it, else full fp32."""
    on_gpu = torch.cuda.is_available() and str(accelerator or "auto") in ("auto", "gpu", "cuda")
    if on_gpu and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class DiffuseFeatCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(BackboneModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "trainer.logger": lazy_instance(
                TensorBoardLogger, save_dir="runs", name="default", default_hp_metric=False
            ),
        })

    def instantiate_trainer(self, **kwargs):
        # The `checkpoint` group always builds a ModelCheckpoint; drop it when the user turned checkpointing off.
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        checkpointing = {**config.get("trainer", {}), **kwargs}.get("enable_checkpointing") is not False
        return instantiate_cli_trainer(self, lambda cb: checkpointing or not isinstance(cb, ModelCheckpoint), **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("precision") is None:
            config.trainer.precision = auto_precision(config.trainer.get("accelerator"))
        if self.subcommand == "fit" and config.get("ckpt_path"):
            continue_in_run_folder(config)


def continue_in_run_folder(config) -> None:
    """Resuming from ``<save_dir>/<name>/version_N/checkpoints/x.ckpt`` logs into that same ``version_N``
    (TensorBoard curves and ``diagnostics.jsonl`` continue) instead of opening ``version_N+1``.
    Records written after the checkpoint's step by the interrupted run are dropped, so none is doubled."""
    ckpt = Path(config.ckpt_path)
    logger = config.trainer.get("logger")
    if not ckpt.is_file() or not isinstance(logger, Namespace | dict):
        return
    init = logger.get("init_args") or {}
    if logger.get("class_path", "").rsplit(".", 1)[-1] != "TensorBoardLogger" or init.get("version") is not None:
        return
    run_dir = ckpt.resolve().parent.parent
    logger_root = (Path(init.get("save_dir", ".")) / init.get("name", "")).resolve()
    if ckpt.parent.name != "checkpoints" or run_dir.parent != logger_root:
        return
    init["version"] = run_dir.name
    jsonl = run_dir / JSONL_NAME
    if jsonl.exists():
        step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0)
        keep = [line for line in jsonl.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        jsonl.write_text("".join(line + "\n" for line in keep))


def main(args: list[str] | None = None) -> None:
    if args is None:
        args = sys.argv[1:]
        if not args:
            args = ["fit", "--config", str(DEFAULT_CONFIG)]
    try:
        DiffuseFeatCLI(args=args)
    except UserError as err:
        if os.environ.get("DIFFUSE_FEAT_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
