"""Every distribution metric of one synthetic image set against real images, in one call.

Images are ``(N, 1, *spatial)`` tensors in [0, 1] on one grid (``stack_images`` brings
differently sized images onto one by centred padding/cropping); labels, when given, are integer
maps on the same grid. Used alike by ``medsynth validate`` (image folders) and ``medsynth
compare`` (models), so both report the same numbers for the same images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import ResizeWithPadOrCrop

from medsynth.validation.features import FeatureExtractor
from medsynth.validation.metrics import (
    density_coverage,
    frechet_distance,
    intensity_distance,
    kernel_inception_distance,
    memorization,
    ms_ssim_diversity,
    precision_recall,
)

#: at most this many images enter the all-pairs MS-SSIM (pairs grow quadratically)
DIVERSITY_IMAGES = 32


@dataclass
class ImageSet:
    """Images ``(N, 1, *spatial)`` in [0, 1], optional integer labels of the same shape, and names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int] | np.ndarray) -> ImageSet:
        indices = [int(i) for i in indices]
        return ImageSet(self.images[indices], None if self.labels is None else self.labels[indices],
                        [self.names[i] for i in indices])


def foreground_slices(image: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray | None, axis: int,
                      min_foreground: float) -> list[int]:
    """Indices along ``axis`` of the slices of a volume whose foreground (label > 0, else intensity > 0.05)
    covers at least ``min_foreground`` of the slice."""
    mask = np.asarray(label > 0) if label is not None else np.asarray(image > 0.05)
    return [k for k in range(mask.shape[axis]) if mask.take(k, axis).mean() >= min_foreground]


def common_shape(arrays: list[torch.Tensor | np.ndarray]) -> tuple[int, ...]:
    """The most frequent spatial shape among ``arrays`` (each ``(*spatial)``)."""
    return Counter(tuple(a.shape) for a in arrays).most_common(1)[0][0]


def stack_images(arrays: list[torch.Tensor | np.ndarray], shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, 1, *shape)``: each ``(*spatial)`` array centred, zero-padded or cropped to ``shape``."""
    fit = ResizeWithPadOrCrop(shape)
    return torch.stack([torch.as_tensor(fit(torch.as_tensor(np.asarray(a))[None])).float() for a in arrays])


def intensity_distances(real: ImageSet, synthetic: ImageSet, class_names: list[str] | None) -> dict[str, float]:
    """Wasserstein-1 distance of the intensity histograms, over all voxels and within each label class."""
    out = {"all": intensity_distance(real.images.numpy(), synthetic.images.numpy())}
    if real.labels is not None and synthetic.labels is not None and class_names:
        for value, name in enumerate(class_names):
            a = real.images[real.labels == value].numpy()
            b = synthetic.images[synthetic.labels == value].numpy()
            if a.size and b.size:
                out[name] = intensity_distance(a, b)
    return out


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise MS-SSIM of up to ``DIVERSITY_IMAGES`` images, evenly chosen (lower = more diverse)."""
    chosen = np.linspace(0, len(images) - 1, min(len(images), DIVERSITY_IMAGES)).round().astype(int)
    return ms_ssim_diversity(images[np.unique(chosen)], spatial_dims=images.ndim - 2)


def realism_metrics(real: ImageSet, synthetic: ImageSet, extractor: FeatureExtractor, *,
                    class_names: list[str] | None = None, real_features: np.ndarray | None = None) -> dict:
    """Realism (FID, KID, intensity histograms), coverage (precision/recall, density/coverage) and
    diversity (MS-SSIM among the synthetic images, next to the same among the real ones)."""
    if len(real) < 2 or len(synthetic) < 2:
        raise ValueError(f"realism needs at least 2 real and 2 synthetic images, got {len(real)} and {len(synthetic)}")
    if real.images.shape[1:] != synthetic.images.shape[1:]:
        raise ValueError(f"real and synthetic images differ in shape: {tuple(real.images.shape[1:])} vs "
                         f"{tuple(synthetic.images.shape[1:])}")
    x = extractor.extract(real.images) if real_features is None else real_features
    y = extractor.extract(synthetic.images)
    kid, kid_std = kernel_inception_distance(x, y)
    precision, recall = precision_recall(x, y)
    density, coverage = density_coverage(x, y)
    return {"n_real": len(real), "n_synthetic": len(synthetic), "fid": frechet_distance(x, y), "kid": kid,
            "kid_std": kid_std, "precision": precision, "recall": recall, "density": density, "coverage": coverage,
            "intensity_wasserstein": intensity_distances(real, synthetic, class_names),
            "ms_ssim": diversity(synthetic.images)}


def memorization_check(train: ImageSet, synthetic: ImageSet, threshold: float = 0.5, pairs: int = 4) -> dict:
    """Near-copy check in image space: each synthetic image's distance to its nearest training image,
    over that training image's distance to its own nearest other training image. ``closest``
    lists the ``pairs`` synthetic images with the lowest ratio and their training neighbours."""
    if train.images.shape[1:] != synthetic.images.shape[1:]:
        raise ValueError("training and synthetic images differ in shape")
    result = memorization(train.images.flatten(1).numpy(), synthetic.images.flatten(1).numpy(), threshold)
    order = np.argsort(result.ratio)[:pairs]
    return {"threshold": threshold, "fraction_flagged": result.fraction_flagged, "flagged": len(result.flagged),
            "n_synthetic": len(synthetic), "n_train": len(train), "median_ratio": float(np.median(result.ratio)),
            "min_ratio": float(result.ratio.min()),
            "closest": [{"synthetic": synthetic.names[i], "train": train.names[int(result.nearest[i])],
                         "synthetic_index": int(i), "train_index": int(result.nearest[i]),
                         "ratio": float(result.ratio[i])} for i in order]}
