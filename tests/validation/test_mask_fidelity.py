"""Label fidelity: high when synthetic images show their conditioning label maps, low when they do not."""

from __future__ import annotations

import pytest

from medsynth.validation.mask_fidelity import label_fidelity, real_segmenters
from medsynth.validation.realism import ImageSet
from tests.validation.test_utility_study import CLASSES, HELD, TRAIN


@pytest.fixture(scope="module")
def segmenters():
    return real_segmenters(TRAIN, num_classes=3, steps=40, seeds=[0, 1])


def test_images_of_their_own_label_maps_score_like_the_real_reference_and_wrong_maps_score_low(segmenters):
    faithful = ImageSet(HELD.images, HELD.labels, HELD.names)  # "synthetic" images that are real ones of their maps
    rolled = ImageSet(HELD.images, HELD.labels.roll(1, 0), HELD.names)  # each image with another's label map
    result = label_fidelity(segmenters, {"faithful": faithful, "rolled": rolled}, HELD, class_names=CLASSES,
                            replicates=500)
    reference, good, bad = result["reference"], result["synthetic"]["faithful"], result["synthetic"]["rolled"]
    assert good == reference and reference["dice"]["value"] > 0.6
    assert reference["dice"]["seeds"] == 2 and reference["dice"]["items"] == len(HELD)
    assert bad["dice"]["value"] < good["dice"]["value"] - 0.4
    assert bad["dice"]["ci95"][1] < good["dice"]["ci95"][0]  # the intervals do not overlap
    low, high = good["dice"]["ci95"]
    assert low <= good["dice"]["value"] <= high and set(good["dice_per_class"]) == {"disc", "ring"}
    assert len(bad["per_image"]) == len(HELD) and result["segmenters"] == 2


def test_label_fidelity_refuses_images_without_label_maps(segmenters):
    with pytest.raises(ValueError, match="label maps"):
        label_fidelity(segmenters, {"x": ImageSet(HELD.images, None, HELD.names)}, HELD, class_names=CLASSES)
    with pytest.raises(ValueError, match="at least one segmenter"):
        label_fidelity([], {}, HELD, class_names=CLASSES)
