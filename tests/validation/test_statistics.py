"""The bootstrap intervals of the headline figures, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.validation.statistics import bootstrap, paired_difference, verdict


def test_a_constant_has_a_zero_width_interval():
    estimate = bootstrap([[2.0] * 10] * 3)
    assert (estimate.value, estimate.low, estimate.high, estimate.seeds, estimate.items) == (2.0, 2.0, 2.0, 3, 10)


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        seeds = rng.normal(0, 0.5, (5, 1))  # training variance
        scores = 10 + seeds + rng.normal(0, 1, (5, 20))  # item variance
        estimate = bootstrap(scores, replicates=400, seed=trial)
        hits += estimate.low <= 10 <= estimate.high
    assert 0.80 <= hits / 200 <= 1.0  # bootstrap intervals of 5 seeds run a little narrow, never wildly


def test_more_seed_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    items = rng.normal(0, 1, (3, 20))
    narrow = bootstrap(items)
    wide = bootstrap(items + np.array([[-3.0], [0.0], [3.0]]))
    assert (wide.high - wide.low) > 2 * (narrow.high - narrow.low)


def test_paired_differences_and_verdicts():
    rng = np.random.default_rng(2)
    baseline = rng.normal(30, 2, (3, 16))  # slices differ a lot; the method adds a steady 0.3 dB
    better = paired_difference(baseline + 0.3 + rng.normal(0, 0.05, baseline.shape), baseline)
    assert verdict(better) == "better" and better.low > 0.2
    same = paired_difference(baseline + rng.normal(0, 0.5, baseline.shape), baseline)
    assert verdict(same) == "not distinguishable"
    assert verdict(paired_difference(baseline - 1, baseline)) == "worse"
    assert verdict(paired_difference(baseline - 1, baseline), higher_is_better=False) == "better"
    shared = paired_difference(baseline + 1, baseline[0])  # one baseline row shared by every seed
    assert shared.value == pytest.approx(float((baseline + 1 - baseline[0]).mean()))
    with pytest.raises(ValueError, match="does not pair"):
        paired_difference(baseline, baseline[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap([[1.0, float("nan")]])
