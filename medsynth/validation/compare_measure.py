"""The measurements of ``medsynth compare`` on sets already made: realism in three feature spaces,
diversity, calibrated memorization, and the costs read from each run.

Every function returns a typed record of :mod:`~medsynth.validation.compare_results` (its
``as_dict`` is the ``metrics.json`` form).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

from medsynth.validation.compare_results import (
    Budget,
    FlaggedShare,
    Memorization,
    Realism,
    RunRecord,
    SetRealism,
    SpaceRealism,
    Stability,
)
from medsynth.validation.feature_spaces import FeatureSpace, rank_agreement, standardize
from medsynth.validation.features import FeatureExtractor
from medsynth.validation.mode_collapse import DiversityCheck, diversity_check
from medsynth.validation.nearest_training import calibrated_memorization, label_descriptor
from medsynth.validation.realism import ImageSet
from medsynth.validation.unpaired import fid_check, kid_interval

#: the reference row of the realism table: real training slices against the held-out real slices
REAL_TRAINING = "real training slices"


def realism(spaces: dict[str, FeatureSpace], held: ImageSet, train: ImageSet | None,
            synthetic: dict[str, ImageSet]) -> Realism:
    """KID (95% interval) and FID (with its validity flag) of each synthetic set against the held-out
    real images, in every feature space, beside the same for the real training slices (when given:
    the reference a synthetic set can hope to reach); and whether the spaces rank the families alike
    (``feature_spaces.rank_agreement`` on KID)."""
    out: dict[str, SpaceRealism] = {}
    for name, space in spaces.items():
        real = space.extract(held.images)
        measured = {}
        for label, images in {**synthetic, **({} if train is None else {REAL_TRAINING: train})}.items():
            fake = space.extract(images.images)
            measured[label] = SetRealism(kid_interval(real, fake), fid_check(real, fake))
        out[name] = SpaceRealism(space.description, measured, measured.pop(REAL_TRAINING, None))
    agreement = rank_agreement({space: {f: r.kid for f, r in entry.families.items()} for space, entry in out.items()})
    return Realism(out, agreement, len(held), {name: len(images) for name, images in synthetic.items()})


def diversity(groups: torch.Tensor, held: ImageSet) -> DiversityCheck:
    """``mode_collapse.diversity_check`` of ``groups`` ``(C, K, 1, *spatial)`` beside the held-out real images."""
    return diversity_check(groups, held.images)


def flagged_interval(flagged: int, total: int) -> FlaggedShare:
    """The share of flagged samples with its exact (Clopper-Pearson) 95% binomial interval."""
    interval = binomtest(flagged, total).proportion_ci(0.95, method="exact")
    return FlaggedShare(flagged, total, float(interval.low), float(interval.high))


def memorization(extractor: FeatureExtractor, train: ImageSet, held: ImageSet, synthetic: ImageSet,
                 num_classes: int) -> Memorization:
    """Calibrated memorization of ``synthetic`` in the trained feature space (z-scored on the training
    features) and, when all three sets have label maps, on its condition residuals (the label-map
    descriptor's ridge prediction removed); each space's flagged share with an exact 95% interval."""
    x, h, y = standardize(*(extractor.extract(s.images) for s in (train, held, synthetic)))
    results = {"features": calibrated_memorization(x, h, y)}
    if num_classes > 1 and all(s.labels is not None for s in (train, held, synthetic)):
        conditions = tuple(label_descriptor(s.labels, num_classes) for s in (train, held, synthetic))
        results["residuals"] = calibrated_memorization(x, h, y, conditions=conditions)
    shares = {space: flagged_interval(len(r.flagged), len(r.distance)) for space, r in results.items()}
    return Memorization(results, shares, list(synthetic.names), list(train.names))


def _log_columns(run: Path) -> dict[str, np.ndarray]:
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")]) for key in rows[0]}


def loss_curves(run: Path) -> dict[str, np.ndarray]:
    """The run's ``log.csv`` as columns (for the loss figure)."""
    return _log_columns(run)


def stability(run: Path, window: int = 10) -> Stability:
    """Loss curves' spread: for each logged loss, the coefficient of variation (std / |mean|) of its
    running mean over ``window`` logged values, in the second half of training. Smoothing removes
    the step-to-step noise of the objective itself (diffusion's random timesteps), leaving swings
    and drifts; the first logged loss is the headline value."""
    columns = _log_columns(run)
    losses = [k for k in columns if k.startswith("loss")]
    out = {}
    for key in losses:
        values = columns[key][len(columns[key]) // 2:]
        if len(values) > window:
            values = np.convolve(values, np.ones(window) / window, mode="valid")
        out[key] = float(values.std() / max(abs(values.mean()), 1e-12)) if len(values) > 1 else None
    return Stability(out, losses[0] if losses else None)


def run_record(run: Path, exact: bool) -> RunRecord:
    """The run with its training wall time, steps, speed, memory and parameters from ``summary.json``."""
    path = run / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    return RunRecord(str(run), exact, summary.get("seconds_total"), summary.get("steps"),
                     summary.get("steps_per_second"), summary.get("peak_memory_mb"), summary.get("parameters"))


def budget(train_seconds: dict[str, float | None], tolerance: float = 0.1) -> Budget:
    """Are the families' training wall times matched? ``ratio`` = slowest / fastest; ``matched`` when
    it is within ``tolerance`` (10%); ``statement`` says the ratio in words when it is not."""
    known = {name: s for name, s in train_seconds.items() if s}
    if len(known) < 2:
        return Budget(train_seconds, "training wall times are not known for every family (a run without summary.json)")
    slow, fast = max(known, key=known.get), min(known, key=known.get)
    ratio = known[slow] / known[fast]
    matched = ratio <= 1 + tolerance
    statement = (f"training wall times are matched within {tolerance:.0%} (ratio {ratio:.2f})" if matched else
                 f"training budgets are NOT matched: {slow} trained {ratio:.2f}x as long as {fast} "
                 f"({known[slow]:.3g} s vs {known[fast]:.3g} s); weigh every comparison by that")
    return Budget(train_seconds, statement, ratio, slow, fast, matched, tolerance)
