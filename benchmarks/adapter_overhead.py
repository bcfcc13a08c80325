"""What wrapping a diffusers U-Net into a sigma-space denoiser costs: ``from_diffusers(folder)(x, sigma)`` vs the bare
``unet(x_t, timestep).sample`` on the same inputs, side by side in one run. Target: at most 5% more per forward pass.

The U-Net is the tiny one of the tests and the README (``UNet2DModel``, 8x8, 1 channel, block_out_channels 16/32,
mid-block attention), random weights saved to a temporary folder. The wrapper adds the sigma -> timestep map of the
DDPM table (float64, with its range check), the input scaling and the eps -> x0 conversion (fp32). Both calls run
as pairs in alternating order, ``--rounds`` rounds of ``--calls`` pairs, under ``torch.no_grad``; the ratio is the
median over rounds of (wrapped time / bare time), so a load change during the run hits both alike. ``--runs`` repeats
that in fresh processes and reports the median over runs (with each run's figure): at batch 1 the overhead is about
80 us of Python and small torch calls, and runs of one build differ by +-0.01 as memory layout and the virtual
machine's neighbours change. Say the machine's load when you quote the figure.

    python benchmarks/adapter_overhead.py [--batch 1 16 128] [--rounds 15] [--calls 40] [--runs 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.results_file import write_results  # noqa: E402


def tiny_ddpm(folder: Path):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="epsilon")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    return scheduler


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(batch: int, rounds: int, calls: int, device: str, folder: Path, scheduler) -> dict:
    from diffuse_feat.interop.diffusers import from_diffusers

    denoiser = from_diffusers(folder).to(device)
    unet = denoiser.net.unet  # the very module the wrapper calls
    g = torch.Generator().manual_seed(1)
    k = torch.randint(0, 1000, (batch,), generator=g)
    alpha_bar = scheduler.alphas_cumprod[k].double()
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt().to(device)  # float64: exact timesteps
    x_t = torch.randn(batch, 1, 8, 8, generator=g).to(device)
    x = x_t / alpha_bar.sqrt().float().reshape(-1, 1, 1, 1).to(device)
    timestep = k.float().to(device)

    def bare():
        return unet(x_t, timestep).sample

    def wrapped():
        return denoiser(x, sigma)

    with torch.no_grad():
        for fn in (bare, wrapped):  # warm-up (allocator, kernels, caches)
            for _ in range(5):
                fn()
        sync(device)
        times = {"bare": [], "wrapped": []}
        for _ in range(rounds):
            total = {"bare": 0.0, "wrapped": 0.0}
            for i in range(calls):  # paired calls, in alternating order: a load change hits both alike
                for name, fn in ((("bare", bare), ("wrapped", wrapped)) if i % 2 else
                                 (("wrapped", wrapped), ("bare", bare))):
                    start = time.perf_counter()
                    fn()
                    sync(device)
                    total[name] += time.perf_counter() - start
            for name in times:
                times[name].append(total[name] / calls)
    ratios = [w / b for w, b in zip(times["wrapped"], times["bare"], strict=True)]
    overhead = [w - b for w, b in zip(times["wrapped"], times["bare"], strict=True)]
    return {"batch": batch, "bare_ms": 1e3 * statistics.median(times["bare"]),
            "wrapped_ms": 1e3 * statistics.median(times["wrapped"]), "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "overhead_us": 1e6 * statistics.median(overhead)}


def one_run(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        scheduler = tiny_ddpm(Path(tmp))
        return [measure(batch, args.rounds, args.calls, args.device, Path(tmp), scheduler) for batch in args.batch]


def median_over_runs(runs: list[list[dict]]) -> list[dict]:
    """Per batch size: the median over runs of each figure, and each run's ratio."""
    rows = []
    for per_run in zip(*runs, strict=True):
        row = {key: statistics.median(r[key] for r in per_run) for key in per_run[0] if key != "batch"}
        rows.append({"batch": per_run[0]["batch"], **row, "ratio_runs": [r["ratio_median"] for r in per_run]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5, help="independent runs, each in a fresh process")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", action="store_true", help="also write benchmarks/results/adapter_overhead-*.json")
    parser.add_argument("--one-run-json", action="store_true", help=argparse.SUPPRESS)  # a child of --runs
    args = parser.parse_args()
    if args.one_run_json:
        print(json.dumps(one_run(args)))
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {args.device}, {torch.get_num_threads()} threads, load average {load:.2f} at start")
    child = [sys.executable, __file__, "--one-run-json", "--device", args.device, "--rounds", str(args.rounds),
             "--calls", str(args.calls), "--batch", *map(str, args.batch)]
    runs = []
    for i in range(args.runs):
        runs.append(json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout))
        print(f"run {i + 1}: " + ", ".join(f"batch {r['batch']} {r['ratio_median']:.3f}" for r in runs[-1]))
    rows = median_over_runs(runs)
    for row in rows:
        print(f"batch {row['batch']:4d}: bare {row['bare_ms']:.3f} ms, wrapped {row['wrapped_ms']:.3f} ms, "
              f"+{row['overhead_us']:.0f} us, ratio {row['ratio_median']:.3f} (runs "
              f"{min(row['ratio_runs']):.3f} .. {max(row['ratio_runs']):.3f})")
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {end_load:.2f} at the end")
    if args.write:
        write_results("adapter_overhead", args.device, {"rows": rows, "runs": args.runs, "rounds": args.rounds,
                                                         "calls": args.calls, "load_start": load, "load_end": end_load})


if __name__ == "__main__":
    main()
