"""The cluster examples of the README and of ``configs/slurm/``, read as a user would run them."""

from __future__ import annotations

import re
import shlex

import pytest

from diffuse_feat.cli import DiffuseFeatCLI

from .test_training import REPO

SBATCH = REPO / "configs" / "slurm" / "train.sbatch"


def _directives(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))


def test_the_sbatch_example_asks_for_what_its_train_command_uses(capsys):
    text = SBATCH.read_text()
    directives = _directives(text)
    [command] = [line for line in text.splitlines() if line.startswith("srun ")]
    words = shlex.split(command)
    assert words[:3] == ["srun", "python", "train.py"]
    options = dict(w[2:].split("=", 1) for w in words if w.startswith("--trainer.") and "=" in w)
    assert options["trainer.num_nodes"] == directives["nodes"]
    assert options["trainer.devices"] == directives["ntasks-per-node"] == directives["gpus-per-node"]
    assert directives["signal"].startswith("SIGUSR1@")  # Lightning's signal to save and requeue
    # the command parses as train.py's own (a real config, known settings)
    args = [str(REPO / w) if w.startswith("configs/") else w for w in words[3:]]
    with pytest.raises(SystemExit) as exit_info:
        DiffuseFeatCLI(args=[*args, "--print_config"])
    assert exit_info.value.code == 0 and "num_nodes: 2" in capsys.readouterr().out
