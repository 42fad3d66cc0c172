"""Fidelity of restored images (denoise, super-resolve) against ground truth, and the classical baselines.

PSNR and SSIM use MONAI's metrics on images in [0, 1] (data range 1). SSIM is MONAI's
Gaussian-window SSIM (11 voxels, sigma 1.5). The regions of the benchmark figures are defined
once, here (:data:`REGIONS`, printed in every results table):

- PSNR over the **head** (:func:`head_mask`: voxels above 5% of the range, holes filled slice by
  slice, so dark CSF inside the head counts and the air around it does not);
- SSIM per axial slice (2D, for 2D and 3D models alike) inside the head's in-plane **bounding
  box**, widened by half a window so the head's edge is scored (:func:`slice_scores`). One value
  per slice is what the bootstrap over test slices resamples
  (:mod:`medsynth.validation.statistics`).

Baselines: non-local means with the Rician bias correction, BM3D (when the ``bm3d`` package is
installed), and for super-resolution the cubic spline between thick-slice centres
(:func:`medsynth.data.interpolate_slabs`, the interpolation that makes the models' condition).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

SSIM_WINDOW = 11
HEAD_THRESHOLD = 0.05
REGIONS = {"psnr": "PSNR (dB) over the head mask (voxels > 5% of the range, holes filled)",
           "ssim": "SSIM (2D, per axial slice) in the head's bounding box"}


def psnr(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB for data range 1, over ``mask`` voxels if given."""
    if mask is not None:
        mse = float(np.mean((np.asarray(estimate)[mask] - np.asarray(truth)[mask]) ** 2))
        return 10 * float(np.log10(1.0 / max(mse, 1e-12)))
    x, y = (torch.as_tensor(np.asarray(a), dtype=torch.float64)[None, None] for a in (estimate, truth))
    return float(PSNRMetric(max_val=1.0)(x, y).mean())


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    """MONAI SSIM of a 2D image or 3D volume; thin 3D slabs as the mean over their last-axis slices."""
    x, y = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (estimate, truth))
    if x.ndim == 3 and x.shape[-1] < SSIM_WINDOW:
        x, y = x.movedim(-1, 0)[:, None], y.movedim(-1, 0)[:, None]  # slices as a batch of 2D images
    else:
        x, y = x[None, None], y[None, None]
    return float(SSIMMetric(spatial_dims=x.ndim - 2, data_range=1.0, win_size=SSIM_WINDOW)(x, y).mean())


def head_mask(clean: np.ndarray) -> np.ndarray:
    """The head in a clean image in [0, 1]: voxels above :data:`HEAD_THRESHOLD`, holes filled in each
    last-axis slice (CSF and ventricles are dark but inside the head)."""
    from scipy.ndimage import binary_fill_holes

    mask = np.asarray(clean) > HEAD_THRESHOLD
    if mask.ndim == 2:
        return binary_fill_holes(mask)
    return np.stack([binary_fill_holes(mask[..., k]) for k in range(mask.shape[-1])], axis=-1)


def head_box(mask: np.ndarray) -> tuple[slice, slice]:
    """In-plane bounding box of ``mask`` over all its last-axis slices, widened by half an SSIM window."""
    flat = mask.any(axis=-1) if mask.ndim == 3 else mask
    if not flat.any():
        return slice(None), slice(None)
    margin = SSIM_WINDOW // 2
    box = []
    for axis in (0, 1):
        hits = np.nonzero(flat.any(axis=1 - axis))[0]
        box.append(slice(max(0, hits[0] - margin), min(flat.shape[axis], hits[-1] + 1 + margin)))
    return box[0], box[1]


def slice_scores(estimate: np.ndarray, clean: np.ndarray, mask: np.ndarray | None = None) -> dict[str, list[float]]:
    """PSNR (head mask) and SSIM (head bounding box) of each last-axis slice of a volume, as defined
    in :data:`REGIONS`: the per-item scores that the benchmark tables average and bootstrap."""
    estimate, clean = np.asarray(estimate, dtype=np.float32), np.asarray(clean, dtype=np.float32)
    if estimate.shape != clean.shape or clean.ndim != 3:
        raise ValueError(f"expected two volumes of one shape, got {estimate.shape} and {clean.shape}")
    mask = head_mask(clean) if mask is None else mask
    rows, cols = head_box(mask)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for k in range(clean.shape[-1]):
        if not mask[..., k].any():
            raise ValueError(f"slice {k} holds no head voxel; score slices that show the head")
        scores["psnr"].append(psnr(estimate[..., k], clean[..., k], mask[..., k]))
        scores["ssim"].append(ssim(estimate[rows, cols, k], clean[rows, cols, k]))
    return scores


def rician_bias_corrected(estimate: np.ndarray, sigma: float) -> np.ndarray:
    """Remove the Rician noise floor from a denoised magnitude image: ``sqrt(max(x^2 - 2 sigma^2, 0))``.

    A magnitude image's expected square is ``A^2 + 2 sigma^2``; subtracting ``2 sigma^2`` after
    smoothing is the standard correction (Gudbjartsson & Patz 1995; Manjón et al. 2008), without
    which any smoother leaves the dark background and CSF too bright.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    return np.sqrt(np.maximum(estimate**2 - 2.0 * sigma**2, 0.0)).astype(np.float32)


def _per_slice(denoise: Callable[[np.ndarray], np.ndarray], noisy: np.ndarray) -> np.ndarray:
    """``denoise`` applied to each last-axis slice of a volume (or to a 2D image), stacked back."""
    if noisy.ndim == 2:
        return denoise(noisy)
    return np.stack([denoise(noisy[..., k]) for k in range(noisy.shape[-1])], axis=-1)


def nlm_rician(noisy: np.ndarray, sigma: float, h: float = 0.8, patch_size: int = 5,
               patch_distance: int = 6, volume: bool = False) -> np.ndarray:
    """The denoising baseline a user would pick: non-local means (scikit-image, ``h`` in units of
    ``sigma``) followed by the Rician bias correction; per last-axis slice, or with ``volume`` over
    the whole 3D image at once (3D patches: the neighbouring slices take part)."""
    from skimage.restoration import denoise_nl_means

    def nlm(image: np.ndarray) -> np.ndarray:
        return denoise_nl_means(image, h=h * sigma, sigma=sigma, fast_mode=True, patch_size=patch_size,
                                patch_distance=patch_distance)

    out = nlm(noisy) if volume and noisy.ndim == 3 else _per_slice(nlm, noisy)
    return rician_bias_corrected(out, sigma)


def bm3d_rician(noisy: np.ndarray, sigma: float, strength: float = 1.0) -> np.ndarray | None:
    """BM3D (the ``bm3d`` package, per last-axis slice, noise level ``strength * sigma``) followed by
    the Rician bias correction; ``None`` when ``bm3d`` is not installed."""
    try:
        import bm3d
    except ImportError:
        return None
    out = _per_slice(lambda image: bm3d.bm3d(image.astype(np.float64), strength * sigma), noisy)
    return rician_bias_corrected(out, sigma)


def bm4d_rician(noisy: np.ndarray, sigma: float, strength: float = 1.0) -> np.ndarray | None:
    """BM4D (the ``bm4d`` package: BM3D's sibling for volumes, 3D blocks over the whole 3D image,
    noise level ``strength * sigma``) followed by the Rician bias correction; ``None`` when ``bm4d``
    is not installed."""
    try:
        import bm4d
    except ImportError:
        return None
    out = bm4d.bm4d(np.asarray(noisy, np.float64), strength * sigma).reshape(np.shape(noisy))  # 2D: (X, Y, 1) back
    return rician_bias_corrected(out, sigma)
