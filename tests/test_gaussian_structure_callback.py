"""GaussianStructureCallback inside a Lightning fit, and the n_train sweep reproduction (slow)."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.gaussian_structure import GaussianStructureCallback
from diffuse_feat.backbones import MLP
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reporting import read_jsonl

NAME = "gs"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("gs_fit")
    torch.manual_seed(0)
    data = DigitsDataModule(n_train=200, n_val=40, batch_size=64)
    model = DiffusionModule(functools.partial(MLP, width=32, depth=1), data_shape=data.data_shape)
    callback = GaussianStructureCallback(every_n_steps=4, num_pairs=12, num_sigmas=8, jacobian_sigmas=(1.0,),
                                        jacobian_points=1, num_samples=6, sample_steps=4, name=NAME)
    trainer = pl.Trainer(max_steps=8, logger=TensorBoardLogger(str(root), name="run"), callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, datamodule=data)
    return trainer, model, data, callback


def test_callback_writes_records_scalars_and_a_figure(fitted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _, _, callback = fitted
    run_dir = Path(trainer.log_dir)
    records = [r for r in read_jsonl(run_dir / "diagnostics.jsonl") if r["name"] == NAME]
    assert [r["step"] for r in records] == [4, 8] == [h["step"] for h in callback.history]
    values = records[-1]["values"]
    assert len(values["sigmas"]) == len(values["linearity_cosine"]) == len(values["rmse_to_gaussian"]) == 8
    assert values["probes_held_out"] == 1.0 and 0.0 <= values["memorized_fraction"] <= 1.0
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in values["linearity_cosine"])
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert len([t for t in events.Tags()["images"] if t.startswith(f"figures/{NAME}/")]) == 6  # one a panel
    scalars = set(events.Tags()["scalars"])
    for key in ("linearity_min_mid", "rmse_to_gaussian_mid", "memorized_fraction", "distill_error_mid",
                "generation_nmse_to_gaussian"):
        assert f"diagnostics/{NAME}/{key}" in scalars
    assert not any(re.search(r"_s[\d.]+$", t) for t in scalars)  # a value per sigma is a line of one chart
    distance = events.Scalars(f"diagnostics/{NAME}/jacobian_distance_by_sigma/sigma=1")  # a line of one chart
    assert [e.step for e in distance] == [4, 8]
    assert distance[-1].value == pytest.approx(values["jacobian_distance_s1"], rel=1e-6)
    assert json.dumps(values, allow_nan=False)  # strict JSON


def test_callback_scores_the_exact_references_as_theory_says(fitted):
    """Measured on D_G itself, every distance to D_G vanishes; on D_M, every sample is a training copy."""
    trainer, model, data, callback = fitted
    gaussian = data.gaussian_denoiser()

    def measure(denoiser):  # the callback's measurement, its curves as tensors
        record = callback.measurement.measure(denoiser, data).record()
        return {k: torch.tensor(v) if isinstance(v, list) else v for k, v in record.items()}

    on_g = measure(gaussian)
    assert max(on_g["rmse_to_gaussian"].tolist()) < 1e-6
    assert torch.allclose(on_g["linearity_cosine"], on_g["gaussian_linearity_cosine"])
    assert max(on_g["distill_error"].tolist()) < 1e-3
    assert on_g["jacobian_distance_s1"] < 1e-5 and on_g["generation_nmse_to_gaussian"] == 0.0
    assert on_g["memorized_fraction"] == 0.0
    on_m = measure(data.empirical_denoiser())
    assert max(on_m["rmse_to_empirical"].tolist()) < 1e-6
    assert on_m["memorized_fraction"] == 1.0
    assert torch.allclose(on_m["rmse_to_gaussian"], on_m["empirical_rmse_to_gaussian"])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from tests.reproduction_check import run_quick

    out = tmp_path_factory.mktemp("gs_quick")
    return out, run_quick("gaussian_structure", out)


@pytest.mark.slow
def test_quick_reproduction_passes_its_own_checks(quick_run):
    """>= 5 nested sizes, >= 3 seeds: memorizes at n <= 64, generalizes at n >= 1024, mid-sigma RMSE to D_G falls and
    linearity rises by more than 2 SE, and the high-sigma RMSE to D_G is below 0.1 at the largest n."""
    out, payload = quick_run
    assert (out / "gaussian_structure.png").stat().st_size > 10_000
    runs = payload["runs"]
    assert len(runs) >= 5 and len(payload["seeds"]) >= 3
    assert [r["n_train"] for r in runs] == sorted(r["n_train"] for r in runs)
    for r in runs:
        assert {"linearity_min_mid", "rmse_to_gaussian_mid", "rmse_to_gaussian_high", "memorized_fraction"} <= set(r)
        assert len(r["memorized_fraction_per_seed"]) == len(r["linearity_min_mid_per_seed"]) == len(payload["seeds"])
        assert all(math.isfinite(v) for v in r["linearity_cosine"])
    assert all(payload["trends"].values()), payload["trends"]


@pytest.mark.slow
def test_quick_reproduction_matches_the_committed_results(quick_run):
    from tests.reproduction_check import assert_matches_committed

    assert_matches_committed("gaussian_structure", quick_run[1], floor=0.05)
