"""Ctrl-C and SIGTERM: the run stops after the current step with a checkpoint, prints where it is and the exact resume
command in two lines, and that command continues bit for bit to the weights of an uninterrupted run."""

from __future__ import annotations

import shlex
import signal

import pytest
import torch

from diffuse_feat.cli import main
from diffuse_feat.interrupt import SaveOnInterrupt

from .test_training import REPO, TINY, _all_weights, run_cli, weights_in

COMMON = ["fit", "--config", str(REPO / "configs/default.yaml"), *TINY, "--trainer.callbacks.every_n_steps=5",
          "--trainer.callbacks.num_samples=2", "--trainer.callbacks.num_steps=2", "--trainer.max_epochs=4"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_prints_the_resume_command_and_that_command_continues_exactly(signal_name, capsys):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    full = run_cli(*COMMON, "--trainer.logger.init_args.name=full")
    with pytest.raises(SystemExit) as stopped:  # 4 steps an epoch: stopped after step 6, mid-way through epoch 2
        main([*COMMON, "--trainer.logger.init_args.name=cut", "--trainer.callbacks+=tests.helpers.SignalAtStep",
              "--trainer.callbacks.init_args.step=6", f"--trainer.callbacks.init_args.signal_name={signal_name}"])
    assert stopped.value.code == 130
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # our handlers are gone again
    lines = capsys.readouterr().err.strip().splitlines()
    last = "runs/cut/version_0/checkpoints/last.ckpt"
    assert lines == [f"Stopped by {signal_name} after step 6; the run is saved in {last}",
                     f"Resume it with: python train.py --ckpt_path {last}"]
    assert torch.load(last, weights_only=False)["global_step"] == 6
    command = shlex.split(lines[1].split(": ", 1)[1])
    assert command[:2] == ["python", "train.py"]
    main([*command[2:], "--trainer.enable_progress_bar=true"])  # what the line says, and a bar to look at
    out = capsys.readouterr().out
    assert "Resuming runs/cut/version_0 at step 6; watch it with: tensorboard --logdir runs/cut/version_0" in out
    # the resumed epoch's bar: its epoch, 3 of its 4 batches done, the run's step of 16; not Lightning's "Training: 3/?"
    bars = [line.strip() for line in out.replace("\r", "\n").splitlines() if "it/s" in line]
    assert any(bar.startswith("Epoch 1:  75%") and "3/4" in bar and "step=7/16" in bar for bar in bars), bars
    first_epoch_bar = next(i for i, bar in enumerate(bars) if bar.startswith("Epoch"))  # drawn over Lightning's
    assert all("0/?" in bar for bar in bars[:first_epoch_bar])  # "Training: 0/?" before the first step, then gone
    assert not any(bar.startswith("Training") for bar in bars[first_epoch_bar:]), bars
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == full.trainer.global_step == 16
    a, b = _all_weights(full), weights_in(last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_ctrl_c_stops_at_once():
    callback = SaveOnInterrupt()
    previous = signal.getsignal(signal.SIGINT)
    callback._previous = {signal.SIGINT: previous}
    callback._handle(signal.SIGINT, None)
    assert callback.requested == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
        callback._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is previous
