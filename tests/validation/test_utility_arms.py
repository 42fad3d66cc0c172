"""The utility study's non-generative arms: classical augmentation keeps pairs aligned, domain
randomisation paints the label map it returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation.realism import ImageSet
from medsynth.validation.utility_arms import (
    augmented,
    augmented_draw,
    classical_augmentation,
    randomised_draw,
    randomised_image,
)
from tests.validation.test_features import blobs

_, LABELS = blobs(6, size=32, seed=3)


def explained(image: np.ndarray, label: np.ndarray) -> float:
    """Share of the image's variance explained by the class of each pixel (correlation ratio eta^2)."""
    means = np.zeros(int(label.max()) + 1)
    for k in np.unique(label):
        means[k] = image[label == k].mean()
    return 1 - ((image - means[label]) ** 2).mean() / image.var()


def test_randomised_image_without_extras_is_one_distinct_intensity_per_class():
    label = LABELS[0][0].numpy()
    image, out = randomised_image(label, np.random.default_rng(0), num_classes=3, deform=0, max_std=0, max_blur=0,
                                  max_bias=0, max_gamma=0, max_noise=0)
    assert image.shape == label.shape and image.dtype == np.float32 and np.array_equal(out, label)
    values = [np.unique(image[label == k]) for k in range(3)]
    assert all(len(v) == 1 for v in values) and len({float(v[0]) for v in values}) == 3
    assert image.min() == 0 and image.max() == 1  # rescaled to [0, 1]


def test_randomised_images_follow_their_returned_label_map_and_vary_in_contrast():
    label, other = LABELS[0][0].numpy(), LABELS[1][0].numpy()
    follows, unrelated, orders = [], [], set()
    for seed in range(20):
        image, out = randomised_image(label, np.random.default_rng(seed), num_classes=3)
        assert image.shape == label.shape and 0 <= image.min() and image.max() <= 1
        assert (out != label).any()  # deformed by default ...
        assert (out == label).mean() > 0.8  # ... mildly
        follows.append(explained(image, out))
        unrelated.append(explained(image, other))
        orders.add(tuple(np.argsort([image[out == k].mean() for k in range(3)])))
    assert np.mean(follows) > 0.5 and np.mean(follows) > np.mean(unrelated) + 0.3
    assert len(orders) >= 4  # the class contrast is drawn anew per image
    again, _ = randomised_image(label, np.random.default_rng(3), num_classes=3)
    first, _ = randomised_image(label, np.random.default_rng(3), num_classes=3)
    assert np.array_equal(again, first)


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("dims", [2, 3])
def test_classical_augmentation_moves_image_and_label_together(dims):
    _, labels = blobs(4, dims, size=32 if dims == 2 else 16, seed=5)
    transform = classical_augmentation(dims, spatial_prob=1.0, intensity_prob=0.0)
    aligned, control, unmoved = [], [], []
    for seed, label in enumerate(labels):
        image = (label > 0).float()  # identity-labelled: the image is its foreground mask
        out_image, out_label = augmented(image, label, transform, seed)
        assert out_image.shape == image.shape and out_label.dtype == torch.long
        assert type(out_image) is torch.Tensor and type(out_label) is torch.Tensor
        aligned.append(dice(out_image > 0.5, out_label > 0))
        # the control the test must fail on: image and label transformed with different draws
        control.append(dice(out_image > 0.5, augmented(image, label, transform, seed + 100)[1] > 0))
        unmoved.append(dice(label > 0, out_label > 0))
    assert min(aligned) > 0.92 and all(a > c for a, c in zip(aligned, control, strict=True))
    assert np.mean(aligned) > np.mean(control) + 0.05
    assert np.mean(unmoved) < 0.95  # the transform did move the pair


def test_classical_intensity_transforms_leave_the_label_alone():
    label = LABELS[0]
    image = label.float() / 2
    transform = classical_augmentation(2, spatial_prob=0.0, intensity_prob=1.0)
    out_image, out_label = augmented(image, label, transform, 0)
    assert torch.equal(out_label, label) and not torch.allclose(out_image, image)
    assert 0 <= out_image.min() and out_image.max() <= 1


def test_draws_are_pairs_on_the_real_grid_and_reproducible():
    images = torch.stack([lab.float() / 2 for lab in LABELS])
    real = ImageSet(images, torch.stack(LABELS), [str(i) for i in range(len(LABELS))])
    for draw in (augmented_draw(real), randomised_draw(real, num_classes=3)):
        image, label = draw(torch.Generator().manual_seed(1))
        again, _ = draw(torch.Generator().manual_seed(1))
        assert image.shape == label.shape == (1, 32, 32) and label.dtype == torch.long
        assert image.dtype == torch.float32 and torch.equal(image, again)
