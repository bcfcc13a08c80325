"""A full disk while checkpointing: one sentence naming the folder, the space needed and the resume command; no partial
file under a checkpoint's name; the last complete checkpoint kept. Simulated by a disk that reports no room, and by a
write that fails with ENOSPC half-way (a real full filesystem fails the same two calls)."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from diffuse_feat import checkpoint_io
from diffuse_feat.checkpoint_io import AtomicCheckpointIO, DiskFullError
from diffuse_feat.cli import main

from .test_training import REPO, TINY

Usage = namedtuple("Usage", "total used free")


def test_a_checkpoint_that_does_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
    (tmp_path / "last.ckpt").write_bytes(b"complete")
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError) as refused:
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, tmp_path / "epoch=1-step=24.ckpt")
    message = str(refused.value)
    assert message.startswith(f"no space left in {tmp_path} for a checkpoint of 0.4 MB (0.0 MB free)")
    assert f"resume with `python train.py --ckpt_path {tmp_path / 'last.ckpt'}`" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_write_that_fails_half_way_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    before = (tmp_path / "last.ckpt").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="no space left in"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file, no partial one
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert torch.load(tmp_path / "last.ckpt")["step"] == 1


def test_training_into_a_full_disk_stops_in_one_sentence_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real, saves = shutil.disk_usage, []

    def fills_up(folder):  # room for the first two checkpoints (epochs 1 and 2), then none
        saves.append(folder)
        return real(folder) if len(saves) <= 2 else Usage(10**9, 10**9, 0)

    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", fills_up)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(REPO / "configs/default.yaml"), *TINY, "--trainer.max_epochs=4",
              "--trainer.callbacks.every_n_steps=100", "--trainer.callbacks.at_train_end=false"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    folder = Path("runs/default/version_0/checkpoints")  # as the run names it
    assert len(err) == 1 and err[0].startswith(f"error: no space left in {folder} for a checkpoint of ")
    assert f"`python train.py --ckpt_path {folder / 'last.ckpt'}`" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=1-step=8.ckpt", "last.ckpt"]  # epoch 2's, whole
    assert os.readlink(folder / "last.ckpt") == "epoch=1-step=8.ckpt"  # a link, not a second copy
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 8
    assert not any(name.endswith(".tmp") for name in os.listdir(folder))
