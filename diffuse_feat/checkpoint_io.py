"""Checkpoints written whole or not at all, and a full disk said in one sentence.

Lightning's ``TorchCheckpointIO`` serializes to memory, then writes the bytes straight to the checkpoint's name: a
disk that fills mid-write leaves a truncated file under a valid name (``epoch=1-step=24.ckpt``, "failed finding
central directory") and a 60-line ``OSError`` traceback. :class:`AtomicCheckpointIO` checks the free space first,
writes a hidden temporary file in the same folder, fsyncs it and renames it into place, so a checkpoint's name only
ever holds a complete file and the previous checkpoint stays intact until the new one is whole. ``train.py`` uses it
unless the trainer is given another ``CheckpointIO`` plugin.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .errors import UserError

__all__ = ["AtomicCheckpointIO", "DiskFullError", "megabytes"]

LAST = "last.ckpt"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class DiskFullError(UserError, OSError):
    """No room for a checkpoint: names the folder, the space it needs, and how to resume from the last good one."""

    def __init__(self, folder: Path, needed: int, free: int):
        last = folder / LAST
        resume = (f"; the last complete checkpoint is {last}: resume with `python train.py --ckpt_path {last}` "
                  "once there is room" if last.is_file() else "")
        super().__init__(f"no space left in {folder} for a checkpoint of {megabytes(needed)} ({megabytes(free)} "
                         f"free): free {megabytes(needed - free)} or more there, or train into another folder "
                         f"(--trainer.logger.init_args.save_dir){resume}")
        self.folder, self.needed, self.free = folder, needed, free


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (temporary file in the same folder, fsync, rename) and whose
    full disk is a :class:`DiskFullError`. Remote paths (``s3://...``) are written as Lightning writes them."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        free = shutil.disk_usage(folder).free
        if len(data) > free:  # the old file under this name is freed only after the rename: both must fit
            raise DiskFullError(folder, len(data), free)
        temporary = folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(folder, len(data), shutil.disk_usage(folder).free) from None
            raise
        _fsync_folder(folder)  # the rename itself survives a crash


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the data itself is already synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
