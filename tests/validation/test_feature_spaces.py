"""Three feature spaces (trained, random, hand-crafted) and the agreement of their rankings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.validation.feature_spaces import (
    GLCM_PROPERTIES,
    build_feature_spaces,
    random_network,
    rank_agreement,
    standardize,
    texture_features,
)
from medsynth.validation.features import train_feature_network
from medsynth.validation.unpaired import Interval, kid_interval
from tests.validation.test_features import blobs


def test_random_network_is_seeded_untrained_and_leaves_the_global_rng_alone():
    images = torch.rand(4, 1, 24, 24)
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = random_network(2, seed=3).extract(images)
    assert torch.rand(1) == expected_next
    assert first.shape == (4, 16 + 32 + 64 + 128) and np.isfinite(first).all()
    np.testing.assert_array_equal(random_network(2, seed=3).extract(images), first)
    assert not np.allclose(random_network(2, seed=4).extract(images), first)
    assert random_network(3, (8, 16), seed=0).extract(torch.rand(2, 1, 8, 8, 8)).shape == (2, 24)


def _texture(features: np.ndarray, prop: str, distance_index: int = 0, distances: int = 3) -> np.ndarray:
    offset = features.shape[1] - len(GLCM_PROPERTIES) * distances
    return features[:, offset + GLCM_PROPERTIES.index(prop) * distances + distance_index]


def test_texture_features_of_constant_and_checkered_tissue():
    constant = torch.zeros(1, 1, 32, 32)
    constant[..., 8:24, 8:24] = 0.6  # uniform tissue on background: no texture once background is left out
    checker = 0.3 + 0.6 * ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float()[None, None]
    features = texture_features(torch.cat([constant, checker]))
    assert features.shape == (2, 16 + 1 + 7 + len(GLCM_PROPERTIES) * 3) and np.isfinite(features).all()
    assert features[0, 16] == pytest.approx(0.25)  # foreground fraction
    np.testing.assert_allclose(features[0, 17:24], 0.6)  # every percentile of the tissue
    assert _texture(features, "contrast")[0] == 0 and _texture(features, "homogeneity")[0] == 1
    assert _texture(features, "energy")[0] == pytest.approx(1.0)
    assert _texture(features, "contrast")[1] > 0.1 and _texture(features, "homogeneity")[1] < 0.6
    assert 0 <= features.min() and features.max() <= 1 + 1e-9
    volume = texture_features(torch.rand(2, 1, 12, 12, 4))
    assert volume.shape == features.shape and np.isfinite(volume).all()
    with pytest.raises(ValueError, match="levels"):
        texture_features(checker, levels=2)


def test_every_space_ranks_a_matching_family_above_worse_ones():
    images, labels = blobs(30, size=32, seed=1)
    real = torch.stack(images)
    same = torch.stack(blobs(30, size=32, seed=2)[0])  # a family that draws from the real distribution
    families = {"matching": same, "dim": same * 0.7, "noise": torch.rand_like(same)}
    extractor = train_feature_network(images, labels, num_classes=3, steps=3, batch_size=4, progress=False)
    spaces = build_feature_spaces(extractor, seed=0)
    assert set(spaces) == {"trained", "random", "handcrafted"}
    assert "random weights" in spaces["random"].description and "GLCM" in spaces["handcrafted"].description
    values = {}
    for name, space in spaces.items():
        reference = space.extract(real)
        values[name] = {family: kid_interval(reference, space.extract(x)) for family, x in families.items()}
        assert values[name]["matching"].low < 0 < values[name]["matching"].high
        assert values[name]["dim"].low > 0
    result = rank_agreement(values)
    assert result["agree"] and result["same_ranking"]
    assert all(r == ["matching", "dim", "noise"] for r in result["rankings"].values())


def test_rank_agreement_reports_conflicts_but_not_ties():
    agree = rank_agreement({"a": {"gan": 0.2, "diffusion": 0.1}, "b": {"gan": 5.0, "diffusion": 1.0}})
    assert agree["agree"] and agree["same_ranking"] and agree["best"] == {"a": "diffusion", "b": "diffusion"}
    conflict = rank_agreement({"a": {"gan": 0.2, "diffusion": 0.1}, "b": {"gan": 1.0, "diffusion": 5.0}})
    assert not conflict["agree"] and conflict["conflicts"][0]["families"] == ["diffusion", "gan"]
    assert conflict["conflicts"][0]["order"] == {"a": "diffusion", "b": "gan"}
    tied = rank_agreement({"a": {"gan": Interval(0.2, 0.15, 0.25), "diffusion": Interval(0.1, 0.05, 0.14)},
                           "b": {"gan": {"value": 1.0, "ci95": [0.0, 3.0]},
                                 "diffusion": {"value": 2.0, "ci95": [1.0, 3.0]}}})
    assert tied["agree"] and not tied["same_ranking"]  # b's order is within its intervals: no conflict
    assert tied["pairs"][0]["order"] == {"a": "diffusion", "b": "tie"}
    higher = rank_agreement({"a": {"x": 0.9, "y": 0.5}}, lower_is_better=False)
    assert higher["rankings"]["a"] == ["x", "y"]


def test_standardize_uses_the_reference_statistics():
    reference = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 5.0]])
    z, other = standardize(reference, np.array([[1.0, 2.0, 6.0]]))
    np.testing.assert_allclose(z, [[-1, -1, 0], [1, 1, 0]])
    np.testing.assert_allclose(other, [[0, 0, 1]])
