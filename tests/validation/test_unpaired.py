"""KID with an interval and FID with a validity flag, on Gaussian features with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.validation.metrics import kernel_inception_distance
from medsynth.validation.statistics import bootstrap
from medsynth.validation.unpaired import Interval, as_ci95, fid_check, kid_interval

rng = np.random.default_rng(0)
REAL = rng.normal(size=(60, 16))
SAME = rng.normal(size=(60, 16))  # another draw of the same distribution
FAR = rng.normal(size=(60, 16)) + 1.0


def test_kid_of_identical_sets_is_zero_within_its_interval():
    assert kid_interval(REAL, REAL).value == pytest.approx(0.0, abs=1e-12)  # not below 0: self-pairs left out
    assert kid_interval(REAL, REAL[::-1]).value == pytest.approx(0.0, abs=1e-12)
    for other in (REAL, SAME):
        kid = kid_interval(REAL, other)
        assert abs(kid.value) < 0.1 and kid.low < 0 < kid.high and not kid.excludes(0)
        assert kid.low <= kid.value <= kid.high


def test_kid_of_disjoint_sets_is_positive_and_its_interval_excludes_zero():
    kid, same = kid_interval(REAL, FAR), kid_interval(REAL, SAME)
    assert kid.low > 0 and kid.excludes(0)
    assert kid.value > 10 * abs(same.value)
    assert kid.high - kid.low < kid.value  # the interval is informative, not just above zero
    assert "bootstrap" in kid.method


def test_kid_point_estimate_is_the_unbiased_estimate_on_all_images():
    expected, _ = kernel_inception_distance(REAL, FAR, subsets=1, subset_size=60)  # one subset = every image
    assert kid_interval(REAL, FAR).value == pytest.approx(expected, rel=1e-9)
    assert kid_interval(REAL, FAR, seed=1).value == kid_interval(REAL, FAR, seed=2).value
    assert kid_interval(REAL, FAR, seed=1) == kid_interval(REAL, FAR, seed=1)


def test_kid_interval_narrows_with_more_images():
    big = kid_interval(rng.normal(size=(240, 16)), rng.normal(size=(240, 16)) + 1.0)
    small = kid_interval(REAL[:15], FAR[:15])
    assert big.high - big.low < 0.5 * (small.high - small.low)


def test_kid_refuses_too_few_images_and_mismatched_dimensions():
    with pytest.raises(ValueError, match="N >= 5"):
        kid_interval(REAL[:4], FAR)
    with pytest.raises(ValueError, match="dimension"):
        kid_interval(REAL, FAR[:, :8])


def test_fid_is_flagged_when_the_covariance_is_rank_deficient():
    features = rng.normal(size=(14, 240))
    result = fid_check(features, rng.normal(size=(30, 240)))
    assert result["valid"] is False and "N=14 <= D=240" in result["reason"] and result["dims"] == 240
    assert fid_check(REAL[:16], SAME[:16])["valid"] is False  # N = D: rank D - 1 still
    valid = fid_check(REAL, SAME)
    assert valid["valid"] is True and valid["reason"] == ""
    assert fid_check(REAL, REAL)["value"] == pytest.approx(0.0, abs=1e-6)
    assert fid_check(REAL, FAR)["value"] > 5 * valid["value"]


def test_as_ci95_gives_the_metrics_json_record():
    record = {"value": 1.0, "ci95": [0.5, 2.0]}
    assert as_ci95(Interval(1.0, 0.5, 2.0)) == record == Interval(1.0, 0.5, 2.0, "x").as_dict()
    assert as_ci95((1, 0.5, 2)) == record
    estimate = bootstrap([[1.0, 2.0, 3.0]])
    assert as_ci95(estimate) == {"value": 2.0, "ci95": [estimate.low, estimate.high]}
