"""All metrics of one synthetic set at once, with known answers, and the utility segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation.features import train_feature_network
from medsynth.validation.realism import ImageSet, memorization_check, realism_metrics, stack_images
from medsynth.validation.utility import real_subset, train_and_score
from tests.validation.test_features import blobs


@pytest.fixture(scope="module")
def sets():
    images, labels = blobs(24, seed=1)
    real = ImageSet(torch.stack(images), torch.stack(labels), [f"real{i}" for i in range(24)])
    extractor = train_feature_network(images, labels, num_classes=3, steps=10, batch_size=4, progress=False)
    return real, extractor


def test_a_set_against_itself_scores_as_identical(sets):
    real, extractor = sets
    metrics = realism_metrics(real, real, extractor, class_names=["background", "disc", "ring"])
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0 and metrics["coverage"] == 1.0
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in metrics["intensity_wasserstein"].values())
    assert set(metrics["intensity_wasserstein"]) == {"all", "background", "disc", "ring"}


def test_a_different_set_scores_far_apart(sets):
    real, extractor = sets
    noise = ImageSet(torch.rand_like(real.images), real.labels, real.names)
    same = realism_metrics(real, real.subset(range(12)), extractor)
    far = realism_metrics(real, noise, extractor)
    assert far["fid"] > 10 * max(same["fid"], 1e-3)
    assert far["precision"] == 0.0 and far["coverage"] == 0.0
    assert far["intensity_wasserstein"]["all"] > 0.2
    assert far["ms_ssim"] < same["ms_ssim"]  # noise images are unlike one another


def test_planted_copy_is_flagged_with_its_training_image(sets):
    real, _ = sets
    images, labels = blobs(6, seed=7)
    fake = ImageSet(torch.stack(images), torch.stack(labels), [f"fake{i}" for i in range(6)])
    fake.images[2] = real.images[5] + 0.001
    check = memorization_check(real, fake)
    assert check["flagged"] == 1 and check["closest"][0]["synthetic"] == "fake2"
    assert check["closest"][0]["train"] == "real5" and check["closest"][0]["ratio"] < 0.05


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
