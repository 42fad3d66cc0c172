"""Calibrated memorization: planted copies are flagged, honest samples and label-following samples are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medsynth.validation.nearest_training import calibrated_memorization, condition_residuals, label_descriptor

TRAIN = np.random.default_rng(0).normal(size=(200, 32))
HELD = np.random.default_rng(1).normal(size=(50, 32))


def test_planted_exact_and_near_copies_are_flagged_and_fresh_draws_are_not():
    rng = np.random.default_rng(2)
    synthetic = rng.normal(size=(40, 32))
    synthetic[[3, 11, 25]] = TRAIN[[7, 50, 120]]
    synthetic[30] = TRAIN[90] + rng.normal(scale=0.05, size=32)  # a near copy
    result = calibrated_memorization(TRAIN, HELD, synthetic)
    assert result.flagged.tolist() == [3, 11, 25, 30]
    assert result.nearest[[3, 11, 25, 30]].tolist() == [7, 50, 120, 90]
    assert result.fraction_flagged == pytest.approx(0.1) and result.space == "features"
    assert result.percentile[[3, 11, 25, 30]].max() == 0  # nearer the training set than every held-out image
    summary = result.as_dict(pairs=4)
    assert summary["flagged"] == 4 and {p["synthetic_index"] for p in summary["closest"]} == {3, 11, 25, 30}
    assert summary["held_out_distance"]["q05"] == pytest.approx(2 * summary["threshold"])
    assert "5th percentile" in summary["rule"]


def test_held_out_real_images_themselves_are_not_flagged():
    result = calibrated_memorization(TRAIN, HELD[:25], HELD[25:])
    assert len(result.flagged) == 0 and 0 < np.median(result.percentile) < 1


def test_planted_copies_among_images():
    rng = np.random.default_rng(3)
    images = torch.as_tensor(gaussian_filter(rng.random((60, 1, 24, 24)), (0, 0, 1, 1)), dtype=torch.float32)
    train, held, fresh = images[:30], images[30:45], images[45:]
    noise = 0.01 * torch.randn(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    synthetic = torch.cat([fresh, train[4:5], train[9:10] + noise])
    result = calibrated_memorization(train, held, synthetic)  # images flattened
    assert result.flagged.tolist() == [15, 16] and result.nearest[[15, 16]].tolist() == [4, 9]


def _conditional(conditions: np.ndarray, noise: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return conditions @ structure + noise


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_label_following_is_not_flagged_but_copying_is_once_the_condition_is_removed(seed: int):
    """Features = what the condition fixes (linear in it, large) + what it leaves free (small noise).
    Honest samples follow slightly deformed training conditions with fresh noise; copies repeat
    the training image of the source condition."""
    rng = np.random.default_rng(seed)
    structure = 5 * rng.normal(size=(4, 32))
    c_train, c_held = rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    train = _conditional(c_train, 0.3 * rng.normal(size=(200, 32)), structure)
    held = _conditional(c_held, 0.3 * rng.normal(size=(50, 32)), structure)
    sources = rng.integers(0, 200, 30)
    c_synth = c_train[sources] + 0.005 * rng.normal(size=(30, 4))  # deformed training conditions
    honest = _conditional(c_synth, 0.3 * rng.normal(size=(30, 32)), structure)
    copies = train[sources[:5]] + 0.01 * rng.normal(size=(5, 32))
    synthetic = np.concatenate([honest, copies])
    c_all = np.concatenate([c_synth, c_synth[:5]])

    confounded = calibrated_memorization(train, held, synthetic)  # raw features: following looks like copying
    assert confounded.fraction_flagged > 0.9
    result = calibrated_memorization(train, held, synthetic, conditions=(c_train, c_held, c_all))
    assert result.flagged.tolist() == [30, 31, 32, 33, 34] and result.space == "condition residuals"
    assert result.nearest[30:].tolist() == sources[:5].tolist()


def test_one_hot_conditions_remove_the_per_condition_mean():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(3), 20)
    features = 10.0 * groups[:, None] + rng.normal(size=(60, 2))
    one_hot = np.eye(3)[groups]
    means = np.stack([features[groups == g].mean(0) for g in range(3)])
    (residuals,) = condition_residuals(features, one_hot, ridge=1e-8)
    np.testing.assert_allclose(residuals, features - means[groups], atol=1e-6)
    (shrunk,) = condition_residuals(features, one_hot)  # the default penalty shrinks the means a little
    np.testing.assert_allclose(shrunk, features - means[groups], atol=0.05)


def test_label_descriptor_is_the_coarse_layout_of_each_class():
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[0, 0, :4, :4] = 1
    labels[0, 0, 4:, 4:] = 2
    descriptor = label_descriptor(labels, num_classes=3, grid=2)
    np.testing.assert_allclose(descriptor, [[1, 0, 0, 0, 0, 0, 0, 1]])
    assert label_descriptor(torch.zeros(2, 1, 4, 4, 4, dtype=torch.long), 3, grid=2).shape == (2, 16)


def test_images_rendered_from_shifted_training_label_maps_are_not_copies():
    """Images are their label map rendered with fresh noise; honest samples render a training map
    shifted by one pixel, copies repeat the training image itself."""
    rng = np.random.default_rng(8)
    grid = np.stack(np.meshgrid(np.arange(24), np.arange(24), indexing="ij"))

    def label_maps(count: int) -> np.ndarray:
        maps = []
        for _ in range(count):
            radius = np.sqrt(((grid - rng.uniform(7, 17, (2, 1, 1))) ** 2).sum(0))
            inner = rng.uniform(3, 5)
            maps.append(np.where(radius < inner, 1, np.where(radius < inner + 3, 2, 0)))
        return np.stack(maps)[:, None]

    def render(maps: np.ndarray) -> np.ndarray:
        return np.choose(maps, [0.0, 0.9, 0.5]) + rng.normal(0, 0.05, maps.shape)

    train_maps, held_maps = label_maps(200), label_maps(40)
    train, held = render(train_maps), render(held_maps)
    sources = rng.integers(0, 200, 20)
    shifted = np.roll(train_maps[sources], 1, axis=-1)
    synthetic = np.concatenate([render(shifted), train[sources[:5]]])
    result = calibrated_memorization(train, held, synthetic)
    assert result.flagged.tolist() == list(range(20, 25))
    assert result.nearest[20:].tolist() == sources[:5].tolist()
