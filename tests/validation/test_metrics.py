"""Metrics with known answers: identical sets, disjoint sets, planted copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation import (
    density_coverage,
    frechet_distance,
    intensity_distance,
    kernel_inception_distance,
    memorization,
    ms_ssim_diversity,
    precision_recall,
)

rng = np.random.default_rng(0)
REAL = rng.normal(size=(200, 16))
SAME = rng.normal(size=(200, 16))  # another draw of the same distribution
FAR = rng.normal(size=(200, 16)) + 10.0


def test_identical_distributions_score_as_identical():
    assert frechet_distance(REAL, REAL) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(REAL, SAME) < 2.0  # finite-sample bias only
    kid, _ = kernel_inception_distance(REAL, SAME, subset_size=100)
    assert abs(kid) < 0.05
    assert precision_recall(REAL, REAL) == (1.0, 1.0)
    precision, recall = precision_recall(REAL, SAME)  # k=3 balls in 16-D miss some fresh draws
    assert precision > 0.7 and recall > 0.7
    density, coverage = density_coverage(REAL, SAME)
    assert 0.7 < density < 1.3 and coverage > 0.8


def test_frechet_distance_has_its_closed_form_and_copes_with_fewer_images_than_features():
    # fake = 2 * real + 3: the covariances commute and the formula reduces to
    # |mu_r - mu_f|^2 + tr(S) + tr(4S) - 2 tr(2S) = |mean(real) + 3|^2 + tr(S)
    expected = ((REAL.mean(axis=0) + 3) ** 2).sum() + np.trace(np.cov(REAL, rowvar=False))
    assert frechet_distance(REAL, 2 * REAL + 3) == pytest.approx(expected, rel=1e-9)
    few = REAL[:5]  # rank-deficient covariance (N < D): finite, symmetric, 0 on itself
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
    # exactly symmetric, though square roots of near-zero eigenvalues amplify rounding (one order
    # alone differed from the other by 2e-9 relative on an AMD EPYC)
    assert frechet_distance(few, SAME[:5]) == frechet_distance(SAME[:5], few)


def test_disjoint_distributions_are_far_apart():
    assert frechet_distance(REAL, FAR) > 1000 * max(frechet_distance(REAL, SAME), 0.1)
    assert kernel_inception_distance(REAL, FAR, subset_size=100)[0] > 100 * abs(
        kernel_inception_distance(REAL, SAME, subset_size=100)[0])
    assert precision_recall(REAL, FAR) == (0.0, 0.0)
    assert density_coverage(REAL, FAR) == (0.0, 0.0)


def test_mode_collapse_lowers_recall_and_coverage_not_precision():
    collapsed = REAL[:5].repeat(40, axis=0) + rng.normal(scale=0.01, size=(200, 16))
    precision, recall = precision_recall(REAL, collapsed)
    _, coverage = density_coverage(REAL, collapsed)
    assert precision > 0.9 and recall < 0.2 and coverage < 0.2


def test_a_planted_copy_of_a_training_image_is_flagged():
    train = rng.random((30, 1, 16, 16))
    fake = rng.random((10, 1, 16, 16))
    fake[3] = train[7] + rng.normal(scale=0.001, size=(1, 16, 16))
    result = memorization(train, fake)
    assert result.flagged.tolist() == [3] and result.nearest[3] == 7
    assert result.fraction_flagged == pytest.approx(0.1)


def test_intensity_distance_is_the_shift_between_histograms():
    values = rng.normal(size=5000)
    assert intensity_distance(values, values + 0.3) == pytest.approx(0.3, abs=1e-9)


def test_ms_ssim_diversity_is_one_for_copies_and_lower_for_different_images():
    image = torch.rand(1, 1, 64, 64)
    assert ms_ssim_diversity(image.repeat(3, 1, 1, 1)) == pytest.approx(1.0, abs=1e-4)
    assert ms_ssim_diversity(torch.rand(4, 1, 64, 64)) < 0.2
