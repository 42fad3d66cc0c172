"""PSNR/SSIM (MONAI) and the classical baselines, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.degradations import interpolate_slabs, thick_slices
from medsynth.validation.fidelity import non_local_means, psnr, ssim

rng = np.random.default_rng(0)


def test_psnr_of_a_constant_error_and_within_a_mask():
    truth = rng.random((32, 32))
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-6)
    mask = np.zeros_like(truth, dtype=bool)
    mask[:8] = True
    worse_outside = truth + np.where(mask, 0.01, 0.5)
    assert psnr(worse_outside, truth, mask) == pytest.approx(40.0, abs=1e-6)


def test_ssim_is_one_for_identical_images_and_lower_for_noisy_ones():
    image = np.clip(rng.normal(0.5, 0.1, (32, 32, 24)), 0, 1)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-5)
    assert ssim(image[..., :6], image[..., :6]) == pytest.approx(1.0, abs=1e-5)  # thin slab: slice by slice
    assert ssim(image + rng.normal(0, 0.2, image.shape), image) < 0.6


def test_baselines_do_what_they_claim():
    x = np.linspace(0, 1, 64)
    clean = np.tile(np.outer(np.sin(3 * x), np.cos(2 * x))[..., None] * 0.4 + 0.5, (1, 1, 3))
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    assert psnr(non_local_means(noisy, 0.05), clean) > psnr(noisy, clean) + 3
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32), (4, 4, 16)).copy()
    _, low = thick_slices(ramp[None], 2, axis=-1, return_low_res=True)
    restored = interpolate_slabs(low[0], 2, 16, kind="linear")
    np.testing.assert_allclose(restored[..., 1:-1], ramp[..., 1:-1], atol=1e-5)  # linear data: exact inside
