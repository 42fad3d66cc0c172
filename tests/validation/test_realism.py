"""Image-space measures of one synthetic set (intensity distances, diversity) with known answers, and the
utility segmenter. The feature-space measures are tested in test_unpaired and test_nearest_training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation.realism import ImageSet, diversity, intensity_distances, stack_images
from medsynth.validation.utility import real_subset, train_and_score
from tests.validation.test_features import blobs


@pytest.fixture(scope="module")
def real():
    images, labels = blobs(24, seed=1)
    return ImageSet(torch.stack(images), torch.stack(labels), [f"real{i}" for i in range(24)])


def test_a_set_against_itself_has_zero_intensity_distance(real):
    distances = intensity_distances(real, real, ["background", "disc", "ring"])
    assert set(distances) == {"all", "background", "disc", "ring"}
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in distances.values())


def test_a_different_set_is_far_in_intensity_and_more_diverse(real):
    noise = ImageSet(torch.rand_like(real.images), real.labels, real.names)
    assert intensity_distances(real, noise, None)["all"] > 0.2
    assert diversity(noise.images) < diversity(real.images)  # noise images are unlike one another
    assert diversity(real.images[[0, 0, 0]]) == pytest.approx(1.0, abs=1e-4)  # identical images: collapse


def test_stack_images_centres_every_image_on_one_grid():
    stacked = stack_images([np.ones((4, 6)), np.ones((8, 8))], (6, 6))
    assert stacked.shape == (2, 1, 6, 6)
    assert stacked[0, 0, 0].sum() == 0 and stacked[0, 0, 1].sum() == 6  # padded rows around a 4-row image


def test_the_segmenter_learns_and_real_subsets_are_evenly_spaced():
    images, labels = blobs(10, size=32, seed=3)
    pairs = ImageSet(torch.stack(images), torch.stack(labels), [str(i) for i in range(10)])
    held_images, held_labels = blobs(4, size=32, seed=4)
    held = ImageSet(torch.stack(held_images), torch.stack(held_labels), ["h"] * 4)
    untrained = train_and_score(pairs, held, None, num_classes=3, steps=0, seed=0)
    trained = train_and_score(pairs, held, None, num_classes=3, steps=40, seed=0)
    assert trained.shape == (2,) and trained.mean() > untrained.mean() + 0.2
    assert real_subset(10, 0.1) == [0, 9] and real_subset(10, 1.0) == list(range(10))
