"""``callbacks.EMA``: before the average's first update the live weights are the model (validation, end of fit);
after it, the average, exactly as Lightning's ``EMAWeightAveraging``."""

from __future__ import annotations

import copy
import functools

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging

from callbacks import EMA
from diffuse_feat.backbones import MLP
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.lightning_private import averaged_module
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import quiet


class Watch(Callback):
    """The weights validation sees, and the live and averaged weights after the last optimizer step."""

    def __init__(self, ema):
        self.ema, self.validated, self.live, self.average = ema, [], None, None

    def on_validation_epoch_start(self, trainer, pl_module):
        self.validated.append(copy.deepcopy(pl_module.state_dict()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:
            self.live = copy.deepcopy(pl_module.state_dict())
            averaged = averaged_module(self.ema)
            self.average = None if averaged is None else copy.deepcopy(averaged.state_dict())


def fit(ema_class, steps: int, start: int):
    torch.manual_seed(0)
    module = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 8, 8), lr=0.05)
    initial = copy.deepcopy(module.state_dict())
    ema = ema_class(decay=0.5, update_starting_at_step=start)
    watch = Watch(ema)  # after the EMA callback: sees the weights it swapped in
    with quiet():
        trainer = pl.Trainer(max_steps=steps, val_check_interval=2, check_val_every_n_epoch=None,
                             limit_val_batches=1, num_sanity_val_steps=0, callbacks=[ema, watch], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu")
        trainer.fit(module, datamodule=DigitsDataModule(n_train=64, batch_size=16))
    return initial, watch, module.state_dict()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def close(a: dict, b: dict) -> bool:  # EMA's one foreach lerp vs Lightning's per-tensor average: rounding apart
    return all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6) for k in a)


def test_lightnings_callback_validates_and_ends_on_the_initial_weights_before_its_first_update():
    # the trap EMA removes: 6 steps, the average starting at step 100
    initial, watch, final = fit(EMAWeightAveraging, steps=6, start=100)
    assert all(same(v, initial) for v in watch.validated) and same(final, initial)


def test_before_its_first_update_ema_validates_and_ends_on_the_trained_weights():
    initial, watch, final = fit(EMA, steps=6, start=100)
    assert len(watch.validated) == 3 and not any(same(v, initial) for v in watch.validated)
    assert not same(watch.validated[0], watch.validated[-1])  # validation follows training
    assert watch.average is None and same(final, watch.live)


def test_once_updated_ema_behaves_as_lightnings_callback():
    # validation at steps 2, 4, 6; the average's first update after step 3 (step index 2)
    initial, watch, final = fit(EMA, steps=6, start=2)
    _, lightning_watch, lightning_final = fit(EMAWeightAveraging, steps=6, start=2)
    assert watch.average is not None and not same(watch.average, watch.live)
    assert same(final, watch.average) and close(final, lightning_final)  # the average replaces the model at the end
    assert not close(final, watch.live)  # decay 0.5: the average really differs from the live weights
    assert all(map(close, watch.validated[1:], lightning_watch.validated[1:]))  # the average, once there is one
    assert same(lightning_watch.validated[0], initial) and not same(watch.validated[0], initial)
