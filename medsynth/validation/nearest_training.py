"""Calibrated memorization: is a synthetic image closer to a training image than real images ever are?

For each synthetic image, the distance to its nearest training image is placed on the
distribution of the same distance for *held-out real images* (never trained on), which says how
close an honest new image of this anatomy comes to the training set by chance.

**Copy rule.** A synthetic sample is flagged as a copy when its nearest-training distance is
below ``SCALE`` (0.5) times the ``QUANTILE``-th percentile (5th) of the held-out real images'
nearest-training distances: closer than the closest few real images by a factor of two.

**Conditional models.** A sample made from a (deformed) training label map follows that map, so
it sits near the map's training image without copying it. With condition descriptors (e.g.
:func:`label_descriptor`, or one-hot codes for discrete conditions) the distances are taken
between *residuals*: features minus a ridge-regression prediction from the condition, fitted on
the training pairs (for one-hot codes, nearly the per-condition mean). What the condition
explains is removed; what remains (texture, anatomy the map does not fix) is what a copy repeats
and an honest sample draws afresh. Which space to trust depends on two sizes:

- raw features mistake label-following for copying when a deformed condition moves a sample
  less than real images differ from their nearest training image;
- residuals miss a copy when its condition was deformed more than the variation the condition
  leaves free (the copy then ignores its condition: label fidelity shows that). A sample
  flagged on residuals only repeats a training image's free part (its texture) under a new map.

Run both where in doubt. The prediction is linear in the descriptor. Distances are Euclidean in
the given space: standardize features of mixed units first (``feature_spaces.standardize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

QUANTILE = 5.0
SCALE = 0.5
RIDGE = 1e-3


def _matrix(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    values = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    values = np.ascontiguousarray(values.reshape(len(values), -1))
    if len(values) < 2 or not np.isfinite(values).all():
        raise ValueError(f"{name}: need at least 2 finite rows, got shape {values.shape}")
    return values


def label_descriptor(labels: torch.Tensor | np.ndarray, num_classes: int, grid: int = 4) -> np.ndarray:
    """``(N, (num_classes - 1) * grid^d)``: the fraction of each foreground class in each cell of a
    ``grid``-per-axis grid over integer label maps ``(N, 1, *spatial)`` (where the tissue is, coarsely)."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    one_hot = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).double()[:, 1:]
    pool = F.adaptive_avg_pool2d if labels.ndim == 4 else F.adaptive_avg_pool3d
    return pool(one_hot, grid).flatten(1).numpy()


def condition_residuals(train: np.ndarray, train_conditions: np.ndarray,
                        *others: tuple[np.ndarray, np.ndarray], ridge: float = RIDGE) -> list[np.ndarray]:
    """Features minus their prediction from the condition, for ``train`` and each ``(features, conditions)``.

    The prediction is a ridge regression of features on condition descriptors fitted on the
    training pairs (penalty ``ridge`` times the mean eigenvalue of the descriptors' scatter)."""
    f, c = _matrix(train, "training features"), _matrix(train_conditions, "training conditions")
    if len(f) != len(c):
        raise ValueError(f"{len(f)} training features but {len(c)} training conditions")
    f_mean, c_mean = f.mean(0), c.mean(0)
    scatter = (c - c_mean).T @ (c - c_mean)
    penalty = ridge * max(np.trace(scatter) / len(scatter), 1e-12)
    weights = np.linalg.solve(scatter + penalty * np.eye(len(scatter)), (c - c_mean).T @ (f - f_mean))
    out = []
    for features, conditions in ((f, c), *others):
        features, conditions = _matrix(features, "features"), _matrix(conditions, "conditions")
        if len(features) != len(conditions):
            raise ValueError(f"{len(features)} feature rows but {len(conditions)} condition rows")
        out.append(features - f_mean - (conditions - c_mean) @ weights)
    return out


def _nearest(points: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = torch.cdist(torch.from_numpy(points), torch.from_numpy(train))
    distance, index = distances.min(1)
    return distance.numpy(), index.numpy()


@dataclass
class CalibratedMemorization:
    """Per synthetic sample: ``distance`` to the nearest training image (``nearest``) and its
    ``percentile``, the fraction of held-out real images that lie nearer the training set (0: nearer
    than every one). ``held_distance`` is the calibration; ``threshold`` the copy rule's cut-off."""

    distance: np.ndarray
    nearest: np.ndarray
    percentile: np.ndarray
    held_distance: np.ndarray
    threshold: float
    space: str
    rule: str

    @property
    def flagged(self) -> np.ndarray:
        return np.flatnonzero(self.distance < self.threshold)

    @property
    def held_out_in_training(self) -> int:
        """Held-out images identical to a training image: the calibration is void when these are many."""
        return int((self.held_distance <= 1e-9).sum())

    @property
    def fraction_flagged(self) -> float:
        return float(len(self.flagged) / len(self.distance))

    def as_dict(self, pairs: int = 4) -> dict:
        """JSON summary: counts, the rule, the held-out distribution, and the ``pairs`` closest samples."""
        order = np.argsort(self.distance)[:pairs]
        held = self.held_distance
        return {"rule": self.rule, "space": self.space, "threshold": self.threshold,
                "flagged": len(self.flagged), "fraction_flagged": self.fraction_flagged,
                "n_synthetic": len(self.distance), "n_held_out": len(held),
                "held_out_distance": {"min": float(held.min()), "q05": float(np.percentile(held, 5)),
                                      "median": float(np.median(held))},
                "held_out_in_training": self.held_out_in_training,
                "median_distance": float(np.median(self.distance)),
                "closest": [{"synthetic_index": int(i), "train_index": int(self.nearest[i]),
                             "distance": float(self.distance[i]), "percentile": float(self.percentile[i])}
                            for i in order]}


def calibrated_memorization(train: np.ndarray | torch.Tensor, held: np.ndarray | torch.Tensor,
                            synthetic: np.ndarray | torch.Tensor, *,
                            conditions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                            quantile: float = QUANTILE, scale: float = SCALE,
                            ridge: float = RIDGE) -> CalibratedMemorization:
    """Nearest-training distances of ``synthetic`` and ``held`` (features ``(N, D)``, or images, flattened).

    ``conditions``: ``(train, held, synthetic)`` condition descriptors, one row per image; when
    given, distances are between condition residuals (:func:`condition_residuals`). A sample is a
    copy when its distance is below ``scale`` x the ``quantile``-th percentile of ``held``'s.
    """
    x, h, y = _matrix(train, "training"), _matrix(held, "held-out"), _matrix(synthetic, "synthetic")
    if not x.shape[1] == h.shape[1] == y.shape[1]:
        raise ValueError(f"feature dimensions differ: training {x.shape[1]}, held-out {h.shape[1]}, "
                         f"synthetic {y.shape[1]}")
    space = "features"
    if conditions is not None:
        train_c, held_c, synthetic_c = conditions
        x, h, y = condition_residuals(x, train_c, (h, held_c), (y, synthetic_c), ridge=ridge)
        space = "condition residuals"
    held_distance, _ = _nearest(h, x)
    distance, nearest = _nearest(y, x)
    threshold = float(scale * np.percentile(held_distance, quantile))
    percentile = np.searchsorted(np.sort(held_distance), distance, side="right") / len(held_distance)
    rule = (f"copy when the distance to the nearest training image ({space}) is below {scale:g} x the "
            f"{quantile:g}th percentile of held-out real images' nearest-training distances")
    return CalibratedMemorization(distance, nearest, percentile, held_distance, threshold, space, rule)
