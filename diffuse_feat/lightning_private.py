"""Every use of a private Lightning attribute, in one place.

Lightning exposes no public way to (a) read the averaged copy a ``WeightAveraging`` callback keeps, or (b) build
a LightningCLI's Trainer from a filtered list of its extra callbacks. Nothing else in the project touches
``_``-attributes of Lightning or jsonargparse; ``tests/test_lightning_private.py`` exercises each function
here and fails loudly, naming the attribute, if a Lightning upgrade moves one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.cli import LightningCLI
from torch import nn

__all__ = ["averaged_module", "instantiate_cli_trainer"]


def averaged_module(callback: WeightAveraging) -> nn.Module | None:
    """The module a ``WeightAveraging`` callback (e.g. ``EMAWeightAveraging``) has averaged, or None before its
    first update: the copy exists from ``setup`` on, but until ``update_starting_at_step`` it holds the initial
    weights, and a diagnostic measuring it then would silently measure an untrained network."""
    averaged = callback._average_model  # private (Lightning 2.6): the torch.optim.swa_utils.AveragedModel
    if averaged is None or int(averaged.n_averaged) == 0:  # n_averaged: public buffer of AveragedModel
        return None
    return averaged.module


def instantiate_cli_trainer(cli: LightningCLI, keep: Callable[[Callback], bool], extra: Sequence[Callback] = (),
                            **kwargs: Any) -> pl.Trainer:
    """What ``LightningCLI.instantiate_trainer`` does, keeping only the extra callbacks (those of
    ``add_lightning_class_args`` groups) for which ``keep`` is true, and adding ``extra``."""
    trainer_config = {**cli._get(cli.config_init, "trainer", default={}), **kwargs}
    groups = [cli._get(cli.config_init, key) for key in cli._parser(cli.subcommand).callback_keys]
    return cli._instantiate_trainer(trainer_config, [cb for cb in groups if keep(cb)] + list(extra))
