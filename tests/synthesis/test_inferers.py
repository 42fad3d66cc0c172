"""Inference strategies: which one a run's config picks, and that each hands every part of the
volume (condition and start image alike) to the model."""

from __future__ import annotations

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions, build_synthesizer
from medsynth.synthesis.inferers import (
    SliceInferer,
    SlidingWindowInferer,
    WholeVolumeInferer,
    choose_inferer,
    restoration_window,
)
from medsynth.training.experiment import experiment_from_dict
from tests.models.conftest import TINY_OPTIONS


def _config(job: str, dims: int):
    return experiment_from_dict({"job": {"name": job}, "spatial_dims": dims, "family": "diffusion",
                                 "data": {"patch_size": [16] * dims}, "model": TINY_OPTIONS["diffusion"]})


@pytest.mark.parametrize("job, dims, spatial, expected", [
    ("denoise", 2, (20, 18, 6), SliceInferer),
    ("generate", 2, (20, 18, 6), SliceInferer),
    ("denoise", 3, (20, 18, 40), SlidingWindowInferer),
    ("generate", 3, (20, 18, 40), WholeVolumeInferer),
])
def test_the_config_picks_the_strategy(job, dims, spatial, expected):
    config = _config(job, dims)
    inferer = choose_inferer(config, spatial, conditional=True, batch_size=3)
    assert type(inferer) is expected
    if expected is SlidingWindowInferer:
        assert inferer.window == restoration_window(config, spatial) == (20, 18, 32)
    with pytest.raises(MedsynthError, match="3D model needs 3D images"):
        choose_inferer(_config(job, 3), (20, 18), conditional=True)


@pytest.mark.parametrize("inferer", [SliceInferer(axis=2, batch_size=4), WholeVolumeInferer(),
                                     SlidingWindowInferer(window=(8, 8, 8), batch_size=2)],
                         ids=["slices", "whole", "windows"])
def test_every_strategy_hands_each_part_its_own_start_image(inferer, monkeypatch):
    """A model that returns its start image plus half its condition gives back exactly that volume:
    windows carry the start image with the condition (they once dropped it)."""
    dims = 2 if isinstance(inferer, SliceInferer) else 3
    model = build_synthesizer("diffusion", dims, 1, TINY_OPTIONS["diffusion"]).eval()
    monkeypatch.setattr(model, "_sample_mean", lambda condition, shape, seed, options: options.init + condition / 2)
    generator = torch.Generator().manual_seed(0)
    condition = torch.rand((1, 12, 10, 9), generator=generator) / 2
    init = torch.rand((12, 10, 9), generator=generator) / 2
    out = inferer(model, condition, seed=0, spatial=(12, 10, 9), options=SampleOptions(strength=0.5), init=init)
    torch.testing.assert_close(out, init + condition[0] / 2)


def test_windows_need_a_condition():
    model = build_synthesizer("diffusion", 3, 0, TINY_OPTIONS["diffusion"]).eval()
    with pytest.raises(MedsynthError, match="need a condition"):
        SlidingWindowInferer(window=(8, 8, 8))(model, None, seed=0, spatial=(8, 8, 8), options=SampleOptions())
