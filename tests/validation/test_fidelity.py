"""PSNR/SSIM (MONAI) and the classical baselines, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.degradations import interpolate_slabs, thick_slices
from medsynth.validation.fidelity import nlm_rician, psnr, ssim

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
    assert psnr(nlm_rician(noisy, 0.05), clean) > psnr(noisy, clean) + 3
    # a scene constant through-plane: the volume NLM also averages the neighbouring slices' noise
    deep = np.repeat(clean[..., :1], 8, axis=-1)
    noisy = deep + rng.normal(0, 0.05, deep.shape)
    assert psnr(nlm_rician(noisy, 0.05, h=0.6, patch_distance=3, volume=True), deep) > \
        psnr(nlm_rician(noisy, 0.05, h=0.6, patch_distance=3), deep) + 1
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32), (4, 4, 16)).copy()
    _, low = thick_slices(ramp[None], 2, axis=-1, return_low_res=True)
    restored = interpolate_slabs(low[0], 2, 16, kind="linear")
    np.testing.assert_allclose(restored[..., 1:-1], ramp[..., 1:-1], atol=1e-5)  # linear data: exact inside


def test_bm4d_baseline_denoises_a_volume():
    pytest.importorskip("bm4d")
    from medsynth.validation.fidelity import bm4d_rician

    x = np.linspace(0, 1, 32)
    clean = np.repeat((np.outer(np.sin(3 * x), np.cos(2 * x)) * 0.4 + 0.5)[..., None], 8, axis=-1)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    assert psnr(bm4d_rician(noisy, 0.05), clean) > psnr(noisy, clean) + 6
    assert bm4d_rician(noisy[..., 0], 0.05).shape == (32, 32)  # a 2D image keeps its shape


def test_rician_bias_correction_removes_the_noise_floor():
    from medsynth.data.degradations import rician_noise
    from medsynth.validation.fidelity import rician_bias_corrected

    clean = np.zeros((64, 64, 4), np.float32)
    clean[16:48, 16:48] = 0.5
    noisy = rician_noise(clean[None], 0.05, np.random.default_rng(1))[0]
    background = noisy[:8, :8].mean()
    assert background == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.1)  # the Rayleigh floor
    # on the mean of many draws (what a smoother estimates), the correction brings the floor close to 0
    mean_square = np.mean([rician_noise(clean[None], 0.05, np.random.default_rng(s))[0] ** 2 for s in range(50)], 0)
    corrected = rician_bias_corrected(np.sqrt(mean_square), 0.05)
    assert corrected[:8, :8].mean() < 0.2 * background
    assert corrected[20:44, 20:44].mean() == pytest.approx(0.5, abs=0.01)


def test_head_regions_and_slice_scores_have_known_answers():
    from medsynth.validation.fidelity import head_box, head_mask, slice_scores

    clean = np.zeros((40, 40, 3), np.float32)
    clean[10:30, 12:28] = 0.8
    clean[18:22, 18:22] = 0.0  # a dark ventricle inside the head
    mask = head_mask(clean)
    assert mask[19, 19, 0] and not mask[2, 2, 0] and mask.sum() == 20 * 16 * 3
    rows, cols = head_box(mask)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (5, 35, 7, 33)
    scores = slice_scores(clean + 0.1 * mask, clean)
    assert scores["psnr"] == pytest.approx([20.0] * 3, abs=1e-4)  # error 0.1 on the head only
    assert len(scores["ssim"]) == 3 and all(s < 1 for s in scores["ssim"])
    assert slice_scores(clean, clean)["ssim"] == pytest.approx([1.0] * 3, abs=1e-5)
    with pytest.raises(ValueError, match="no head voxel"):
        slice_scores(np.zeros((8, 8, 2)), np.zeros((8, 8, 2)))
