"""Distribution metrics for synthetic images, on features ``(N, D)`` or images ``(N, C, *spatial)``.

Realism (Fréchet distance, KID, intensity-histogram Wasserstein distance), diversity (MS-SSIM
among samples), coverage (k-NN precision/recall, density/coverage) and memorization (distance
to the nearest training image relative to the training set's own nearest-neighbour spacing).
The feature network is the caller's choice; every function says what its number means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric
from scipy.stats import wasserstein_distance

Features = np.ndarray | torch.Tensor


def _features(x: Features) -> torch.Tensor:
    features = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {tuple(features.shape)}")
    return features


def frechet_distance(real: Features, fake: Features) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula),
    ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r^1/2 S_f S_r^1/2)^1/2)``.
    0 for identical distributions; biased upwards for small N (compare like with like).

    The matrix square roots are of symmetric positive semi-definite matrices, taken by
    eigendecomposition in float64 (negative round-off eigenvalues clipped to 0): stable for the
    rank-deficient covariances of small sets, with no dependence on ``scipy.linalg.sqrtm``. The
    cross term is the mean of its two equal forms (``S_r`` inside and ``S_f`` inside), so the
    distance is exactly symmetric: square roots of near-zero eigenvalues amplify rounding, which
    otherwise makes the two orders differ in the ninth digit on some CPUs.
    """
    x, y = _features(real).numpy(), _features(fake).numpy()
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    cross = (_trace_sqrt_product(cov_x, cov_y) + _trace_sqrt_product(cov_y, cov_x)) / 2
    value = float(((mean_x - mean_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * cross)
    return max(value, 0.0)


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """``tr((a^1/2 b a^1/2)^1/2)`` for symmetric positive semi-definite ``a`` and ``b``."""
    root = _psd_sqrt(a)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root @ b @ root), 0, None)).sum())


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def kernel_inception_distance(real: Features, fake: Features, subsets: int = 10,
                              subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, mean and std over
    random subsets. Unbiased, so it can be slightly negative; ~0 for identical distributions."""
    x, y = _features(real), _features(fake)
    size = min(subset_size or 1000, len(x), len(y))
    generator = torch.Generator().manual_seed(seed)
    dims = x.shape[1]
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=generator)[:size]]
        b = y[torch.randperm(len(y), generator=generator)[:size]]
        kxx, kyy, kxy = ((a @ a.T / dims + 1) ** 3, (b @ b.T / dims + 1) ** 3, (a @ b.T / dims + 1) ** 3)
        off = size * (size - 1)
        mmd = (kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off - 2 * kxy.mean()
        values.append(float(mmd))
    return float(np.mean(values)), float(np.std(values))


def _knn_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    distances = torch.cdist(features, features)
    return distances.topk(k + 1, largest=False).values[:, k]  # column 0 is the point itself


def precision_recall(real: Features, fake: Features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the fraction of fake samples inside the
    real manifold (union of k-NN balls), and of real samples inside the fake one. Both ~1 for
    identical sets, ~0 for disjoint ones."""
    x, y = _features(real), _features(fake)
    k = min(k, len(x) - 1, len(y) - 1)
    real_radius, fake_radius = _knn_radius(x, k), _knn_radius(y, k)
    between = torch.cdist(y, x)  # (fake, real)
    precision = (between <= real_radius[None]).any(1).double().mean()
    recall = (between.T <= fake_radius[None]).any(1).double().mean()
    return float(precision), float(recall)


def density_coverage(real: Features, fake: Features, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): density counts how many real k-NN balls hold each fake
    sample (1 on average for matching distributions, robust to outliers); coverage is the fraction of
    real samples whose ball holds at least one fake sample (mode coverage)."""
    x, y = _features(real), _features(fake)
    k = min(k, len(x) - 1)
    radius = _knn_radius(x, k)
    inside = torch.cdist(y, x) <= radius[None]  # (fake, real)
    density = inside.double().sum() / (k * len(y))
    coverage = inside.any(0).double().mean()
    return float(density), float(coverage)


@dataclass
class Memorization:
    """Per synthetic sample: ``ratio`` = distance to the nearest training sample / that training
    sample's distance to its own nearest other training sample. A ratio well below 1 means the
    synthetic sample sits closer to a training image than training images sit to each other."""

    ratio: np.ndarray
    nearest: np.ndarray  # index of the nearest training sample
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        return np.flatnonzero(self.ratio < self.threshold)

    @property
    def fraction_flagged(self) -> float:
        return float(len(self.flagged) / len(self.ratio))


def memorization(train: Features, fake: Features,
                 threshold: float = 0.5) -> Memorization:
    """Near-copy check of synthetic samples against the training set (images flattened, or features)."""
    x = _features(torch.as_tensor(np.asarray(train)).reshape(len(train), -1))
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64).reshape(len(fake), -1)
    spacing = _knn_radius(x, 1)
    distance, nearest = torch.cdist(y, x).min(1)
    ratio = distance / spacing[nearest].clamp(min=1e-12)
    return Memorization(ratio.numpy(), nearest.numpy(), threshold)


def intensity_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Wasserstein-1 distance between the intensity histograms of two sets of voxels (image units)."""
    return float(wasserstein_distance(np.ravel(real), np.ravel(fake)))


def ms_ssim_diversity(images: torch.Tensor, spatial_dims: int = 2, kernel_size: int = 7) -> float:
    """Mean MS-SSIM over all pairs of ``images`` ``(N, 1, *spatial)`` in [0, 1] (MONAI
    ``MultiScaleSSIMMetric``, fewer scales for small images). Lower means more diverse; 1 means all alike."""
    if len(images) < 2:
        raise ValueError("diversity needs at least two images")
    smallest = min(images.shape[2:])
    scales = max(1, min(5, int(np.log2(smallest / (kernel_size - 1)))))
    weights = [1.0 / scales] * scales
    metric = MultiScaleSSIMMetric(spatial_dims=spatial_dims, data_range=1.0, kernel_size=kernel_size,
                                  weights=weights)
    pairs = [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))]
    a = torch.stack([images[i] for i, _ in pairs])
    b = torch.stack([images[j] for _, j in pairs])
    return float(metric(a.float(), b.float()).mean())
