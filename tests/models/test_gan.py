from __future__ import annotations

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions, Synthesizer, build_synthesizer, family_options
from tests.models.conftest import TINY_OPTIONS

TINY = TINY_OPTIONS["gan"]
SIGNALS = {"loss_d", "loss_g", "loss_adversarial", "loss_l1", "loss_feature_matching", "d_real_accuracy",
           "d_fake_accuracy", "grad_norm_d", "grad_norm_g", "diversity"}


def make(spatial_dims: int, condition_channels: int, **options):
    torch.manual_seed(0)
    return build_synthesizer("gan", spatial_dims, condition_channels, {**TINY, **options})


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("condition_channels, residual", [(3, False), (1, True), (0, False)])
def test_step_logs_stability_signals_and_samples_any_grid(step_context, dims, condition_channels, residual):
    model = make(dims, condition_channels, residual=residual)
    assert isinstance(model, Synthesizer) and model.family == "gan"
    size = (16,) * dims
    batch = {"target": torch.rand(4, 1, *size)}
    if condition_channels:
        batch["condition"] = torch.rand(4, condition_channels, *size)
    signals = model.training_step(batch, step_context(model, lr=2e-3))
    assert set(signals) == SIGNALS
    assert all(torch.isfinite(torch.tensor(v)) for v in signals.values())
    assert 0 <= signals["d_real_accuracy"] <= 1 and 0 <= signals["d_fake_accuracy"] <= 1
    odd = (7, 9, 5)[:dims]
    condition = torch.rand(3, condition_channels, *odd) if condition_channels else None
    out = model.eval().sample(condition, seed=0, shape=(3, 1, *odd))
    assert out.shape == (3, 1, *odd) and out.min() >= 0 and out.max() <= 1


def test_same_seed_same_images_other_noise_other_images():
    model = make(2, 3).eval()
    condition = torch.rand(2, 3, 16, 16)
    a, b, c = (model.sample(condition, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generator_step_leaves_no_gradient_on_the_discriminator(step_context):
    model = make(2, 1, residual=True)
    batch = {"target": torch.rand(2, 1, 16, 16), "condition": torch.rand(2, 1, 16, 16)}
    model.training_step(batch, step_context(model, lr=2e-3))
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_ensemble_mean_is_clipped_once():
    model = make(2, 1, residual=True).eval()
    air = torch.zeros(1, 1, 16, 16)
    raw = model.sample(air, seed=0, options=SampleOptions(ensemble=2, clip=False))
    assert raw.min() < 0 < raw.max()  # a correction of either sign on an empty condition
    assert torch.equal(model.sample(air, seed=0, options=SampleOptions(ensemble=2)), raw.clamp(0, 1))


def test_lazy_r1_penalty_every_k_steps(step_context):
    model = make(2, 1, r1_weight=1.0, r1_every=2)
    batch = {"target": torch.rand(2, 1, 16, 16), "condition": torch.rand(2, 1, 16, 16)}
    ctx = step_context(model, lr=2e-3)
    r1 = [model.training_step(batch, ctx)["r1"] for _ in range(4)]
    assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0
    assert int(model.steps) == 4  # in the state dict, so a resumed run keeps the rhythm
    assert "steps" in model.state_dict()


def test_spectral_norm_is_applied_to_every_discriminator_convolution():
    convolutions = [m for m in make(2, 1).discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(hasattr(m, "parametrizations") for m in convolutions)
    plain = [m for m in make(2, 1, spectral_norm=False).discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(hasattr(m, "parametrizations") for m in plain)


def test_ttur_learning_rates_and_betas_per_group():
    groups = make(2, 1, discriminator_lr_scale=4.0, betas=[0.0, 0.9]).parameter_groups()
    assert set(groups) == {"generator", "discriminator"}
    assert groups["discriminator"]["lr_scale"] == 4.0 and groups["generator"].get("lr_scale", 1.0) == 1.0
    assert groups["generator"]["betas"] == (0.0, 0.9)


def test_overfits_a_tiny_denoising_set(step_context):
    model = make(2, 1, residual=True)
    clean = torch.rand(4, 1, 16, 16)
    noisy = (clean + 0.2 * torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    batch = {"target": clean, "condition": noisy}
    ctx = step_context(model, lr=3e-3)
    l1 = [model.training_step(batch, ctx)["loss_l1"] for _ in range(40)]
    assert sum(l1[-5:]) / 5 < 0.6 * sum(l1[:5]) / 5


def test_mode_seeking_term_spreads_outputs_for_one_condition(step_context):
    batch = {"target": torch.rand(4, 1, 16, 16), "condition": torch.rand(4, 3, 16, 16)}
    spread = {}
    for weight in (0.0, 5.0):
        model = make(2, 3, diversity_weight=weight, diversity_cap=1.0, l1_weight=10.0)
        ctx = step_context(model, lr=3e-3)
        spread[weight] = [model.training_step(batch, ctx)["diversity"] for _ in range(15)][-1]
    assert spread[5.0] > 1.5 * spread[0.0]


def test_refuses_what_a_gan_cannot_do():
    model = make(2, 1, residual=True).eval()
    with pytest.raises(ValueError, match="gan family does not take the sampling option.s. init, strength"):
        model.sample(torch.rand(1, 1, 8, 8), seed=0, options=SampleOptions(init=torch.rand(1, 1, 8, 8), strength=0.5))
    with pytest.raises(ValueError, match="condition of 1 channels"):
        model.sample(torch.rand(1, 3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="residual"):
        make(2, 3, residual=True)


@pytest.mark.parametrize("options, key", [({"l1_weight": -1}, "l1_weight"), ({"betas": [1.5, 0.9]}, "betas"),
                                          ({"channels": [8]}, "channels"), ({"discriminator": 3}, "discriminator")])
def test_bad_options_name_the_key(options, key):
    with pytest.raises(MedsynthError, match=key):
        family_options("gan", {**TINY, **options})


def test_a_plain_l1_network_trains_no_discriminator_and_the_same_generator(step_context, monkeypatch):
    plain = {"adversarial_weight": 0.0, "feature_matching_weight": 0.0}  # noise kept: the draws must match too
    model, twin = make(2, 1, residual=True, **plain), make(2, 1, residual=True, **plain)
    assert not model.trains_discriminator and set(model.parameter_groups()) == {"generator"}
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    batch = {"target": torch.rand(4, 1, 16, 16), "condition": torch.rand(4, 1, 16, 16)}
    context = step_context(model, lr=2e-3)  # one generator and optimizer over both steps, as in training
    signals = [model.training_step(batch, context) for _ in range(2)]
    assert set(signals[0]) == {"loss_g", "loss_l1", "grad_norm_g", "diversity"}
    assert all(torch.equal(v, model.discriminator.state_dict()[k]) for k, v in before.items())
    # the full adversarial step with both weights 0 moves the generator exactly as the L1 step does
    monkeypatch.setattr(type(twin), "trains_discriminator", property(lambda self: True))
    context = step_context(twin, lr=2e-3)
    for _ in range(2):
        twin.training_step(batch, context)
    assert all(torch.equal(a, b) for a, b in zip(model.generator.parameters(), twin.generator.parameters(),
                                                 strict=True))
