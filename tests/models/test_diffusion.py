from __future__ import annotations

import pytest
import torch

from medsynth.models import SampleOptions, Synthesizer, build_synthesizer
from tests.models.conftest import TINY_OPTIONS

TINY = TINY_OPTIONS["diffusion"]


def make(spatial_dims: int, condition_channels: int, **options):
    torch.manual_seed(0)
    return build_synthesizer("diffusion", spatial_dims, condition_channels, {**TINY, **options})


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_step_and_sample_shapes(step_context, dims, prediction):
    model = make(dims, 2, prediction_type=prediction)
    assert isinstance(model, Synthesizer)
    size = (8,) * dims
    batch = {"target": torch.rand(2, 1, *size), "condition": torch.rand(2, 2, *size)}
    losses = model.training_step(batch, step_context(model))
    assert set(losses) >= {"loss"} and torch.isfinite(torch.tensor(losses["loss"]))
    odd = (7, 9, 5)[:dims]
    out = model.sample(torch.rand(3, 2, *odd), seed=0)
    assert out.shape == (3, 1, *odd) and out.min() >= 0 and out.max() <= 1


def test_same_seed_same_images_other_seed_other_images():
    model = make(2, 1)
    condition = torch.rand(2, 1, 8, 8)
    a, b, c = (model.sample(condition, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    ddpm = SampleOptions(sampler="ddpm")
    assert torch.equal(model.sample(condition, seed=1, options=ddpm), model.sample(condition, seed=1, options=ddpm))


def test_unconditional_and_wrong_condition():
    model = make(2, 0)
    assert model.sample(None, seed=0, shape=(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="condition of 0 channels"):
        model.sample(torch.rand(1, 1, 8, 8), seed=0)
    conditional = make(2, 3)
    with pytest.raises(ValueError, match="3 channels, got 1"):
        conditional.sample(torch.rand(1, 1, 8, 8), seed=0)


def test_classifier_free_guidance_changes_the_output(step_context):
    model = make(2, 3, condition_dropout=0.5)
    condition = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 8, 8)), 3).movedim(-1, 1).float()
    ctx = step_context(model)
    for _ in range(3):  # the UNet's last layer starts at zero: train it off zero first
        model.training_step({"target": torch.rand(2, 1, 8, 8), "condition": condition.repeat(2, 1, 1, 1)}, ctx)
    plain = model.sample(condition, seed=0, options=SampleOptions(guidance=1.0))
    guided = model.sample(condition, seed=0, options=SampleOptions(guidance=3.0))
    assert not torch.equal(plain, guided)

    batches = []  # guidance batches the conditional and unconditional passes: one network call per step
    model.network.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    model.sample(condition, seed=0, options=SampleOptions(guidance=3.0, steps=4, ensemble=1))
    assert batches == [2] * 4 and model.cost(SampleOptions(guidance=3.0, steps=4, ensemble=1)) == 8


def test_strength_starts_from_the_init_image(step_context):
    model = make(2, 0)
    ctx = step_context(model)
    for _ in range(3):
        model.training_step({"target": torch.rand(2, 1, 8, 8)}, ctx)
    init = torch.rand(1, 1, 8, 8)
    light = model.sample(None, seed=0, options=SampleOptions(init=init, strength=0.05))
    full = model.sample(None, seed=0, options=SampleOptions(init=init, strength=1.0))
    assert (light - init).abs().mean() < (full - init).abs().mean()


def test_loss_decreases_on_a_tiny_overfit_set(step_context):
    model = make(2, 1, num_train_timesteps=10)
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 8, 8, generator=generator)
    batch = {"target": target, "condition": target.clone()}
    ctx = step_context(model, lr=3e-3)
    losses = [model.training_step(batch, ctx)["loss"] for _ in range(60)]
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


def test_ensemble_averages_seeds_and_residual_adds_the_condition(step_context):
    model = make(2, 1)
    ctx = step_context(model)
    for _ in range(3):
        model.training_step({"target": torch.rand(2, 1, 8, 8), "condition": torch.rand(2, 1, 8, 8)}, ctx)
    condition = torch.rand(1, 1, 8, 8)
    mean = model.sample(condition, seed=3, options=SampleOptions(ensemble=2))
    expected = (model.sample(condition, seed=3) + model.sample(condition, seed=4)) / 2
    torch.testing.assert_close(mean, expected)
    residual = make(2, 1, residual=True, prediction_type="sample")  # untrained: x0 = 0, the sample is the condition
    torch.testing.assert_close(residual.sample(condition, seed=0), condition)
    with pytest.raises(ValueError, match="one-channel image condition"):
        make(2, 3, residual=True)


def test_residual_ensemble_clips_the_mean_not_each_sample(step_context):
    """Air (condition 0) stays unbiased: the mean of samples is clipped to [0, 1], not each sample."""
    model = make(2, 1, residual=True)
    ctx = step_context(model)
    for _ in range(3):
        model.training_step({"target": torch.rand(4, 1, 8, 8), "condition": torch.rand(4, 1, 8, 8)}, ctx)
    air = torch.zeros(1, 1, 8, 8)
    mean = model.sample(air, seed=3, options=SampleOptions(ensemble=2))
    clipped_samples = (model.sample(air, seed=3) + model.sample(air, seed=4)) / 2
    assert mean.min() >= 0 and mean.max() <= 1
    assert (mean <= clipped_samples + 1e-6).all()  # max(0, mean) <= mean of max(0, sample)
    assert (mean < clipped_samples - 1e-4).any()  # where the samples disagree in sign
    raw = model.sample(air, seed=3, options=SampleOptions(ensemble=2, clip=False))  # for callers that average further
    assert raw.min() < 0 and torch.equal(raw.clamp(0, 1), mean)
