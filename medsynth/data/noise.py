"""Noise statistics of a single scan: its noise level, and the Rician mean of magnitude MR undone.

Self-supervised denoising (``denoise --self``) learns the *expected* noisy value of each voxel.
For magnitude MR that expectation is the Rician mean, which lies above the true signal where the
signal is weak (``sigma * sqrt(pi / 2)`` over air instead of 0). :func:`rician_mean_inverse` maps
it back to the signal; it needs the noise level, which :func:`estimate_noise_sigma` measures on
the scan itself.
"""

from __future__ import annotations

import numpy as np
from scipy.special import i0e, i1e

#: ratio A / sigma beyond which the Rician mean is sqrt(A^2 + sigma^2) to within 1e-6 of sigma
_HIGH_SNR = 40.0


def rician_mean(signal: np.ndarray, sigma: float) -> np.ndarray:
    """Expected magnitude of a Rician variable with signal ``signal`` and Gaussian noise ``sigma``:
    ``sigma * sqrt(pi / 2) * L_1/2(-A^2 / (2 sigma^2))``, with scaled Bessel functions (no overflow)."""
    nu = (np.asarray(signal, dtype=np.float64) / sigma) ** 2 / 2.0
    laguerre = (1.0 + nu) * i0e(nu / 2.0) + nu * i1e(nu / 2.0)
    return sigma * np.sqrt(np.pi / 2.0) * laguerre


def rician_mean_inverse(mean: np.ndarray, sigma: float) -> np.ndarray:
    """The signal whose Rician mean is ``mean`` (inverse of :func:`rician_mean`; 0 at or below the
    noise floor ``sigma * sqrt(pi / 2)``), float32 with the shape of ``mean``."""
    mean = np.asarray(mean, dtype=np.float64)
    if sigma <= 0:
        return mean.astype(np.float32)
    table = np.linspace(0.0, _HIGH_SNR, 4001) * sigma
    means = rician_mean(table, sigma)
    out = np.interp(mean, means, table, left=0.0, right=np.nan)
    high = np.isnan(out)  # beyond the table: the high-SNR form
    out[high] = np.sqrt(np.maximum(mean[high] ** 2 - sigma**2, 0.0))
    return out.astype(np.float32)


def estimate_noise_sigma(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of white noise in ``image`` (2D or 3D), from the median absolute diagonal
    second difference within ``mask`` (default: everywhere).

    ``(x[i, j] - x[i+1, j] - x[i, j+1] + x[i+1, j+1]) / 2`` removes smooth structure and keeps white
    noise at its own standard deviation; the median (times 1.4826) ignores edges. Over the head of
    a magnitude MR image, where the signal is well above the noise, Rician noise is close to
    Gaussian with this ``sigma``. Correlated noise (CT) is underestimated.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
        mask = None if mask is None else np.asarray(mask)[..., None]
    diagonal = (x[:-1, :-1] - x[1:, :-1] - x[:-1, 1:] + x[1:, 1:]) / 2.0
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        diagonal = diagonal[m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:]]
    diagonal = diagonal.ravel()
    if diagonal.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(diagonal - np.median(diagonal))))


__all__ = ["estimate_noise_sigma", "rician_mean", "rician_mean_inverse"]
