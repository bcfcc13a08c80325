"""What a user sees in TensorBoard: screenshots of a run's pages, rendered by headless Chromium.

Builds a small log folder (``--versions`` short ``python train.py`` runs of the default experiment, and the
Gaussian-structure, forward-backward and regimes figures of ``python -m diffuse_feat.analyze`` on exact references,
so no training is needed for them), serves it with TensorBoard and saves the Time Series, Images, Custom Scalars and
Scalars pages as PNGs at a laptop's window size, for a person to look at (are the figures readable at TensorBoard's
own size? is each curve over sigma one Custom Scalars card with a line per sigma? does the run selector list one
entry a run?).

    python benchmarks/tensorboard_view.py [--logdir DIR (an existing one; default: build one)] [--versions 3]
                                          [--out benchmarks/results/tensorboard_view] [--width 1400 --height 1000]

Needs Chromium (``chromium``, ``chromium-browser`` or ``google-chrome`` on PATH, e.g. the system package).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# custom_scalars: the curves over sigma, a card each with a line per sigma (and run); curves_by_sigma: the same points
# in the Scalars tab, a card each. Headless Chromium draws no line in Time Series cards (their legends and card count
# still show); the Scalars and Custom Scalars charts it does
PAGES = {"timeseries": "timeseries", "images": "images", "custom_scalars": "custom_scalars",
         "sample_grids": "images&tagFilter=samples", "curves_by_sigma": "scalars&tagFilter=_by_"}
ANALYZE = [  # (diagnostic, exact reference, data config)
    ("gaussian_structure", "gaussian", "configs/gaussian_structure/digits.yaml"),
    ("forward_backward", "bp", "configs/hierarchy/rhm_diffusion.yaml"),
    ("regimes", "empirical", "configs/regimes/gaussian_mixture.yaml"),
]


def build_logdir(logdir: Path, versions: int) -> None:
    run = [sys.executable, str(REPO / "train.py"), "--trainer.max_epochs=6", "--trainer.enable_progress_bar=false",
           "--trainer.callbacks.init_args.every_n_steps=24", "--trainer.callbacks.init_args.num_samples=36"]
    for _ in range(versions):  # runs/default/version_0, 1, ...: what the run selector lists after a few tries
        subprocess.run(run, cwd=logdir, check=True, capture_output=True)
    for diagnostic, reference, config in ANALYZE:
        subprocess.run([sys.executable, "-m", "diffuse_feat.analyze", diagnostic, "--denoiser", reference,
                        "--data", str(REPO / config), "--out", str(logdir / "runs" / f"analyze_{diagnostic}")],
                       cwd=REPO, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
            return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("TensorBoard did not start within 60 s")


def screenshot(browser: str, url: str, path: Path, width: int, height: int) -> None:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tensorboard_view")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=3, help="training runs in the log folder built")
    args = parser.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        raise SystemExit("no Chromium on PATH: install the system package (e.g. apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir
        if logdir is None:
            logdir = Path(tmp)
            build_logdir(logdir, args.versions)
            logdir = logdir / "runs"
        port = free_port()
        server = serve(logdir, port)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, page in PAGES.items():
                path = args.out / f"{name}.png"
                screenshot(browser, f"http://127.0.0.1:{port}/?darkMode=false#{page}", path, args.width, args.height)
                print(f"wrote {path}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
