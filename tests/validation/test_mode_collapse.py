"""Diversity within and across conditions beside the real data's, and the mode-collapse flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medsynth.validation.mode_collapse import diversity_check


def textured_disc(centre: np.ndarray, rng: np.random.Generator, size: int = 48) -> torch.Tensor:
    """``(1, size, size)``: a disc at ``centre`` (the condition) with a fresh random texture (the noise)."""
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))
    radius = np.sqrt(((grid - np.reshape(centre, (2, 1, 1))) ** 2).sum(0))
    texture = gaussian_filter(rng.normal(size=(size, size)), 1.5) * 1.5
    image = np.where(radius < 10, 0.6 + 0.3 * texture, 0.05 + 0.05 * texture)
    return torch.as_tensor(np.clip(image, 0, 1), dtype=torch.float32)[None]


rng = np.random.default_rng(0)
CENTRES = rng.uniform(14, 34, (8, 2))
REAL = torch.stack([textured_disc(c, rng) for c in rng.uniform(14, 34, (12, 2))])


def test_honest_samples_are_not_flagged():
    samples = [torch.stack([textured_disc(c, rng) for _ in range(3)]) for c in CENTRES]
    result = diversity_check(samples, REAL)
    assert not result.collapse and not result.collapse_within and not result.collapse_across
    assert result.within.value > result.across  # samples for one disc share its place
    assert result.within.low <= result.within.value <= result.within.high < 1
    assert abs(result.across - result.real) < 0.2
    assert result.samples_per_condition == [3] * 8 and "1 - real" in result.rule


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_samples_that_ignore_their_noise_are_flagged_within_condition(noise):
    fixed = [textured_disc(c, np.random.default_rng(1)) for c in CENTRES]
    samples = torch.stack([torch.stack([f + noise * torch.randn_like(f) for _ in range(4)]) for f in fixed])
    result = diversity_check(samples.clamp(0, 1), REAL)
    assert result.collapse_within and result.collapse and not result.collapse_across
    assert result.within.value > 0.95


def test_samples_that_ignore_their_condition_are_flagged_across_conditions():
    samples = [torch.stack([textured_disc(CENTRES[0], rng) for _ in range(3)]) for _ in CENTRES]
    result = diversity_check(samples, REAL)
    assert result.collapse_across and result.collapse and not result.collapse_within
    one = textured_disc(CENTRES[0], rng)
    total = diversity_check([torch.stack([one, one])] * 4, REAL)
    assert total.collapse_within and total.collapse_across and total.across == pytest.approx(1.0, abs=1e-4)


def test_diversity_needs_two_samples_per_condition():
    with pytest.raises(ValueError, match="two samples"):
        diversity_check([REAL[:1], REAL[:2]], REAL)
