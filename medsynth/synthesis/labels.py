"""New label maps from real ones: random, anatomically plausible spatial transforms.

A small random affine (rotation up to ~6 degrees, scaling up to 10%, a shift of a few voxels) and
a smooth elastic deformation (MONAI ``Rand3DElastic``/``Rand2DElastic``), resampled with
nearest neighbour so the result holds the same label values and no new ones. Label maps made
this way keep their anatomy's topology and proportions; an image generated for each gives new
(image, label) pairs for augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Rand2DElastic, Rand3DElastic


def deform_label(label: np.ndarray, seed: int, strength: float = 1.0) -> np.ndarray:
    """A randomly deformed copy of ``label`` (``(X, Y)`` or ``(X, Y, Z)`` integer map), same shape.

    Args:
        label: the real label map.
        seed: seeds the deformation (same seed, same map).
        strength: scales every deformation range (0: the label unchanged).
    """
    if strength == 0:
        return label.copy()
    if label.ndim == 3:
        transform = Rand3DElastic(sigma_range=(6.0, 8.0), magnitude_range=(60.0 * strength, 120.0 * strength),
                                  prob=1.0, rotate_range=(0.1 * strength,) * 3, scale_range=(0.1 * strength,) * 3,
                                  translate_range=(3.0 * strength,) * 3, mode="nearest", padding_mode="zeros")
    elif label.ndim == 2:
        transform = Rand2DElastic(spacing=(16, 16), magnitude_range=(0.5 * strength, 1.5 * strength), prob=1.0,
                                  rotate_range=0.1 * strength, scale_range=(0.1 * strength,) * 2,
                                  translate_range=(3.0 * strength,) * 2, mode="nearest", padding_mode="zeros")
    else:
        raise ValueError(f"label maps are 2D or 3D, got {label.ndim} dimensions")
    transform.set_random_state(seed)
    out = transform(torch.as_tensor(label[None], dtype=torch.float32))
    return np.rint(np.asarray(out[0])).astype(label.dtype)
