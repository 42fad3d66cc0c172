"""Realism in several feature spaces, and whether they rank the model families alike.

A ranking that holds in one feature space only may be a property of that network. Three spaces:

- ``trained``: medsynth's feature network, trained on the real training data (features.py);
- ``random``: the same architecture, randomly initialised (seeded) and never trained: it sees
  image statistics at several scales without anything learned from the data;
- ``handcrafted``: intensity histogram and percentiles, and GLCM texture properties
  (scikit-image) of the quantised image, with no network at all.

Agreement across spaces supports a ranking; it cannot show the features capture what matters
clinically (none is a pretrained medical network).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from skimage.feature import graycomatrix, graycoprops

from medsynth.validation.features import FeatureExtractor, FeatureNetwork

DEFAULT_CHANNELS = (16, 32, 64, 128)
GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HISTOGRAM_BINS = 16


@dataclass
class FeatureSpace:
    """``extract(images (N, 1, *spatial) in [0, 1]) -> (N, D)`` features, and what they are."""

    name: str
    description: str
    extract: Callable[[torch.Tensor], np.ndarray]


def random_network(spatial_dims: int, channels: tuple[int, ...] = DEFAULT_CHANNELS, seed: int = 0) -> FeatureExtractor:
    """medsynth's feature network with seeded random weights, untrained, in eval mode (BatchNorm with
    its initial running statistics: the identity). The global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = FeatureNetwork(spatial_dims, tuple(channels))
    return FeatureExtractor(network, {"kind": "random", "spatial_dims": spatial_dims, "channels": list(channels),
                                      "seed": seed})


def _glcm(quantised: np.ndarray, levels: int, distances: tuple[int, ...]) -> np.ndarray:
    """GLCM properties of one 2D image, averaged over 4 directions, without pairs that touch level 0."""
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    matrix = graycomatrix(quantised, distances, angles, levels=levels, symmetric=True)[1:, 1:]
    props = np.stack([graycoprops(matrix, p).mean(1) for p in GLCM_PROPERTIES])  # (props, distances)
    props[0] /= (levels - 2) ** 2  # contrast and dissimilarity into [0, 1] like the others
    props[1] /= levels - 2
    return props.ravel()


def texture_features(images: torch.Tensor, levels: int = 32, distances: tuple[int, ...] = (1, 2, 4)) -> np.ndarray:
    """Hand-crafted features of ``images`` ``(N, 1, *spatial)`` in [0, 1], one row per image.

    Intensity: a ``HISTOGRAM_BINS``-bin histogram of all voxels (fractions), the foreground
    fraction, and ``PERCENTILES`` of the foreground voxels. Texture: the image quantised into
    ``levels`` bins; the lowest bin is background, and pairs touching it are left out of the
    gray-level co-occurrence matrix, so texture describes tissue rather than how much air a slice
    holds; ``GLCM_PROPERTIES`` at each distance, averaged over 4 directions (3D: over axial
    slices, along the last axis). A slice without tissue pairs gives zeros (correlation 1).
    """
    if levels < 3:
        raise ValueError(f"levels must be at least 3 (background and two tissue levels), got {levels}")
    rows = []
    for image in images.detach().cpu().double().numpy():
        values = np.clip(image[0], 0, 1)
        quantised = np.minimum((values * levels).astype(np.uint8), levels - 1)
        foreground = values[quantised > 0]
        histogram = np.histogram(values, HISTOGRAM_BINS, range=(0, 1))[0] / values.size
        percentiles = np.percentile(foreground, PERCENTILES) if foreground.size else np.zeros(len(PERCENTILES))
        slices = [quantised] if quantised.ndim == 2 else [quantised[..., k] for k in range(quantised.shape[-1])]
        texture = np.mean([_glcm(s, levels, distances) for s in slices], axis=0)
        rows.append(np.concatenate([histogram, [foreground.size / values.size], percentiles, texture]))
    return np.asarray(rows)


def build_feature_spaces(trained: FeatureExtractor, spatial_dims: int = 2, *, seed: int = 0,
                         levels: int = 32) -> dict[str, FeatureSpace]:
    """The three spaces: ``trained`` (given), ``random`` (its architecture, seeded random weights;
    medsynth's default architecture when ``trained`` is a user's TorchScript network) and ``handcrafted``."""
    channels = tuple(trained.config.get("channels") or DEFAULT_CHANNELS)
    dims = trained.config.get("spatial_dims") or spatial_dims
    random = random_network(dims, channels, seed)
    return {
        "trained": FeatureSpace("trained", trained.description, trained.extract),
        "random": FeatureSpace("random", f"medsynth feature network ({dims}D, {sum(channels)} features) with random "
                               f"weights (seed {seed}), never trained", random.extract),
        "handcrafted": FeatureSpace("handcrafted", f"intensity histogram and percentiles, GLCM texture ({levels} "
                                    "gray levels, background excluded; scikit-image)",
                                    lambda images: texture_features(images, levels)),
    }


def standardize(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every set z-scored with the ``reference`` set's per-feature mean and std (features constant on
    it are only centred), so that no feature dominates a distance by its units (memorization, with
    the training set as reference). Not needed for ranking by KID within one space; a feature
    nearly constant on the reference makes any shift of it huge."""
    mean, std = reference.mean(0), reference.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return [(x - mean) / std for x in (reference, *others)]


def _value(entry: float | Mapping | object) -> tuple[float, float | None, float | None]:
    if isinstance(entry, Mapping):
        low, high = entry.get("ci95") or (None, None)
        return float(entry["value"]), low, high
    if hasattr(entry, "low"):
        return float(entry.value), float(entry.low), float(entry.high)
    return float(entry), None, None


def rank_agreement(values: Mapping[str, Mapping[str, float | Mapping | object]], *,
                   lower_is_better: bool = True) -> dict:
    """Rank the families in each feature space and say whether the spaces agree.

    ``values[space][family]`` is a number, an :class:`~medsynth.validation.unpaired.Interval` or a
    ``{"value", "ci95"}`` record. Returns ``rankings`` (best first, by value) and ``best`` per
    space; per pair of families, each space's ``order`` (the better family, or ``"tie"`` when the
    two intervals overlap); ``conflicts``, the pairs that one space orders one way and another
    space the other way (ties conflict with nothing); ``agree`` (no conflict) and
    ``same_ranking`` (identical rankings by value, intervals ignored).
    """
    parsed = {space: {family: _value(v) for family, v in per.items()} for space, per in values.items()}
    families = sorted({f for per in parsed.values() for f in per})
    sign = 1 if lower_is_better else -1
    rankings = {space: sorted(per, key=lambda f, per=per: sign * per[f][0]) for space, per in parsed.items()}
    pairs = []
    for a, b in combinations(families, 2):
        order = {}
        for space, per in parsed.items():
            if a not in per or b not in per:
                continue
            (va, la, ha), (vb, lb, hb) = per[a], per[b]
            overlap = None not in (la, ha, lb, hb) and la <= hb and lb <= ha
            order[space] = "tie" if overlap or va == vb else (a if sign * (va - vb) < 0 else b)
        decided = {o for o in order.values() if o != "tie"}
        pairs.append({"families": [a, b], "order": order, "conflict": len(decided) > 1})
    conflicts = [p for p in pairs if p["conflict"]]
    return {"rankings": rankings, "best": {space: r[0] for space, r in rankings.items() if r},
            "pairs": pairs, "conflicts": conflicts, "agree": not conflicts,
            "same_ranking": len({tuple(r) for r in rankings.values()}) <= 1}
