"""The README's "Extending" section, run as written: its files and its command (shortened in time only)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.reporting import read_jsonl

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
FILES = dict(re.findall(r"<!-- test-file: (\S+) -->\n```\w+\n(.*?)```", README, flags=re.S))
COMMAND = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
SHORTER = ["--trainer.max_steps=12", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           "--trainer.callbacks.init_args.every_n_steps=5", "--trainer.callbacks.init_args.num_samples=16"]


def test_readme_extension_example_runs_as_shown(tmp_path, monkeypatch):
    assert set(FILES) == {"my_extensions.py", "my_run.yaml"}
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # "next to train.py": the script's folder is on sys.path
    words = shlex.split(COMMAND)
    assert words[:2] == ["python", "train.py"]
    args = [str(REPO / w) if w.startswith("configs/") else w for w in words[2:]]
    cli = DiffuseFeatCLI(args=[*args, *SHORTER])

    model, loss = cli.model, cli.model.loss
    assert type(model).__name__ == "DiffusionModule" and type(model.backbone).__name__ == "ResidualMLP"
    assert type(loss).__name__ == "CappedWeight" and loss.max_weight == 5.0
    assert cli.datamodule.train_tensor().shape[0] == 64
    sigma = torch.logspace(-3, 2, 50)
    edm = super(type(loss), loss).weight(sigma, model.denoiser)
    assert edm.max() > 5  # the cap binds somewhere on this grid, so the override is really in effect
    torch.testing.assert_close(loss.weight(sigma, model.denoiser), edm.clamp(max=5.0))

    records = [r for r in read_jsonl(Path(cli.trainer.log_dir) / "diagnostics.jsonl")
               if r["name"] == "MemorizationCallback"]
    assert [r["step"] for r in records] == [5, 10, 12]  # every 5 optimizer steps, and at the end
    assert all(0 <= r["values"]["memorized_fraction"] <= 1 and r["values"]["gl_score"] > 0 for r in records)


def test_readme_extension_example_measures_often_enough_to_draw_its_curve(tmp_path, monkeypatch):
    """The example's own settings (not the shortened ones above): its callback measures at least 5 times."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [str(REPO / w) if w.startswith("configs/") else w for w in shlex.split(COMMAND)[3:]]
    config = DiffuseFeatCLI(args=args, run=False).config
    data = config.data.init_args
    steps = config.trainer.max_epochs * -(-data.n_train // min(data.batch_size, data.n_train))
    every = next(cb.init_args.every_n_steps for cb in config.trainer.callbacks
                 if cb.class_path.endswith("MemorizationCallback"))
    assert steps // every >= 5, (steps, every)
