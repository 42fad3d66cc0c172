"""Noise statistics of one scan: the Rician mean and its inverse, and the noise level estimate."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.noise import estimate_noise_sigma, rician_mean, rician_mean_inverse


def test_rician_mean_matches_simulated_magnitudes_and_its_inverse_recovers_the_signal():
    rng = np.random.default_rng(0)
    signal, sigma = np.array([0.0, 0.05, 0.1, 0.3, 3.0]), 0.05
    noise = rng.normal(0.0, sigma, (2, 5, 400_000))
    simulated = np.hypot(signal[:, None] + noise[0], noise[1]).mean(axis=1)
    assert np.allclose(rician_mean(signal, sigma), simulated, rtol=2e-3, atol=2e-4)
    assert rician_mean(0.0, sigma) == pytest.approx(sigma * np.sqrt(np.pi / 2))
    assert np.allclose(rician_mean_inverse(rician_mean(signal, sigma), sigma), signal, atol=1e-4)
    below_floor = rician_mean_inverse(np.array([0.0, 0.5 * sigma]), sigma)
    assert np.array_equal(below_floor, [0.0, 0.0])  # at or under the noise floor: no signal
    assert rician_mean_inverse(np.array([0.3]), 0.0)[0] == pytest.approx(0.3)  # no noise: unchanged


@pytest.mark.parametrize("dims", [2, 3])
def test_noise_level_of_a_smooth_image_is_measured_within_five_percent(dims):
    rng = np.random.default_rng(1)
    grid = np.meshgrid(*[np.linspace(0, 1, 64)] * dims, indexing="ij")
    smooth = 0.5 + 0.3 * np.sin(3 * grid[0]) * np.cos(2 * grid[1])
    noisy = smooth + rng.normal(0.0, 0.04, smooth.shape)
    assert estimate_noise_sigma(noisy) == pytest.approx(0.04, rel=0.05)
    mask = np.zeros(smooth.shape, dtype=bool)
    mask[:32] = True
    half = noisy.copy()
    half[32:] += rng.normal(0.0, 0.2, half[32:].shape)  # far noisier outside the mask: ignored
    assert estimate_noise_sigma(half, mask) == pytest.approx(0.04, rel=0.05)
    assert estimate_noise_sigma(noisy, np.zeros(smooth.shape, dtype=bool)) == 0.0  # nothing to measure
