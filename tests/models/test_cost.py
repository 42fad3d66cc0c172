"""``Synthesizer.cost`` counts the network evaluations ``sample`` really makes: the
images that go through the network per output image (a batched call, as classifier-free guidance
makes, counts each image in it)."""

from __future__ import annotations

import pytest
import torch

from medsynth.models import SampleOptions, build_synthesizer

TINY_DIFFUSION = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                  "num_head_channels": 8, "num_train_timesteps": 20, "num_inference_steps": 3}
TINY_GAN = {"channels": [8, 16], "spade_hidden": 8, "discriminator_channels": 8}
TINY_LATENT = {"channels": [8, 16], "latent_channels": 2, "norm_num_groups": 8,
               "diffusion": {**TINY_DIFFUSION, "channels": [8, 16]}}


def counted(module: torch.nn.Module, outputs: int = 2) -> list[float]:
    """Images through ``module`` per output image, for a sample of ``outputs`` images."""
    seen = [0.0]
    module.register_forward_hook(lambda _, args, __: seen.__setitem__(0, seen[0] + args[0].shape[0] / outputs))
    return seen


def one_hot(batch: int = 2) -> torch.Tensor:
    labels = torch.randint(0, 3, (batch, 8, 8), generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()


@pytest.mark.parametrize("options", [
    SampleOptions(), SampleOptions(guidance=1.5), SampleOptions(guidance=1.5, ensemble=2),
    SampleOptions(sampler="ddpm"), SampleOptions(sampler="dpm_solver", steps=5, guidance=2.0),
    SampleOptions(strength=0.5), SampleOptions(flips=True, ensemble=2),
])
def test_diffusion_counts_guidance_ensembles_flips_and_strength(options):
    torch.manual_seed(0)
    model = build_synthesizer("diffusion", 2, 3, TINY_DIFFUSION)
    calls = counted(model.network)
    model.sample(one_hot(), seed=0, options=options)
    assert model.cost(options) == calls[0]
    if (options.guidance or 1.0) != 1.0:
        assert model.cost(options) == 2 * model.cost(options.replace(guidance=1.0))


def test_unconditional_diffusion_has_no_guidance_calls():
    model = build_synthesizer("diffusion", 2, 0, {**TINY_DIFFUSION, "guidance_scale": 3.0})
    calls = counted(model.network, outputs=1)
    model.sample(None, seed=0, shape=(1, 1, 8, 8))
    assert model.cost() == calls[0] == 3


def test_gan_and_latent_counts():
    torch.manual_seed(0)
    gan = build_synthesizer("gan", 2, 3, TINY_GAN)
    calls = counted(gan.generator)
    gan.sample(one_hot(), seed=0, options=SampleOptions(ensemble=3, flips=True))
    assert gan.cost(SampleOptions(ensemble=3, flips=True)) == calls[0] == 3 * 4
    with pytest.raises(ValueError, match="does not take the sampling option.s. steps"):
        gan.cost(SampleOptions(steps=50))  # a GAN has no steps: refused, not silently ignored
    latent = build_synthesizer("latent_diffusion", 2, 3, TINY_LATENT)
    unet, decoder = counted(latent.diffusion.network), counted(latent.autoencoder.decoder)
    encoder = counted(latent.autoencoder.encoder)
    latent.sample(one_hot(), seed=0, options=SampleOptions(guidance=1.5, ensemble=2))
    assert latent.cost(SampleOptions(guidance=1.5, ensemble=2)) == unet[0] + decoder[0] == 2 * (2 * 3 + 1)
    varied = SampleOptions(init=torch.rand(2, 1, 8, 8), strength=0.5)
    before = unet[0] + decoder[0]
    latent.sample(one_hot(), seed=0, options=varied)
    assert latent.cost(varied) == unet[0] + decoder[0] + encoder[0] - before


@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "steps must be a positive integer"), ({"ensemble": 0}, "ensemble must be a positive integer"),
    ({"steps": 2.5}, "steps must be a positive integer"), ({"strength": 0.0}, "strength must be in"),
    ({"guidance": float("nan")}, "guidance must be a finite number"),
])
def test_sample_options_refuse_values_that_would_fall_back_to_a_default(options, message):
    with pytest.raises(ValueError, match=message):  # 0 steps or samples once meant "the model's default"
        SampleOptions(**options)
