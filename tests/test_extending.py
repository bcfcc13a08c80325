"""The README's "Extending" section, run as written: its files, its training command (shortened in time only) and
its analyze command, so the user's own diagnostic is shown to be one class used by a callback and by analyze."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from diffuse_feat.analyze.__main__ import main as analyze_main
from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.reporting import read_jsonl

from .test_analyze import assert_same_numbers

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
FILES = dict(re.findall(r"<!-- test-file: (\S+) -->\n```\w+\n(.*?)```", README, flags=re.S))
COMMAND = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
ANALYZE = re.search(r"<!-- test-analyze-extension -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
SHORTER = ["--trainer.max_steps=12", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           "--trainer.callbacks.init_args.every_n_steps=5"]
SIGMAS = [0.1, 0.3, 1.0, 3.0]


@pytest.fixture
def example(tmp_path, monkeypatch):
    assert set(FILES) == {"my_extensions.py", "my_run.yaml"}
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # "next to train.py": the script's folder is on sys.path
    return tmp_path


def test_readme_extension_example_runs_as_shown_and_its_diagnostic_runs_in_analyze_too(example):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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

    run_dir = Path(cli.trainer.log_dir)
    records = [r for r in read_jsonl(run_dir / "diagnostics.jsonl") if r["name"] == "denoising_gap"]
    assert [r["step"] for r in records] == [5, 10, 12]  # every 5 optimizer steps, and at the end
    for r in records:
        ratios = [r["values"][f"error_ratio_s{s:g}"] for s in SIGMAS]  # the curve's points, one key each
        assert all(v > 0 for v in ratios) and r["values"]["mean_ratio"] == pytest.approx(sum(ratios) / 4)
    run = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    points = run.Scalars("diagnostics/denoising_gap/error_ratio_by_sigma/sigma=0.1")  # one chart, a line per sigma
    assert [e.step for e in points] == [5, 10, 12]

    words = shlex.split(ANALYZE)
    assert words[:4] == ["python", "-m", "diffuse_feat.analyze", "my_extensions.DenoisingGap"]
    result = analyze_main([w.replace("runs/default/version_0", str(run_dir)) for w in words[3:]])
    assert result["settings"] == {"sigmas": SIGMAS, "num_points": 64, "seed": 0}  # the run's, from its config
    assert result["denoiser"]["step"] == 12
    assert_same_numbers(records[-1]["values"], result["values"])  # what the callback logged at the end
    assert (example / "out" / "gap" / "diagnostics.jsonl").is_file()


def test_readme_extension_example_measures_often_enough_to_draw_its_curve(example):
    """The example's own settings (not the shortened ones above): its callback measures at least 5 times."""
    args = [str(REPO / w) if w.startswith("configs/") else w for w in shlex.split(COMMAND)[3:]]
    config = DiffuseFeatCLI(args=args, run=False).config
    data = config.data.init_args
    steps = config.trainer.max_epochs * -(-data.n_train // min(data.batch_size, data.n_train))
    every = next(cb.init_args.every_n_steps for cb in config.trainer.callbacks
                 if cb.class_path.endswith("DiagnosticCallback"))
    assert steps // every >= 5, (steps, every)
