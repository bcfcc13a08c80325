"""EmpiricalDenoiser (chunked, online log-sum-exp) vs a direct unchunked implementation.

At MNIST size (n = 60,000 training points, d = 784) both compute the same float64 posterior mean for a
batch of noisy queries at several sigma. Each variant runs in its own subprocess so its peak memory
(max RSS, or peak CUDA memory) is its own. Prints times (median of repeats), peak memory, the max
difference of the outputs, and the ratios. Target: same numbers, bounded memory, no slower.

    python benchmarks/empirical_denoiser.py [--n 60000] [--d 784] [--batch 256] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

SIGMAS = (0.002, 0.1, 1.0, 10.0)


def direct_denoiser(train64: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same float64 formula without chunking: the full [B, n] matrix of squared distances
    |x|^2 - 2 x.y + |y|^2, a softmax over all n, and one weighted sum."""
    x64 = x.to(torch.float64)
    d2 = x64.square().sum(1, keepdim=True) - 2 * x64 @ train64.T + train64.square().sum(1)
    return torch.softmax(-d2 / (2 * sigma**2), dim=1) @ train64


def data(n: int, d: int, batch: int, device: str):
    g = torch.Generator().manual_seed(0)
    train = torch.rand(n, d, generator=g) * 2 - 1
    queries = train[:batch] + 0.5 * torch.randn(batch, d, generator=g)
    return train.to(device), queries.to(device)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples the resident set size every millisecond: peak working memory of the code inside."""

    def __enter__(self):
        self.base = self.peak = rss_mib()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def extra(self) -> float:
        return self.peak - self.base


def worker(variant: str, n: int, d: int, batch: int, repeats: int, device: str) -> None:
    from diffuse_feat.denoisers import EmpiricalDenoiser

    train, queries = data(n, d, batch, device)
    # both variants hold the training set once in float64; only the working memory differs
    if variant == "chunked":
        den = EmpiricalDenoiser(train, chunk_size=4096).to(device)
        run = lambda s: den(queries, s)  # noqa: E731
    else:
        train64 = train.to(torch.float64)
        run = lambda s: direct_denoiser(train64, queries, s)  # noqa: E731
    del train
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    outs, times = {}, []
    watch = PeakRSS().__enter__()
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for s in SIGMAS:
            outs[s] = run(s).to(torch.float64)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    watch.__exit__(None, None, None)
    peak = watch.extra - sum(o.numel() * 8 for o in outs.values()) / 2**20  # the kept outputs are not working memory
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    torch.save({s: o.cpu() for s, o in outs.items()}, f"/tmp/empirical_{variant}.pt")
    print(json.dumps({"time": statistics.median(times), "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=["chunked", "direct"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.d, args.batch, args.repeats, args.device)
        return
    results = {}
    for variant in ("chunked", "direct"):
        cmd = [sys.executable, __file__, "--worker", variant, "--n", str(args.n), "--d", str(args.d),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = torch.load("/tmp/empirical_chunked.pt"), torch.load("/tmp/empirical_direct.pt")
    diff = max((a[s] - b[s]).abs().max().item() for s in SIGMAS)
    c, dr = results["chunked"], results["direct"]
    print(f"n={args.n} d={args.d} batch={args.batch} sigmas={SIGMAS} device={args.device} repeats={args.repeats}")
    print(f"chunked (EmpiricalDenoiser): {c['time']:.3f} s   peak working memory {c['peak_mib']:.0f} MiB")
    print(f"direct (unchunked)         : {dr['time']:.3f} s   peak working memory {dr['peak_mib']:.0f} MiB")
    print(f"max |difference| of outputs: {diff:.2e}")
    mem_ratio = c["peak_mib"] / max(dr["peak_mib"], 1)
    print(f"time ratio chunked/direct: {c['time'] / dr['time']:.2f}   working-memory ratio: {mem_ratio:.2f}")


if __name__ == "__main__":
    main()
