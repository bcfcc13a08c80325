"""The ground-truth contract: what a DataModule can tell a diagnostic, one Protocol per capability.

A DataModule declares a capability by inheriting its Protocol (every built-in one does, so
``capabilities_of(dm)`` and the README's table list exactly what it offers); a DataModule of your own may
also just implement the methods, and the runtime checks accept it. A measurement lists the capabilities it
needs (``Measurement.required_capabilities``) and :func:`check_capabilities` stops the run in
``setup()`` of its callback, before the first training step, with one sentence naming the callback, the DataModule and
what is missing. It stands below both ``data/`` (which implements the Protocols) and ``diagnostics/`` (which reads
them), so neither imports the other.

What each returns (``d`` = data shape, ``n`` training points):

``TrainingSet``
    ``train_tensor()`` ``[n, *d]`` float32, ``train_labels()`` ``[n]`` long, ``val_tensor()`` /
    ``val_labels()`` the held-out points (possibly none); ``data_shape``, ``num_classes``.
``GaussianReference``
    ``mean()`` ``[*d]``, ``covariance()`` ``[D, D]`` (``D = prod(d)``, float64), ``covariance_eigh()``
    (eigenvalues descending, eigenvectors as columns), ``gaussian_denoiser()`` (the Wiener filter ``D_G``),
    ``empirical_denoiser()`` (the exact score of the training set ``D_M``).
``PopulationScore``
    ``population_denoiser()``: ``E[x0 | x]`` under the distribution the data is drawn from.
``OracleLabels``
    ``oracle_labels(x)`` ``[B]`` long: the true class of any input (mixture component, RHM root; ``-1`` where
    it has none).
``MixtureTheory``
    ``top_eigenvalue`` (float), ``component_std`` (float), ``cloning_theory(t)`` (phi(t), or None),
    ``collapse_time(n)`` (t_C): Biroli et al.'s theory for a Gaussian mixture.
``LatentTrees``
    ``parse(x)`` (the exact parser: one ``[N, s^l]`` long tensor per level, root first, ``-1`` where
    ungrammatical), ``train_trees()`` / ``val_trees()`` (every sample's derivation), ``bp_denoiser()`` (exact
    belief propagation), ``eps_star()`` (the mean-field threshold).
``PlantedFeatures``
    ``signal_vectors()`` ``[classes, p]``, ``noise_patches()`` ``[n, p]``, the patch indices
    ``signal_patch`` / ``noise_patch``, ``snr`` and ``n_snr2``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from .errors import MissingGroundTruth

__all__ = [
    "TrainingSet",
    "GaussianReference",
    "PopulationScore",
    "OracleLabels",
    "MixtureTheory",
    "LatentTrees",
    "PlantedFeatures",
    "CAPABILITIES",
    "capabilities_of",
    "check_capabilities",
    "capability_tables",
]


@runtime_checkable
class TrainingSet(Protocol):
    """the training points, their labels and the held-out points"""

    data_shape: tuple[int, ...]
    num_classes: int

    def train_tensor(self) -> Tensor: ...
    def train_labels(self) -> Tensor: ...
    def val_tensor(self) -> Tensor: ...
    def val_labels(self) -> Tensor: ...


@runtime_checkable
class GaussianReference(Protocol):
    """moments of the training set and its exact Gaussian (D_G) and empirical (D_M) denoisers"""

    def mean(self) -> Tensor: ...
    def covariance(self) -> Tensor: ...
    def covariance_eigh(self) -> tuple[Tensor, Tensor]: ...
    def gaussian_denoiser(self) -> Any: ...
    def empirical_denoiser(self) -> Any: ...


@runtime_checkable
class PopulationScore(Protocol):
    """the exact denoiser of the data's own distribution"""

    def population_denoiser(self) -> Any: ...


@runtime_checkable
class OracleLabels(Protocol):
    """the true class of any input"""

    def oracle_labels(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class MixtureTheory(Protocol):
    """Gaussian-mixture theory of speciation and collapse"""

    top_eigenvalue: float
    component_std: float

    def cloning_theory(self, t) -> Tensor | None: ...
    def collapse_time(self, n: int | None = None) -> float: ...


@runtime_checkable
class LatentTrees(Protocol):
    """latent derivation trees, their exact parser and belief propagation"""

    def parse(self, x: Tensor) -> list[Tensor]: ...
    def train_trees(self) -> list[Tensor]: ...
    def val_trees(self) -> list[Tensor]: ...
    def bp_denoiser(self) -> Any: ...
    def eps_star(self) -> dict[str, float]: ...


@runtime_checkable
class PlantedFeatures(Protocol):
    """the planted signal directions and every sample's noise patch"""

    signal_patch: int
    noise_patch: int
    snr: float
    n_snr2: float

    def signal_vectors(self) -> Tensor: ...
    def noise_patches(self) -> Tensor: ...


CAPABILITIES: tuple[type, ...] = (TrainingSet, GaussianReference, PopulationScore, OracleLabels, MixtureTheory,
                                  LatentTrees, PlantedFeatures)

#: where each capability can be found among the built-in DataModules, for the error messages
_WHERE = {
    TrainingSet: "every TensorDataModule has it",
    GaussianReference: "every TensorDataModule has it",
    PopulationScore: "e.g. diffuse_feat.data.GaussianMixtureDataModule or LowRankGaussianDataModule",
    OracleLabels: "e.g. diffuse_feat.data.GaussianMixtureDataModule or RHMDataModule",
    MixtureTheory: "diffuse_feat.data.GaussianMixtureDataModule",
    LatentTrees: "diffuse_feat.data.RHMDataModule",
    PlantedFeatures: "diffuse_feat.data.TwoPatchDataModule or NoisyImagePatchDataModule",
}


def capabilities_of(datamodule: Any) -> list[type]:
    """The capabilities ``datamodule`` (an instance or a class) implements, in :data:`CAPABILITIES` order. A class
    counts only what it declares (inherits); an instance also what it implements without declaring it."""
    if isinstance(datamodule, type):  # (issubclass refuses protocols with data members: read the bases)
        return [cap for cap in CAPABILITIES if cap in datamodule.__mro__]
    return [cap for cap in CAPABILITIES if isinstance(datamodule, cap)]


def check_capabilities(datamodule: Any, needed: Iterable[type], *, needed_by: str, hint: str = "") -> None:
    """Raise :class:`MissingGroundTruth` (one sentence) unless ``datamodule`` implements every capability of
    ``needed``; ``hint`` says what else the user could do (an argument of the callback, say)."""
    owner = type(datamodule).__name__ if datamodule is not None else "no DataModule (trainer.datamodule is None)"
    missing: Sequence[type] = [cap for cap in needed if datamodule is None or not isinstance(datamodule, cap)]
    if not missing:
        return
    what = "; ".join(f"{cap.__name__} ({cap.__doc__.strip()}: {_WHERE[cap]})" if cap in _WHERE
                     else cap.__name__ for cap in missing)
    raise MissingGroundTruth(f"{needed_by} needs {what} from the data, but {owner} does not provide it"
                             + (f"; {hint}" if hint else ""))


def capability_tables(datamodules: Iterable[type]) -> str:
    """The README's two Markdown tables: which of ``datamodules`` declares which capability, and what each
    capability gives (the Protocol's docstring and members)."""
    caps = CAPABILITIES
    rows = ["| DataModule | " + " | ".join(cap.__name__ for cap in caps) + " |",
            "|---|" + "---|" * len(caps)]
    for dm in datamodules:
        declared = capabilities_of(dm)
        rows.append(f"| `{dm.__name__}` | " + " | ".join("✓" if cap in declared else "" for cap in caps) + " |")
    rows += ["", "| capability | what it gives |", "|---|---|"]
    for cap in caps:
        members = sorted(name for name in cap.__dict__ if not name.startswith("_"))
        members += sorted(name for name in cap.__annotations__ if name not in members)
        rows.append(f"| `{cap.__name__}` | {cap.__doc__.strip()}: " + ", ".join(f"`{m}`" for m in members) + " |")
    return "\n".join(rows)
