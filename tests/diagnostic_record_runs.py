"""Short training runs with every diagnostic callback, whose ``diagnostics.jsonl`` records are compared with the
stored ``tests/data/diagnostics_records.json`` (written by ``python tests/diagnostic_record_runs.py`` before the
measurement objects replaced the callbacks' own measuring code): a refactoring keeps every key and value.

Each run is a few optimizer steps of a tiny network on CPU, so the records are cheap and deterministic.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

from callbacks import (
    FeatureLearningCallback,
    ForwardBackwardCallback,
    GaussianStructureCallback,
    RegimesCallback,
    SampleGridCallback,
)
from diffuse_feat.backbones import MLP, PatchNet
from diffuse_feat.data import (
    DigitsDataModule,
    GaussianMixtureDataModule,
    RHMDataModule,
    TwoPatchDataModule,
)
from diffuse_feat.modules import ClassificationModule, DiffusionModule
from diffuse_feat.preconditioning import EDMPreconditioning
from diffuse_feat.reporting import read_jsonl
from diffuse_feat.reproduce.common import make_trainer, quiet

STORED = Path(__file__).parent / "data" / "diagnostics_records.json"


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    """``{sub-run ("" for the run itself): its sorted scalar and image tags}`` of a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for folder in [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())]:
        tags = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1}).Reload().Tags()
        out["" if folder == run_dir else folder.name] = sorted(tags["scalars"] + tags["images"])
    return out


def _fit(model, data, callbacks, root: Path, name: str, steps: int) -> dict:
    torch.manual_seed(0)
    trainer = make_trainer(max_steps=steps, callbacks=callbacks, log_dir=root, name=name, accelerator="cpu",
                           devices=1, check_val_every_n_epoch=None, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, datamodule=data)
    run_dir = Path(trainer.log_dir)
    return {"records": read_jsonl(run_dir / "diagnostics.jsonl"), "tensorboard": tensorboard_tags(run_dir)}


def _classifier_checkpoint(root: Path) -> str:
    data = DigitsDataModule(n_train=64, n_val=16, batch_size=32)
    torch.manual_seed(0)
    classifier = ClassificationModule(functools.partial(MLP, width=16, depth=2), data_shape=(1, 8, 8),
                                      num_classes=10)
    trainer = make_trainer(max_steps=2, accelerator="cpu", devices=1, check_val_every_n_epoch=None,
                           limit_val_batches=0)
    trainer.fit(classifier, datamodule=data)
    path = root / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def record_runs(root: Path) -> dict[str, dict]:
    """``{run name: {"records": its diagnostics.jsonl records, "tensorboard": its tags per sub-run}}`` of five short
    runs covering every callback and mode."""
    root = Path(root)
    runs = {}
    with quiet(threads=1):
        torch.manual_seed(0)
        digits = DigitsDataModule(n_train=64, n_val=20, batch_size=32)
        model = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 8, 8))
        runs["digits"] = _fit(model, digits, [
            SampleGridCallback(every_n_steps=3, num_samples=4, num_steps=3),
            GaussianStructureCallback(every_n_steps=3, num_pairs=6, num_sigmas=6, jacobian_sigmas=(1.0, 0.1),
                                      jacobian_points=1, jacobian_k=3, jacobian_probes=4, num_distill_sigmas=4,
                                      num_samples=4, sample_steps=3),
            RegimesCallback(every_n_steps=3, num_pairs=6, num_clone_times=3, t_max=2.0, step=0.5, num_geometric=4,
                            labeler="nearest_train", reference_samples=40),
            ForwardBackwardCallback(every_n_steps=3, mode="images", sigmas=(0.1, 1.0), num_probes=6, num_steps=3,
                                    classifier_checkpoint=_classifier_checkpoint(root)),
            ForwardBackwardCallback(every_n_steps=0, mode="images", sigmas=(0.5,), num_probes=4, num_steps=2,
                                    name="pixels_only"),
        ], root, "digits", steps=6)

        torch.manual_seed(0)
        mixture = GaussianMixtureDataModule(dim=4, pool_size=48, n_val=0, batch_size=24)
        model = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(4,))
        runs["mixture"] = _fit(model, mixture, [
            RegimesCallback(every_n_steps=0, num_pairs=6, num_clone_times=3, t_max=2.0, step=0.5, num_geometric=4,
                            reference_samples=40),
            SampleGridCallback(every_n_steps=0, num_samples=4, num_steps=3),
        ], root, "mixture", steps=2)

        torch.manual_seed(0)
        rhm = RHMDataModule(v=4, n_c=2, m=2, s=2, L=2, pool_size=80, n_val=10, batch_size=32)
        model = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=rhm.data_shape,
                                preconditioning=EDMPreconditioning(rhm.data_std))
        runs["rhm"] = _fit(model, rhm, [
            ForwardBackwardCallback(every_n_steps=2, sigmas=(0.1, 0.5, 2.0), num_probes=8, num_steps=3),
        ], root, "rhm", steps=2)

        for objective in ("diffusion", "classification"):
            torch.manual_seed(0)
            patches = TwoPatchDataModule(n_train=8, d=20, snr=0.5, n_val=8)
            backbone = functools.partial(PatchNet, width=4, activation="square", init_std=0.01)
            model = (DiffusionModule(backbone, data_shape=patches.data_shape) if objective == "diffusion" else
                     ClassificationModule(backbone, data_shape=patches.data_shape, num_classes=2, sigma_data=None,
                                          eval_sigmas=(0.0,)))
            runs[f"two_patch_{objective}"] = _fit(model, patches, [
                FeatureLearningCallback(every_n_steps=2, figure_every_n_steps=0),
                FeatureLearningCallback(every_n_steps=2, directions=torch.eye(20)[:2].tolist(), histograms=False,
                                        name="directions"),
            ], root, f"two_patch_{objective}", steps=4)
    return runs


if __name__ == "__main__":  # (re)write the stored records: only when a change of values is intended
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        records = record_runs(Path(tmp))
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else STORED
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k} ({len(v['records'])} records)" for k, v in records.items()))
