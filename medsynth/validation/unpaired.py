"""Unpaired realism with its uncertainty: KID with a 95% interval, FID only where it is defined.

Both compare two *independent* sets of features ``(N, D)``: real images and synthetic images made
from conditions the real set does not share. Paired sets (synthetic images made from the real
images' own label maps) reward following the label, not realism; nothing here can detect that.

Every headline figure goes to ``metrics.json`` as ``{"value": v, "ci95": [lo, hi]}`` (:func:`as_ci95`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medsynth.validation.metrics import Features, frechet_distance

REPLICATES = 1000
LEVEL = 0.95
#: fewer images than this per set leave too few distinct pairs for a bootstrap of KID
MIN_IMAGES = 5


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval; ``method`` says how the interval was made."""

    value: float
    low: float
    high: float
    method: str = ""

    def as_dict(self) -> dict:
        return as_ci95(self)

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high


def as_ci95(estimate: Interval | Mapping | Sequence[float] | object) -> dict:
    """``{"value": v, "ci95": [lo, hi]}`` (the ``metrics.json`` record) of an :class:`Interval`, a
    ``statistics.Estimate`` (anything with ``value``, ``low``, ``high``), such a record itself, or a
    ``(value, low, high)`` triple."""
    if isinstance(estimate, Mapping):
        value, (low, high) = estimate["value"], estimate["ci95"]
    elif isinstance(estimate, Sequence | np.ndarray):
        value, low, high = estimate
    else:
        value, low, high = estimate.value, estimate.low, estimate.high
    return {"value": float(value), "ci95": [float(low), float(high)]}


def format_ci95(estimate: Interval | Mapping | Sequence[float] | object, digits: int = 3) -> str:
    """``value [low, high]`` of anything :func:`as_ci95` takes, to ``digits`` significant digits."""
    record = as_ci95(estimate)
    low, high = record["ci95"]
    return f"{record['value']:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def _array(x: Features, name: str) -> np.ndarray:
    features = np.ascontiguousarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if features.ndim != 2 or len(features) < MIN_IMAGES:
        raise ValueError(f"{name} features must be (N >= {MIN_IMAGES}, D), got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} features contain NaN or Inf")
    return features


def _within(weights: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Mean kernel value over the pairs of a resampled set that are two different images.

    ``weights`` ``(B, n)`` counts how often each image was drawn; pairs of an image with itself
    (its own copies included) are left out, so unit weights give the unbiased within-set term."""
    total = ((weights @ kernel) * weights).sum(1) - (weights**2) @ np.diag(kernel)
    count = weights.sum(1) ** 2 - (weights**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _cross(wx: np.ndarray, kernel: np.ndarray, wy: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Weighted mean of ``kernel`` over real-synthetic pairs, leaving out the pairs ``same`` marks."""
    total = ((wx @ kernel) * wy).sum(1)
    count = wx.sum(1) * wy.sum(1)
    if same.any():
        total = total - ((wx @ np.where(same, kernel, 0.0)) * wy).sum(1)
        count = count - ((wx @ same.astype(np.float64)) * wy).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _mmd2(kernels: tuple[np.ndarray, np.ndarray, np.ndarray], same: np.ndarray, wx: np.ndarray,
          wy: np.ndarray) -> np.ndarray:
    kxx, kyy, kxy = kernels
    return _within(wx, kxx) + _within(wy, kyy) - 2 * _cross(wx, kxy, wy, same)


def kid_interval(real: Features, fake: Features, *, replicates: int = REPLICATES, seed: int = 0) -> Interval:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / D + 1)^3`` on all images,
    with a 95% percentile-bootstrap interval.

    Each replicate resamples the real and the synthetic images with replacement (independently)
    and recomputes the unbiased estimate, leaving out pairs of an image with a copy of itself (a
    plain bootstrap would count them and bias KID upwards). A synthetic image identical to a real
    one is treated alike (its pair with that real image is left out of the cross term), so a set
    compared with itself scores 0 rather than below 0. ~0 (the interval holding 0) for two draws
    of one distribution; > 0 with the interval above 0 when they differ. The interval is
    conservative (wider than needed) when the distributions are equal. It covers the choice of
    images, not of the feature network, and says nothing of whether the sets are paired.
    """
    x, y = _array(real, "real"), _array(fake, "synthetic")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and synthetic features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    dims = x.shape[1]
    kernels = tuple((a @ b.T / dims + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    tolerance = 1e-6 * (1 + max(np.abs(x).max(), np.abs(y).max()))  # identical up to rounding
    same = (torch.cdist(torch.from_numpy(x), torch.from_numpy(y), p=float("inf")) <= tolerance).numpy()
    value = float(_mmd2(kernels, same, np.ones((1, len(x))), np.ones((1, len(y))))[0])
    rng = np.random.default_rng(seed)
    estimates = []
    block = max(1, 4_000_000 // (len(x) + len(y)))
    for start in range(0, replicates, block):
        count = min(block, replicates - start)
        wx = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=count).astype(np.float64)
        wy = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=count).astype(np.float64)
        estimates.append(_mmd2(kernels, same, wx, wy))
    alpha = (1 - LEVEL) / 2
    low, high = np.nanquantile(np.concatenate(estimates), [alpha, 1 - alpha])
    return Interval(value, float(low), float(high),
                    f"percentile bootstrap over images ({replicates} replicates, real and synthetic resampled "
                    "independently, self-pairs left out)")


def fid_check(real: Features, fake: Features) -> dict:
    """FID with a validity flag: ``{"value", "valid", "reason", "n_real", "n_synthetic", "dims"}``.

    A sample covariance of N feature vectors has rank at most N - 1, so FID's covariances are full
    rank only when both sets hold more images than the feature dimension (N >= D + 1). Below that
    FID is still computed but ``valid`` is False: it is dominated by small-N bias, moves with N,
    and cannot rank models. (FID extrapolated to infinite N, Chong & Forsyth 2020, assumes the
    1/N behaviour of the full-rank regime, so it does not rescue this case and is not offered.)
    Valid or not, FID has no interval here; KID (:func:`kid_interval`) is the figure with one.
    """
    x, y = _array(real, "real"), _array(fake, "synthetic")
    n, dims = min(len(x), len(y)), x.shape[1]
    valid = n > dims
    reason = "" if valid else (f"N={n} <= D={dims}: covariance rank-deficient (rank <= {n - 1}); "
                               f"biased, needs N >= {dims + 1}")
    value = frechet_distance(x, y)
    return {"value": value, "valid": valid, "reason": reason, "n_real": len(x),
            "n_synthetic": len(y), "dims": dims}
