"""A non-editable install (``pip install .``) runs ``python train.py`` from any folder: the default experiment is
part of the installed package, not a file found beside the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .test_training import REPO


def test_an_installed_package_trains_the_default_experiment_from_another_folder(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the repository
    for name in ("diffuse_feat", "callbacks", "configs"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, text=True)
    installed = site / "diffuse_feat" / "default.yaml"
    assert installed.is_file() and not installed.is_symlink()  # a copy of configs/default.yaml, not a link
    assert installed.read_text() == (REPO / "configs" / "default.yaml").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(REPO / "train.py", elsewhere / "train.py")
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import diffuse_feat.cli as c; print(c.__file__)"], cwd=elsewhere,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(site)  # the installed package, not the source tree
    run = subprocess.run([sys.executable, "train.py", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
                          "--trainer.callbacks.init_args.num_samples=4"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "runs" / "default" / "version_0" / "checkpoints" / "last.ckpt").is_file()
