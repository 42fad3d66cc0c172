"""Typed results of ``medsynth compare`` (and of the measurements ``medsynth validate`` shares).

Each piece of the comparison returns one of these records; :meth:`as_dict` gives its
``metrics.json`` form. The verdicts and the report read the attributes, so a misspelt field is an
``AttributeError`` where it is written, not a ``KeyError`` in the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from medsynth.validation.mode_collapse import DiversityCheck
from medsynth.validation.nearest_training import CalibratedMemorization
from medsynth.validation.realism import ImageSet
from medsynth.validation.unpaired import Interval

if TYPE_CHECKING:
    from collections.abc import Mapping

FULL = "1"  # the key of the whole training set among the real fractions


# realism -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetRealism:
    """One image set against the held-out real images in one feature space."""

    kid: Interval
    fid: dict  # ``unpaired.fid_check``: value with its validity flag

    def as_dict(self) -> dict:
        return {"kid": self.kid.as_dict(), "fid": self.fid}


@dataclass(frozen=True)
class SpaceRealism:
    """Every synthetic set, and the real training slices (``reference``, when given), in one space."""

    description: str
    families: dict[str, SetRealism]
    reference: SetRealism | None = None

    def as_dict(self) -> dict:
        out = {"description": self.description, "families": {k: v.as_dict() for k, v in self.families.items()}}
        if self.reference is not None:
            out["reference"] = self.reference.as_dict()
        return out


@dataclass(frozen=True)
class Realism:
    """KID and FID per feature space, and whether the spaces rank the families alike."""

    spaces: dict[str, SpaceRealism]
    agreement: dict  # ``feature_spaces.rank_agreement`` on KID
    n_real: int
    n_synthetic: dict[str, int]
    kid_method: str = "unbiased squared MMD, cubic kernel; 95% percentile bootstrap over images"
    compared: str = "synthetic images for deformed training label maps against held-out real images (unpaired)"

    def as_dict(self) -> dict:
        return {"spaces": {k: v.as_dict() for k, v in self.spaces.items()}, "agreement": self.agreement,
                "n_real": self.n_real, "n_synthetic": self.n_synthetic, "kid": self.kid_method,
                "compared": self.compared}


# memorization ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlaggedShare:
    """The share of flagged samples with its exact (Clopper-Pearson) 95% interval."""

    flagged: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.flagged / self.n

    def as_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high], "flagged": self.flagged, "n": self.n}


@dataclass(frozen=True)
class Memorization:
    """Calibrated memorization in each space (``features``, and ``residuals`` when label maps exist)."""

    results: dict[str, CalibratedMemorization]
    shares: dict[str, FlaggedShare]
    synthetic_names: list[str]
    train_names: list[str]

    @property
    def flagged_by(self) -> dict[str, int] | None:
        """How many samples both spaces flagged, or one alone (None without residuals)."""
        if "residuals" not in self.results:
            return None
        features, residuals = (set(self.results[s].flagged.tolist()) for s in ("features", "residuals"))
        return {"both": len(features & residuals), "features_only": len(features - residuals),
                "residuals_only": len(residuals - features)}

    def as_dict(self) -> dict:
        out = {}
        for space, result in self.results.items():
            summary = result.as_dict()
            for pair in summary["closest"]:
                pair.update(synthetic=self.synthetic_names[pair["synthetic_index"]],
                            train=self.train_names[pair["train_index"]])
            out[space] = {**summary, "share": self.shares[space].as_dict()}
        flagged_by = self.flagged_by
        if flagged_by is not None:
            out["flagged_by"] = flagged_by
        return out


# what each run cost -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """One generator's run: where it is, whether it saw exactly the segmenter's slices, its ``summary.json``."""

    run: str
    trained_on_exact_subset: bool
    train_seconds: float | None = None
    train_steps: int | None = None
    steps_per_second: float | None = None
    peak_memory_mb: float | None = None
    parameters: int | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)  # the fields in order


@dataclass(frozen=True)
class SamplingCost:
    """How the whole-set generator sampled: network evaluations per image (``Synthesizer.cost``) and speed."""

    family: str
    sampler: str
    sampling_options: dict
    network_evaluations: int
    images_per_second: float
    trained_on_exact_subset: bool
    batch_size: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)  # the fields in order


@dataclass(frozen=True)
class Stability:
    """Each logged loss's coefficient of variation in the second half of training."""

    loss_cv: dict[str, float | None]
    headline_loss: str | None

    @property
    def headline_cv(self) -> float | None:
        return self.loss_cv.get(self.headline_loss) if self.headline_loss else None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)  # the fields in order


@dataclass(frozen=True)
class Budget:
    """Whether the families' training wall times are matched (``ratio`` = slowest / fastest)."""

    seconds: dict[str, float | None]
    statement: str
    ratio: float | None = None
    slowest: str | None = None
    fastest: str | None = None
    matched: bool | None = None
    tolerance: float | None = None

    def as_dict(self) -> dict:
        if self.ratio is None:
            return {"seconds": self.seconds, "ratio": None, "matched": None, "statement": self.statement}
        return {"seconds": self.seconds, "ratio": self.ratio, "slowest": self.slowest, "fastest": self.fastest,
                "matched": self.matched, "tolerance": self.tolerance, "statement": self.statement}


# per family and the whole report -------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticSets:
    """What one family's generators made: each fraction's synthetic pairs, the diversity groups
    ``(C, K, 1, *spatial)`` with their label maps ``(C, 1, *spatial)``, and the cost of sampling."""

    pairs: dict  # fraction key -> ``utility_study.SyntheticPairs``
    groups: torch.Tensor
    group_labels: torch.Tensor
    cost: SamplingCost


@dataclass(frozen=True)
class FamilyResult:
    """Every measurement of one family (its whole-set generator unless a field says otherwise)."""

    cost: SamplingCost
    runs: dict[str, RunRecord]  # fraction key -> run
    n_synthetic: int
    diversity: DiversityCheck
    memorization: Memorization
    stability: Stability
    intensity_wasserstein: dict[str, float | None]

    @property
    def full(self) -> RunRecord:
        """The run trained on the whole training set."""
        return self.runs[FULL]

    def as_dict(self) -> dict:
        return {**self.cost.as_dict(), "runs": {k: r.as_dict() for k, r in self.runs.items()},
                **self.full.as_dict(), "n_synthetic": self.n_synthetic, "diversity": self.diversity.as_dict(),
                "memorization": self.memorization.as_dict(), "stability": self.stability.as_dict(),
                "intensity_wasserstein": self.intensity_wasserstein}


@dataclass(frozen=True)
class FamilyFigures:
    """What the figures show of one set: its images, memorization, and (compare) diversity groups and losses."""

    pairs: ImageSet
    memorization: Memorization | None = None
    groups: torch.Tensor | None = None
    group_labels: torch.Tensor | None = None
    curves: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class CompareReport:
    """The whole comparison; :meth:`as_dict` is ``metrics.json``. ``label_fidelity`` and ``utility``
    are the records of :mod:`~medsynth.validation.mask_fidelity` and
    :mod:`~medsynth.validation.utility_study`; ``data``, ``config`` and ``experiments`` describe the run."""

    description: str | None
    config: dict
    experiments: dict
    data: dict
    feature_network: dict
    realism: Realism
    label_fidelity: dict
    models: dict[str, FamilyResult]
    utility: dict
    budget: Budget
    verdicts: dict[str, str] = field(default_factory=dict)  # ``compare_summary.verdicts`` of the rest
    headline: dict = field(default_factory=dict)  # ``compare_summary.headline`` of the rest
    seconds: float = 0.0
    provenance: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"description": self.description, "config": self.config, "experiments": self.experiments,
                "data": self.data, "feature_network": self.feature_network, "realism": self.realism.as_dict(),
                "label_fidelity": self.label_fidelity,
                "models": {k: m.as_dict() for k, m in self.models.items()}, "utility": self.utility,
                "budget": self.budget.as_dict(), "verdicts": self.verdicts, "headline": self.headline,
                "seconds": self.seconds, "provenance": self.provenance}
