"""Where a benchmark's figures go: ``benchmarks/results/<benchmark>-<device>.json``, with the device and versions.

Every GPU benchmark calls :func:`write_results` at the end, so the README's numbers can be read from (and
checked against) the JSON a run wrote instead of being typed from a terminal.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_record(device: str) -> dict:
    """The machine a figure was measured on: device name, torch and CUDA versions, CPU threads."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda if device == "cuda" else None,
            "threads": torch.get_num_threads()}


def device_slug(device: str) -> str:
    """``h100``, ``h200``, ``a100``... from the GPU's name (``cpu`` on the CPU)."""
    if device != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    match = re.search(r"\b([a-z]\d{2,4}[a-z]?)\b", name)
    return match.group(1) if match else re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def write_results(benchmark: str, device: str, figures: dict, out_dir: Path | None = None) -> Path:
    """Write ``{**device_record(device), **figures}`` to ``<out_dir>/<benchmark>-<device slug>.json``."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{benchmark}-{device_slug(device)}.json"
    path.write_text(json.dumps({"benchmark": benchmark, **device_record(device), **figures}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
