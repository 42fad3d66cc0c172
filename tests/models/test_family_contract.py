"""The ``Synthesizer`` contract, checked on every registered family: what the trainer, ``augment``,
``restore`` and ``compare`` rely on without asking which family they hold."""

from __future__ import annotations

import math

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models import FAMILIES, SampleOptions, build_synthesizer, split_options
from tests.models.conftest import TINY_OPTIONS


def test_every_registered_family_has_tiny_options_here():
    assert set(TINY_OPTIONS) == set(FAMILIES)  # a new family joins the contract test by adding its options


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param


def _build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_synthesizer(family, 2, 1, TINY_OPTIONS[family])


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand((2, 1, 16, 16), generator=generator)
    return {"target": target, "condition": (target + 0.1 * torch.rand(target.shape, generator=generator)).clamp(0, 1)}


def test_training_steps_return_finite_losses_and_change_the_weights(family, step_context):
    model = _build(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context = step_context(model)
    for step in range(3):  # the latent family's two stages both run (autoencoder_steps: 2)
        losses = model.training_step(_batch(step), context)
        assert losses and all(isinstance(v, float) for v in losses.values())
        assert any(math.isfinite(v) for v in losses.values())
        assert all(k in losses for k in model.progress_losses)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no weight moved"
    assert set(model.parameter_groups()) and all(group["params"] for group in model.parameter_groups().values())
    assert model.ema_modules() and all(isinstance(m, torch.nn.Module) for m in model.ema_modules().values())


def test_samples_have_the_shape_range_and_seed_determinism_of_the_contract(family):
    model = _build(family).eval()
    condition = _batch()["condition"]
    with torch.no_grad():
        first = model.sample(condition, seed=3)
        again = model.sample(condition, seed=3)
        raw = model.sample(condition, seed=3, options=SampleOptions(clip=False))
    assert first.shape == (2, 1, 16, 16) and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again)  # same seed, same images
    assert torch.equal(raw.clamp(0, 1), first)  # clip=False is the same estimate, unclipped
    odd = torch.rand((1, 1, 13, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert model.sample(odd, seed=0).shape == (1, 1, 13, 10)  # any grid: padded inside, cropped back
    evaluations = model.cost()
    assert isinstance(evaluations, int) and evaluations >= 1
    assert model.cost(SampleOptions(ensemble=3)) == 3 * evaluations
    assert model.cost(SampleOptions(ensemble=3, flips=True)) == 4 * 3 * evaluations  # 4 flips of a 2D grid


def test_a_state_dict_round_trip_reproduces_the_samples(family, step_context):
    model = _build(family)
    model.training_step(_batch(), step_context(model))
    copy = _build(family, seed=1)
    copy.load_state_dict(model.state_dict())
    condition = _batch(1)["condition"]
    with torch.no_grad():
        assert torch.equal(model.eval().sample(condition, seed=0), copy.eval().sample(condition, seed=0))


def test_a_wrong_condition_or_option_is_refused_with_a_clear_error(family):
    model = _build(family).eval()
    with pytest.raises(ValueError, match="channels"):
        model.sample(torch.zeros(1, 3, 16, 16), seed=0)
    condition = _batch()["condition"]
    every = SampleOptions(sampler="ddim", steps=2, guidance=2.0, ensemble=2, flips=True, init=condition,
                          strength=0.5, clip=False)
    refused = [name for name in every.given() if name not in model.sample_options]
    assert {"ensemble", "flips", "clip"} <= model.sample_options <= set(every.given())  # the shared loop's, at least
    kept, dropped = split_options(model, every)
    assert dropped == refused and set(kept.given()) == model.sample_options
    if refused:
        for call in (lambda: model.sample(condition, seed=0, options=every), lambda: model.cost(every)):
            with pytest.raises(ValueError, match=f"{model.family} family does not take .* {refused[0]}"):
                call()
    with torch.no_grad():
        assert model.sample(condition, seed=0, options=kept).shape == condition.shape  # the rest it takes
    with pytest.raises(MedsynthError, match="unknown model family"):
        build_synthesizer(f"{family}_v2", 2, 1, {})
