"""Does a *trained* diffusion model on a deep RHM reproduce the exact-BP forward-backward transition?

Trains ``configs/hierarchy/rhm_deep.yaml`` (RHM L=6; any config can be given) with ``python train.py``'s
own CLI, for ``--max-steps`` steps or ``--max-minutes`` of training, whichever comes first; then, with the
EMA weights:

* ``grammatical_fraction``: the share of ``--samples`` generated strings (Heun, 18 steps from sigma = 80)
  that the exact parser accepts, and the share of valid nodes per level;
* forward-backward on ``--probes`` held-out trees: noise ``x0`` to each sigma, sample back (ancestral
  sampler), parse; ``model.p_class`` and ``model.p_unchanged[sigma][level]`` (root first) against exact BP
  on the very same noisy inputs (``bp.p_class`` is the Rao-Blackwellised root posterior,
  ``bp.p_class_sampled`` the class of one exact posterior sample), and ``max_abs_diff_p_class`` over the
  sigma grid.

Writes ``<out>/<name>_<device>.json`` and ``.png`` (name ``hierarchy_learned``, out ``benchmarks/results`` by
default; the device is ``gpu`` on CUDA, else ``cpu``, and the GPU's name is inside the JSON).

    python benchmarks/hierarchy_learned.py [--max-minutes 2.5] [--max-steps 20000] [--probes 1000]
        [--samples 1000] [--config configs/hierarchy/rhm_deep.yaml] [--out DIR] [--name NAME]
        [-- extra train.py arguments, e.g. --data.init_args.m=3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.diagnostics.hierarchy import bp_gaussian_forward_backward, learned_forward_backward
from diffuse_feat.plotting import plt, save_figure
from diffuse_feat.reproduce.common import quiet, write_json
from diffuse_feat.samplers import SeededNoise, generate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from results_file import device_record  # noqa: E402

SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0)


def train(config: Path, max_steps: int, max_minutes: float | None, extra: list[str]) -> tuple[DiffuseFeatCLI, float]:
    args = ["fit", "--config", str(config), f"--trainer.max_steps={max_steps}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false"]
    if max_minutes:
        seconds = int(round(60 * max_minutes))
        args.append(f"--trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}")
    start = time.perf_counter()
    with quiet(ignore=(".*max_time.*",)):
        cli = DiffuseFeatCLI(args=[*args, *extra])
    return cli, time.perf_counter() - start


def grammar_of_samples(model, dm, num: int, device: torch.device) -> dict:
    x = generate(model, dm.data_shape, range(10_000, 10_000 + num), num_steps=18, device=device)
    trees = dm.parse(x.cpu())
    return {"grammatical_fraction": float((trees[0][:, 0] >= 0).double().mean()),
            "valid_by_level": [float((t >= 0).double().mean()) for t in trees],
            "distinct_classes": int(trees[0][:, 0][trees[0][:, 0] >= 0].unique().numel())}


def forward_backward(model, dm, num: int, device: torch.device, sampler_steps: int) -> dict:
    x0 = dm.val_tensor()[:num]
    trees = [t[:num] for t in dm.val_trees()]
    seeds = list(range(num))
    learned = learned_forward_backward(model, x0.to(device), trees, SIGMAS, dm.parse, seeds=seeds,
                                       num_steps=sampler_steps)
    bp = bp_gaussian_forward_backward(dm.bp_denoiser(), x0, trees, SIGMAS, SeededNoise(seeds).randn_like(x0))
    diff = [abs(a - b) for a, b in zip(learned["p_class"], bp["p_class"], strict=True)]
    return {"num_probes": x0.shape[0], "sampler_steps": sampler_steps, "sigma": list(SIGMAS), "model": learned,
            "bp": bp, "max_abs_diff_p_class": max(diff), "abs_diff_p_class": diff}


def plot(payload: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    sig = payload["sigma"]
    ax = axes[0]
    ax.plot(sig, payload["bp"]["p_class"], "k-o", ms=3, label="exact BP")
    ax.plot(sig, payload["model"]["p_class"], "r--s", ms=3, label="trained model")
    ax.plot(sig, payload["model"]["p_valid"], ":", color="grey", label="model: grammatical x_hat")
    ax.axhline(1 / payload["n_c"], color="grey", lw=0.7)
    ax.set(xscale="log", xlabel="sigma", ylabel="P(class preserved)",
           title=f"class (max |diff| {payload['max_abs_diff_p_class']:.3f})")
    ax.legend(fontsize=8)
    ax = axes[1]
    levels = len(payload["bp"]["p_unchanged"][0])
    for level in range(levels):
        color = plt.cm.viridis(level / max(1, levels - 1))
        ax.plot(sig, [row[level] for row in payload["bp"]["p_unchanged"]], "-", color=color, label=f"level {level}")
        ax.plot(sig, [row[level] for row in payload["model"]["p_unchanged"]], "--", color=color)
    ax.set(xscale="log", xlabel="sigma", ylabel="P(level-l symbol unchanged)",
           title="levels, root (0) to leaves: BP solid, model dashed")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"RHM(v={payload['v']}, n_c={payload['n_c']}, m={payload['m']}, s={payload['s']}, L={payload['L']}), "
                 f"{payload['train_steps']} steps; samples grammatical: {payload['grammatical_fraction']:.3f}",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/hierarchy/rhm_deep.yaml")
    parser.add_argument("--max-steps", type=int, default=20000)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    parser.add_argument("--probes", type=int, default=1000, help="held-out trees in forward-backward")
    parser.add_argument("--samples", type=int, default=1000, help="generated samples parsed for grammaticality")
    parser.add_argument("--sampler-steps", type=int, default=32, help="ancestral steps of each backward run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    parser.add_argument("--name", default="hierarchy_learned", help="file name stem (the device is appended)")
    parser.add_argument("extra", nargs="*", help="more train.py arguments (after --)")
    args = parser.parse_args(argv)
    device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        cwd = os.getcwd()
        os.chdir(scratch)  # the run folder (TensorBoard events) is thrown away; the JSON keeps the figures
        try:
            cli, seconds = train(args.config.resolve(), args.max_steps, args.max_minutes, args.extra)
        finally:
            os.chdir(cwd)
    dm, trainer = cli.datamodule, cli.trainer
    # Lightning's EMA callback copied the averaged weights into the model at the end of fit, and its teardown
    # moved the model back to the CPU: evaluate where it trained
    device = trainer.strategy.root_device
    model = cli.model.to(device).eval()
    print(f"trained {trainer.global_step} steps in {seconds:.0f} s (set-up included); evaluating on {device}",
          flush=True)
    start = time.perf_counter()
    with torch.no_grad():
        samples = grammar_of_samples(model, dm, args.samples, device)
        print(f"samples: grammatical {samples['grammatical_fraction']:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        fb = forward_backward(model, dm, args.probes, device, args.sampler_steps)
    payload = {
        **device_record(device_kind), "config": str(args.config), "v": dm.v, "n_c": dm.n_c, "m": dm.m, "s": dm.s,
        "L": dm.L, "n_train": int(dm.train_tensor().shape[0]), "batch_size": dm.batch_size,
        "train_steps": int(trainer.global_step), "train_seconds": seconds, "precision": str(trainer.precision),
        "eval_device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": float(trainer.logged_metrics.get("train/loss", math.nan)),
        **samples, **fb, "eval_seconds": time.perf_counter() - start,
    }
    name = f"{args.name}_{'gpu' if device_kind == 'cuda' else 'cpu'}"
    write_json(args.out / f"{name}.json", payload)
    plot(payload, args.out / f"{name}.png")
    print(f"{payload['train_steps']} steps in {seconds:.0f} s; grammatical {payload['grammatical_fraction']:.3f}; "
          f"max |p_class model - BP| {payload['max_abs_diff_p_class']:.3f}; wrote {args.out / name}.json")
    return payload


if __name__ == "__main__":
    main()
