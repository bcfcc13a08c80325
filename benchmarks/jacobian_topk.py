"""Top-k Jacobian spectrum by randomized block Krylov iteration vs the full Jacobian (torch.func.jacrev) at d = 784.

The denoiser is a DiffusionModule (EDM preconditioning) around a small MLP or U-Net on 1x28x28 inputs,
first trained for ``--train-steps`` steps on a rank-``--rank`` Gaussian "image" distribution so that its
Jacobian has the decaying spectrum of a real denoiser (``--train-steps 0``: a random network). At each
sigma both methods run side by side at the same noisy point; the full SVD is the reference. Prints the
median times, the speed ratio (target >= 10x) and the relative error of the top-k singular values
(target <= 1%).

    python benchmarks/jacobian_topk.py [--backbone unet|mlp] [--k 5] [--sigmas 0.5 2 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

from diffuse_feat.backbones import MLP
from diffuse_feat.diagnostics.jacobian import denoiser_jacobian, jacobian_top_singular
from diffuse_feat.modules import DiffusionModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402

SHAPE = (1, 28, 28)


def build(backbone: str, device: str) -> DiffusionModule:
    torch.manual_seed(0)
    if backbone == "unet":
        from diffuse_feat.backbones.unet import UNet

        factory = functools.partial(UNet, base_channels=16, channel_mult=(1, 2))
    else:
        factory = functools.partial(MLP, width=256, depth=2)
    return DiffusionModule(factory, data_shape=SHAPE).to(device)


def low_rank_images(n: int, rank: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples of a zero-mean Gaussian with ``rank`` directions of variance ``16 * 0.7^i``.

    A geometrically decaying spectrum, like natural images' power law: ``J_G = lambda / (lambda + sigma^2)``
    then has gaps at every sigma, instead of the flat top (all near 1) that equal variances would give.
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(784, rank, generator=g)).Q
    scales = (16.0 * 0.7 ** torch.arange(rank, dtype=torch.float32)).sqrt()
    return ((torch.randn(n, rank, generator=g) * scales) @ basis.T).reshape(n, *SHAPE)


def train(model: DiffusionModule, steps: int, rank: int, device: str) -> None:
    data = low_rank_images(4096, rank).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device=device).manual_seed(0)
    model.train()
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (128,), generator=g, device=device)]
        loss = model.loss(model.denoiser, x0, g).per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def timed(fn, repeats: int, device: str):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times, out = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["mlp", "unet"], default="unet")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--num-iters", type=int, default=8)
    parser.add_argument("--tol", type=float, default=1e-2, help="early stop (jacobian_top_singular's tol); <= 0: never")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 2.0, 10.0])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results, GPU only)")
    args = parser.parse_args()

    model = build(args.backbone, args.device)
    train(model, args.train_steps, args.rank, args.device)
    x0 = low_rank_images(1, args.rank, seed=1)[0].to(args.device)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).to(args.device)
    probes = (args.k + args.oversample) * (2 * args.num_iters + 1)
    print(f"backbone={args.backbone} d=784 k={args.k} oversample={args.oversample} num_iters={args.num_iters} "
          f"(at most {probes} JVP/VJP probe products vs 784 backward passes, tol={args.tol:g}) "
          f"train_steps={args.train_steps} device={args.device} threads={torch.get_num_threads()} "
          f"repeats={args.repeats}")
    print(f"{'sigma':>6} {'full jacrev+svd (s)':>20} {'top-k (s)':>10} {'speed-up':>9} {'max rel err':>12}  top-k")
    ratios, errors, rows = [], [], []
    for sigma in args.sigmas:
        x = x0 + sigma * noise
        # the reference pays for what top-k gives: the Jacobian and its singular vectors
        t_full, (_, full_s, _) = timed(lambda x=x, s=sigma: torch.linalg.svd(denoiser_jacobian(model, x, s)),
                                       args.repeats, args.device)
        exact = full_s[: args.k].double().cpu()
        t_topk, (_, approx, _) = timed(
            lambda x=x, s=sigma: jacobian_top_singular(model, x, s, args.k, oversample=args.oversample,
                                                       num_iters=args.num_iters, tol=args.tol if args.tol > 0 else None,
                                                       method="randomized"),
            args.repeats, args.device)
        err = float(((approx.double().cpu() - exact).abs() / exact).max())
        ratios.append(t_full / t_topk)
        errors.append(err)
        rows.append({"sigma": sigma, "full_seconds": t_full, "topk_seconds": t_topk, "max_rel_err": err,
                     "top_k": exact.tolist()})
        print(f"{sigma:6g} {t_full:20.3f} {t_topk:10.3f} {t_full / t_topk:8.1f}x {err:12.2e}  "
              f"{[round(v, 4) for v in exact.tolist()]}")
    print(f"speed-up min {min(ratios):.1f}x (target >= 10x); max relative error {max(errors):.2e} (target <= 1e-2)")
    if args.device == "cuda" or args.out is not None:
        write_results("jacobian_topk", args.device, {"backbone": args.backbone, "k": args.k,
                                                     "train_steps": args.train_steps, "sigmas": rows,
                                                     "min_speedup": min(ratios), "max_rel_err": max(errors)}, args.out)


if __name__ == "__main__":
    main()
