"""The README's "Analyze a model you already have" section, run as written on a tiny random diffusers model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from tests.test_diffusers import save_tiny_ddpm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PYTHON = re.search(r"<!-- test-analyze-python -->\n```python\n(.*?)```", README, flags=re.S).group(1)
COMMAND = re.search(r"<!-- test-analyze-command -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)


@pytest.fixture
def folder_with_my_ddpm(tmp_path, monkeypatch):
    unet, scheduler = save_tiny_ddpm(tmp_path / "my_ddpm")
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the README's paths are relative to the repository
    monkeypatch.chdir(tmp_path)
    return tmp_path, unet, scheduler


def test_the_python_block_gives_the_schedulers_x0_estimate(folder_with_my_ddpm):
    _, unet, scheduler = folder_with_my_ddpm
    namespace: dict = {}
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(PYTHON, "README.md", "exec"), namespace)
    D, sigma, x0_hat = namespace["D"], namespace["sigma"], namespace["x0_hat"]
    assert x0_hat.shape == (4, 1, 8, 8) and printed.getvalue().startswith("torch.Size([4, 1, 8, 8])")
    alpha_bar = scheduler.alphas_cumprod.double()
    assert D.sigma_min == pytest.approx(float(((1 - alpha_bar[0]) / alpha_bar[0]).sqrt()), rel=1e-6)
    assert D.sigma_max == pytest.approx(float(((1 - alpha_bar[-1]) / alpha_bar[-1]).sqrt()), rel=1e-6)
    # the same estimate from the bare U-Net: x_t = sqrt(alpha_bar) x, t interpolated in -log alpha_bar
    x = torch.randn(4, 1, 8, 8)
    target = torch.log1p(sigma.double() ** 2)
    table = -torch.log(alpha_bar)
    hi = int(torch.searchsorted(table, target[:1]))
    t = hi - 1 + (target[0] - table[hi - 1]) / (table[hi] - table[hi - 1])
    scale = float(torch.rsqrt(1 + sigma[0].double() ** 2))
    with torch.no_grad():
        eps = unet(scale * x, torch.full((4,), float(t))).sample
        expected = x - sigma[0] * eps
        torch.testing.assert_close(D(x, sigma), expected, rtol=1e-5, atol=1e-5)


def test_the_command_writes_what_the_callback_would(folder_with_my_ddpm):
    root, _, _ = folder_with_my_ddpm
    words = shlex.split(COMMAND)
    assert words[:3] == ["python", "-m", "diffuse_feat.analyze"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, *words[1:]], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = root / "out" / "my_ddpm"
    result = json.loads((out / "gaussian_structure.json").read_text())
    values = result["values"] if "values" in result else result
    assert -1 <= values["linearity_min_mid"] <= 1 and values["rmse_to_gaussian_mid"] > 0
    assert (out / "gaussian_structure.png").stat().st_size > 0
    assert (out / "diagnostics.jsonl").read_text().count("\n") == 1
    assert any(p.name.startswith("events.out.tfevents") for p in out.rglob("*"))
