"""The utility study: paired differences with known answers, generators keyed by real fraction,
per-image Dice, and the plain-language verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation.realism import ImageSet
from medsynth.validation.utility import REAL_ONLY, per_image_dice, real_subset
from medsynth.validation.utility_arms import CLASSICAL, RANDOMISED
from medsynth.validation.utility_study import SyntheticPairs, summarise_arm, utility_experiment, utility_verdicts
from tests.validation.test_features import blobs

CLASSES = ["background", "disc", "ring"]


def image_set(count: int, seed: int, prefix: str) -> ImageSet:
    images, labels = blobs(count, size=32, seed=seed)
    return ImageSet(torch.stack(images), torch.stack(labels), [f"{prefix}{i}" for i in range(count)])


TRAIN, HELD = image_set(10, 3, "t"), image_set(6, 4, "h")


class Oracle(torch.nn.Module):
    """Segments an image whose intensity is its label / 2 perfectly."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x * 2 - torch.arange(3.0).view(1, 3, 1, 1)) ** 2)


def test_per_image_dice_has_known_answers():
    labels = HELD.labels.clone()
    perfect = ImageSet(labels.float() / 2, labels, HELD.names)
    assert np.array_equal(per_image_dice(Oracle(), perfect, 3), np.ones((6, 2)))
    no_ring = labels.clone()
    no_ring[no_ring == 2] = 0
    absent = ImageSet(no_ring.float() / 2, no_ring, HELD.names)  # ring neither predicted nor labelled: 1
    assert np.array_equal(per_image_dice(Oracle(), absent, 3), np.ones((6, 2)))
    hallucinated = ImageSet(labels.float() / 2, no_ring, HELD.names)  # ring predicted, not labelled: 0
    dice = per_image_dice(Oracle(), hallucinated, 3)
    assert np.array_equal(dice[:, 1], np.zeros(6)) and np.array_equal(dice[:, 0], np.ones(6))


def test_an_arm_identical_to_real_only_differs_by_exactly_zero():
    by_fraction = {}
    for fraction in (0.5, 1.0):
        subset = real_subset(len(TRAIN), fraction)
        copy = ImageSet(TRAIN.images[subset].clone(), TRAIN.labels[subset].clone(), ["copy"] * len(subset))
        by_fraction[fraction] = SyntheticPairs(copy, subset, subset)
    result = utility_experiment(TRAIN, HELD, {"copy": by_fraction}, class_names=CLASSES, seeds=[0, 1],
                                fractions=[0.5, 1.0], steps=3, baselines=False, progress=False, replicates=200)
    for fraction in ("0.5", "1"):
        entry = result["arms"]["copy"][fraction]
        assert entry["difference"] == {"value": 0.0, "ci95": [0.0, 0.0], "seeds": 2, "items": 6}
        assert entry["verdict"] == "not distinguishable" and entry["per_image"] == \
            result["arms"][REAL_ONLY][fraction]["per_image"]
        assert entry["synthetic"] == entry["generator_trained_on"] == entry["real"]
    assert result["arms"]["copy"]["0.5"]["real"] == 5
    assert "not significant" in utility_verdicts(result, replicates=200)["0.5"]


def test_wrong_labels_are_significantly_worse_and_the_verdict_says_so():
    subset = list(range(len(TRAIN)))
    wrong = ImageSet(TRAIN.images, TRAIN.labels.roll(1, 0), TRAIN.names)  # each image with another's label map
    kept = []
    result = utility_experiment(TRAIN, HELD, {"wrong": {1.0: SyntheticPairs(wrong, subset, subset)}},
                                class_names=CLASSES, seeds=[0, 1, 2], fractions=[1.0], steps=40, ratio=0.75,
                                progress=False, replicates=500, keep=lambda *args: kept.append(args[:3]))
    arms = result["arms"]
    assert set(arms) == {REAL_ONLY, CLASSICAL, RANDOMISED, "wrong"}
    assert [k for k in kept if k[0] == REAL_ONLY] == [(REAL_ONLY, 1.0, s) for s in (0, 1, 2)]
    real, bad = arms[REAL_ONLY]["1"], arms["wrong"]["1"]
    assert real["dice"]["value"] > 0.6 and real["dice"]["seeds"] == 3 and real["dice"]["items"] == 6
    assert bad["difference"]["ci95"][1] < 0 and bad["verdict"] == "worse"
    assert set(real["dice_per_class"]) == {"disc", "ring"} and len(real["per_seed"]) == 3
    for arm in (CLASSICAL, RANDOMISED):
        assert arms[arm]["1"]["synthetic"] == "on the fly" and "difference" in arms[arm]["1"]
    sentence = utility_verdicts(result, replicates=500)["1"]
    assert sentence.startswith("At 100% of the real training pairs (10 pairs, 3 segmenter seeds)")
    assert "wrong" in sentence and "(worse)" in sentence


def test_the_verdict_names_the_winner_and_whether_its_lead_is_significant():
    rng = np.random.default_rng(0)
    real = 0.7 + 0.05 * rng.standard_normal((5, 20, 2))  # seeds x test images x classes
    arms = {"real only": real, "clear": real + 0.05, "noisy": real + 0.01 + 0.05 * rng.standard_normal(real.shape),
            "harmful": real - 0.1}
    entries = {arm: {"real": 4, **summarise_arm(values, None if arm == REAL_ONLY else real, CLASSES)}
               for arm, values in arms.items()}
    assert entries["clear"]["verdict"] == "better" and entries["harmful"]["verdict"] == "worse"
    assert entries["noisy"]["verdict"] == "not distinguishable"
    assert entries["clear"]["difference"]["value"] == pytest.approx(0.05)
    result = {"arms": {arm: {"0.1": entry} for arm, entry in entries.items()}, "seeds": list(range(5))}
    sentence = utility_verdicts(result)["0.1"]
    assert sentence.startswith("At 10% of the real training pairs (4 pairs, 5 segmenter seeds), clear scores the "
                               "highest mean Dice")
    assert "Over real only it adds +0.050 [+0.050, +0.050] Dice: significant" in sentence
    assert "Over the runner-up, noisy, it adds" in sentence
    assert "harmful -0.100 [-0.100, -0.100] (worse)" in sentence and "(not distinguishable)" in sentence
    del result["arms"]["clear"], result["arms"]["noisy"]
    assert "real only scores the highest" in utility_verdicts(result)["0.1"]


def test_generators_keyed_by_fraction_refuse_a_mismatch():
    everything = list(range(len(TRAIN)))
    subset = real_subset(len(TRAIN), 0.2)
    pairs = TRAIN.subset(subset)
    run = lambda synthetic: utility_experiment(TRAIN, HELD, synthetic, class_names=CLASSES,  # noqa: E731
                                               seeds=[0], fractions=[0.2, 1.0], steps=1, progress=False)
    full = SyntheticPairs(TRAIN, everything, everything)
    with pytest.raises(ValueError, match="no synthetic pairs for fraction 0.2"):
        run({"gan": {1.0: full}})
    outside = r"was trained on 8 real pairs the segmenter does not see.*real_subset\(count, 0.2\)"
    with pytest.raises(ValueError, match=outside):
        run({"gan": {0.2: SyntheticPairs(pairs, subset, everything), 1.0: full}})  # trained on all, used at 0.2
    with pytest.raises(ValueError, match="made pairs from 1 real pairs"):
        run({"gan": {0.2: SyntheticPairs(pairs, [subset[0], 5], subset), 1.0: full}})
    with pytest.raises(ValueError, match="built-in arm"):
        run({REAL_ONLY: {0.2: SyntheticPairs(pairs, subset, subset), 1.0: full}})
