"""Intervals for headline figures: a two-level bootstrap over training seeds and test items.

A figure such as "PSNR of the denoiser on the test slab" varies with the training seed (the
model) and with the test items it is averaged over (slices or patches). Its 95% interval comes
from a hierarchical bootstrap: each replicate resamples the seeds with replacement, then the
items within each drawn seed, and averages. A comparison with a baseline is paired: the
difference is taken item by item (same slice, same noise draw) before resampling, so the interval
of the difference is much tighter than the two intervals side by side.

A target counts as met only when the lower bound of the difference's interval is above zero;
an interval that straddles zero means "not distinguishable" (:func:`verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval, over ``seeds`` x ``items`` values."""

    value: float
    low: float
    high: float
    seeds: int
    items: int

    def as_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high], "seeds": self.seeds, "items": self.items}


def _matrix(scores: Sequence[Sequence[float]]) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"expected scores as seeds x items, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores contain NaN or Inf")
    return values


def bootstrap(scores: Sequence[Sequence[float]], *, replicates: int = REPLICATES, seed: int = 0) -> Estimate:
    """Mean of ``scores`` (one row per training seed, one column per test item) with a 95% interval.

    One seed gives an interval over items only (it says nothing of training variance; the
    ``seeds`` field says how many there were).
    """
    values = _matrix(scores)
    rng = np.random.default_rng(seed)
    n_seeds, n_items = values.shape
    means = []
    block = max(1, 2_000_000 // (n_seeds * n_items))  # replicates per block: bounded memory for many items
    for start in range(0, replicates, block):
        count = min(block, replicates - start)
        seed_draws = rng.integers(0, n_seeds, size=(count, n_seeds))
        item_draws = rng.integers(0, n_items, size=(count, n_seeds, n_items))
        means.append(values[seed_draws[..., None], item_draws].mean(axis=(1, 2)))
    means = np.concatenate(means)
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(float(values.mean()), float(low), float(high), n_seeds, n_items)


def paired_difference(scores: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]] | Sequence[float], *,
                      replicates: int = REPLICATES, seed: int = 0) -> Estimate:
    """``scores - baseline`` item by item, bootstrapped like :func:`bootstrap`.

    ``baseline`` is either seeds x items like ``scores`` (a baseline that varies with the seed,
    e.g. the same noise draw per seed) or one row of items shared by every seed.
    """
    values = _matrix(scores)
    reference = np.asarray(baseline, dtype=np.float64)
    if reference.ndim == 1:
        reference = np.broadcast_to(reference, values.shape)
    if reference.shape != values.shape:
        raise ValueError(f"baseline shape {reference.shape} does not pair with scores {values.shape}")
    return bootstrap(values - reference, replicates=replicates, seed=seed)


def verdict(difference: Estimate, higher_is_better: bool = True) -> str:
    """``better``, ``worse`` or ``not distinguishable`` from the interval of a paired difference."""
    low, high = (difference.low, difference.high) if higher_is_better else (-difference.high, -difference.low)
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "not distinguishable"
