"""Fidelity of restored images (denoise, super-resolve) against ground truth, and the classical baselines.

PSNR and SSIM use MONAI's metrics on images in [0, 1] (data range 1). PSNR can be restricted to
a mask (e.g. the head: background voxels are easy and inflate it). SSIM is MONAI's Gaussian-window
SSIM (11 voxels, sigma 1.5); a 3D slab thinner than the window is scored slice by slice along its
last axis. Baselines: non-local means (scikit-image) for denoising; for super-resolution, cubic
(2D models) or linear interpolation between thick-slice centres, by
:func:`medsynth.data.interpolate_slabs` (the interpolation that makes the models' condition).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

SSIM_WINDOW = 11


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


def non_local_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """The denoising baseline: scikit-image NLM on each last-axis slice (h = 0.8 sigma, fast mode)."""
    from skimage.restoration import denoise_nl_means

    slices = noisy[..., None] if noisy.ndim == 2 else noisy
    out = np.stack([denoise_nl_means(slices[..., k], h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                                     patch_distance=6) for k in range(slices.shape[-1])], axis=-1)
    return out[..., 0] if noisy.ndim == 2 else out.astype(np.float32)


