"""The ``python train.py`` entry point: LightningCLI with subclass mode for model and data.

* ``python train.py [ARGS]`` = ``fit --config configs/default.yaml [ARGS]``: without a subcommand the arguments go
  to ``fit``, and without ``--config`` the default experiment is the base (a resume's base is its run's own
  ``config.yaml``), so ``python train.py --model.init_args.lr=1e-3`` and ``python train.py --print_config`` work.
* Data-derived sizes (``data.data_shape``, ``data.num_classes``) are linked into the model at
  instantiation, never typed twice.
* Defaults: TensorBoard logger (:class:`~diffuse_feat.reporting.RunLogger`) under ``runs/<name>/version_N``,
  ``last.ckpt`` kept, config saved in the run folder, ``bf16-mixed`` on a GPU and ``32-true`` on CPU unless
  ``trainer.precision`` is set.
* A resume (``--ckpt_path``) continues its run exactly, in its own folder (:mod:`diffuse_feat.run_folder`).
* Every mistake a user can fix (a bad value, an unknown argument, a bad checkpoint, a missing dataset, a NaN loss...)
  is printed by :func:`main` as one sentence naming the field and the fix, and exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import lazy_instance
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from .checkpoint_io import AtomicCheckpointIO
from .errors import CheckpointError, error_chain, one_sentence_errors
from .interrupt import RunInterrupted, SaveOnInterrupt
from .lightning_private import instantiate_cli_trainer
from .modules.base import BackboneModule
from .progress_bar import RunProgressBar
from .run_folder import (
    LIGHTNING_CKPT_ALIASES,
    RunFolderGuard,
    changed_settings,
    continue_in_run_folder,
    read_checkpoint,
    run_folder_of,
)
from .run_logger import RunLogger
from .run_messages import RunAnnouncer, quiet_lightning
from .setting_names import closest_setting, setting_names

__all__ = ["DiffuseFeatCLI", "main", "DEFAULT_CONFIG", "auto_precision", "command_line"]

#: ``configs/default.yaml``: linked into the package in the source tree, copied into it by ``pip install .``
DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
TENSORBOARD_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
RUN_LOGGER = f"{RunLogger.__module__}.{RunLogger.__name__}"
SEE_SETTINGS = "`python train.py --print_config` shows every setting and its value, `python train.py fit --help` each"
HELP = (
    "Train a model. `python train.py` runs configs/default.yaml; arguments without a subcommand go to `fit` on "
    "that config, e.g. `python train.py --model.init_args.lr=1e-3 --trainer.max_epochs=5`. Common arguments: "
    "--config FILE.yaml (another experiment, e.g. configs/gaussian_structure/digits.yaml), --trainer.max_epochs N, "
    "--trainer.max_steps N, --model.init_args.lr LR, --data.init_args.n_train N, --data.init_args.batch_size N, "
    "--ckpt_path runs/<name>/version_N/checkpoints/last.ckpt (resume), --print_config (the resolved YAML). "
    "Every argument and what it means: `python train.py fit --help`; a class's own: "
    "`python train.py fit --model.help diffuse_feat.modules.DiffusionModule`."
)


def auto_precision(accelerator: str | None) -> str:
    """``bf16-mixed`` when training will run on a CUDA GPU that supports it, else full fp32."""
    on_gpu = torch.cuda.is_available() and str(accelerator or "auto") in ("auto", "gpu", "cuda")
    if on_gpu and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def command_line(args: list[str], subcommands: bool = True) -> list[str]:
    """What ``python train.py ARGS`` runs: ``fit`` when no subcommand is named, on ``configs/default.yaml`` when no
    ``--config`` is given (a resume from ``<run>/checkpoints/*.ckpt``: on the run's own ``config.yaml``), the
    user's arguments after it so they override it. ``-h``/``--help`` alone stays the overview of subcommands.
    ``subcommands=False`` (a CLI built with ``run=False``): no subcommand is added."""
    args = list(args)
    if args and args[0] in ("-h", "--help"):
        return args
    if subcommands and (not args or args[0] not in SUBCOMMANDS):
        args = ["fit", *args]
    subcommand, rest = (args[0], args[1:]) if subcommands else (None, args)
    if not any(a in ("-c", "--config") or a.startswith("--config=") for a in rest):
        base = DEFAULT_CONFIG
        ckpt = _option_value(rest, "--ckpt_path")
        run_dir = run_folder_of(ckpt) if ckpt and ckpt not in LIGHTNING_CKPT_ALIASES else None
        if run_dir is not None and (run_dir / "config.yaml").is_file():
            base = run_dir / "config.yaml"
        rest = ["--config", str(base), *rest]
    return [subcommand, *rest] if subcommand else rest


class DiffuseFeatCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs):
        args = command_line(sys.argv[1:] if args is None else args, subcommands=run)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        # exit_on_error=False: parsing mistakes raise, so main() can print them as one sentence (not ~65 lines)
        # allow_abbrev=False: `--trainer.max_epoch` (a typo) must not silently mean `--trainer.max_epochs`
        # (jsonargparse gives subcommand parsers the main parser's allow_abbrev)
        kwargs.setdefault("parser_kwargs", {"default_env": False, "exit_on_error": False, "description": HELP,
                                            "allow_abbrev": False})
        self.run_folder_guard: RunFolderGuard | None = None
        self.resume_step: int | None = None
        self.trainer: pl.Trainer | None = None
        try:
            super().__init__(BackboneModule, pl.LightningDataModule, subclass_mode_model=True,
                             subclass_mode_data=True, args=args, run=run, **kwargs)
        except BaseException:
            if self.run_folder_guard is not None:  # a failed start leaves no empty run folder behind
                self.run_folder_guard.after_failure(self.trainer)
            raise

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            # one checkpoint file per run: last.ckpt is a link to the newest epoch=...ckpt, not a 20 MB copy of it
            # (Lightning 2.6 writes last.ckpt only when it saved a top-k one, so save_top_k stays 1: more on request)
            "checkpoint.save_last": "link",
            # a resume overwrites its run's own last.ckpt instead of writing last-v1.ckpt beside a stale one
            "checkpoint.enable_version_counter": False,
            # the table of parameters is one more screen before the progress bar; --trainer.enable_model_summary=true
            "trainer.enable_model_summary": False,
            "trainer.logger": lazy_instance(RunLogger, save_dir="runs", name="default", default_hp_metric=False),
        })

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` (already completed by :func:`command_line`; no "args parameter" warning: ``main`` passes
        ``sys.argv`` on purpose), then check a checkpoint to resume from before Lightning reads it."""
        try:
            self.config = parser.parse_args(args)
        except argparse.ArgumentError as err:  # a typo: main() words it, with the closest setting there is
            err.setting_names = setting_names(parser, args)
            raise
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and str(ckpt) not in LIGHTNING_CKPT_ALIASES:
            checkpoint = read_checkpoint(ckpt)
            if subcommand == "fit":
                self.resume_step = int(checkpoint.get("global_step", 0))
                self._refuse_changed_settings(parser, Path(ckpt))

    def _refuse_changed_settings(self, parser, ckpt: Path) -> None:
        """Lightning re-reads the model's settings from the checkpoint, so a changed one would be silently ignored
        (and a changed data or seed setting would break the exact continuation): stop with one sentence instead."""
        run_dir = run_folder_of(ckpt)
        saved_path = run_dir / "config.yaml" if run_dir is not None else None
        if saved_path is None or not saved_path.is_file():
            return
        saved = yaml.safe_load(saved_path.read_text()) or {}
        current = yaml.safe_load(parser.dump(self.config, skip_validation=True))["fit"]
        changes = changed_settings(saved, current)
        if changes:
            listed = ", ".join(f"{key} is {new!r} (the run used {old!r})" for key, old, new in changes[:3])
            raise CheckpointError(
                f"--ckpt_path continues {run_dir} as it was trained, but {listed}; drop the changed argument to "
                "resume, or start a new run without --ckpt_path to train with it."
            )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("precision") is None:
            config.trainer.precision = auto_precision(config.trainer.get("accelerator"))
        use_run_logger(config.trainer)
        if self.subcommand == "fit" and self.resume_step is not None:
            run_dir = run_folder_of(config.ckpt_path)
            if run_dir is not None:
                continue_in_run_folder(config.trainer.get("logger"), run_dir, self.resume_step)

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = {**config.get("trainer", {}), **kwargs}
        # The `checkpoint` group always builds a ModelCheckpoint; drop it when the user turned checkpointing off.
        checkpointing = trainer_config.get("enable_checkpointing") is not False
        guard = RunFolderGuard(self.resume_step) if self.subcommand == "fit" else None
        extra = [guard, SaveOnInterrupt(), RunAnnouncer(self.resume_step)] if guard else []
        if trainer_config.get("enable_progress_bar") is not False and not any(
                isinstance(cb, ProgressBar) for cb in _as_list(trainer_config.get("callbacks"))):
            extra.append(RunProgressBar())  # the run's step and total, and a resumed epoch's bar
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # checkpoints written whole or not at all
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = instantiate_cli_trainer(self, lambda cb: checkpointing or not isinstance(cb, ModelCheckpoint),
                                          extra=extra, **kwargs)
        if guard is not None:
            guard.claim(trainer)  # the run folder's lock, before anything is written there
            self.run_folder_guard = guard
        self.trainer = trainer
        return trainer


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def use_run_logger(trainer_config) -> None:
    """Lightning's ``TensorBoardLogger`` in a config becomes :class:`RunLogger` (the same logger, with curves over
    sigma as one chart each): the configs name Lightning's class, and runs of every config should look the same."""
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if hasattr(logger, "get") and logger.get("class_path") == TENSORBOARD_LOGGER:
            logger["class_path"] = RUN_LOGGER


# ----- errors as one sentence ---------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def argument_error_sentence(error: BaseException, args: list[str]) -> str:
    """One sentence for a parsing error of jsonargparse (whose message nests every Union member it tried)."""
    innermost = _first_line(error_chain(error)[-1])
    names = next((e.setting_names for e in error_chain(error) if hasattr(e, "setting_names")), [])

    def did_you_mean(given: str) -> str:
        suggestion = closest_setting(given, names)
        return f" (did you mean --{suggestion}?)" if suggestion else ""

    if innermost.lower().startswith("unrecognized arguments"):
        unknown = [a for a in innermost.split(":", 1)[1].split() if a not in SUBCOMMANDS]
        hint = did_you_mean(unknown[0]) if unknown else ""
        return f"{' '.join(unknown)}: no such setting{hint}; {SEE_SETTINGS}."
    keys = re.findall(r'Parser key "([^"]+)"', str(error))
    key = keys[-1] if keys else ""
    named = re.search(r"Option '([^']+)' is not accepted", innermost)
    field = named.group(1) if named else key.rsplit(".", 1)[-1]
    given = next((a for a in reversed(args) if field and re.search(rf"[.-]{re.escape(field)}(=|$)", a)), None)
    where = given or (f"--{key}" if key else "the arguments")
    problem = f"no such setting '{field}'" if named else re.sub(r"<class '([^']+)'>", r"\1", innermost)
    hint = did_you_mean(given) if named and given else ""
    return f"{where}: {problem}{hint}; {SEE_SETTINGS}."


def _informational_logs_to_stdout() -> None:
    """Lightning's own info lines ("GPU available...", "Seed set to...") go to stdout, so stderr carries only what
    went wrong (its warnings still go to stderr)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


def main(args: list[str] | None = None) -> None:
    _informational_logs_to_stdout()
    quiet_lightning()
    # Lightning 2.6 calls a pytree API that torch deprecated: nothing the user can act on, one line in every run
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    given = list(sys.argv[1:] if args is None else args)

    def describe(err: Exception) -> str | None:
        if isinstance(err, argparse.ArgumentError):
            return argument_error_sentence(err, given)
        past = re.search(r"current_epoch=(\d+), but you have set Trainer\(max_epochs=(-?\d+)\)", str(err))
        if past:  # Lightning's MisconfigurationException, raised after the model is built
            return (f"--ckpt_path: that run is already in epoch {past.group(1)}, past --trainer.max_epochs="
                    f"{past.group(2)}; give a larger --trainer.max_epochs to train it further")
        return None

    try:
        with one_sentence_errors(describe):
            DiffuseFeatCLI(args=given)
    except RunInterrupted as stopped:  # Ctrl-C or SIGTERM: saved; where, and how to go on (said once under DDP)
        if rank_zero_only.rank == 0:
            print("\n".join(stopped.lines()), file=sys.stderr)
        sys.exit(130)
