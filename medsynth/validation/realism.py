"""Image sets and the image-space measures of realism that need no feature network.

Images are ``(N, 1, *spatial)`` tensors in [0, 1] on one grid (``stack_images`` brings
differently sized images onto one by centred padding/cropping); labels, when given, are integer
maps on the same grid. Used alike by ``medsynth validate`` (image folders) and ``medsynth
compare`` (models); the feature-space measures both call are in :mod:`compare_measure`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import ResizeWithPadOrCrop

from medsynth.validation.metrics import intensity_distance, ms_ssim_diversity

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
