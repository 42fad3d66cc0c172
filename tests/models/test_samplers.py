from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from medsynth.models import SampleOptions
from medsynth.models.samplers import dpm_solver_2m, run_sampler, spaced_timesteps


def test_spaced_timesteps():
    assert spaced_timesteps(1000, 1) == [999]
    steps = spaced_timesteps(1000, 10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10 and steps == sorted(steps, reverse=True)
    assert spaced_timesteps(1000, 5, start=300)[0] == 300
    with pytest.raises(ValueError):
        spaced_timesteps(10, 11)


@pytest.mark.parametrize("eta, steps", [(0.0, 7), (1.0, 50)], ids=["ddim", "ddpm"])
def test_an_oracle_denoiser_recovers_the_image(eta, steps):
    """With a perfect x0 estimate every sampler must land exactly on the clean image."""
    scheduler = DDPMScheduler(50)
    clean = torch.rand(2, 1, 6, 6) * 2 - 1
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    alphas = scheduler.alphas_cumprod

    def oracle(x_t, t):
        a = alphas[t]
        return clean, (x_t - a.sqrt() * clean) / (1 - a).sqrt()

    out = run_sampler(oracle, x, spaced_timesteps(50, steps), alphas, eta=eta, generator=torch.Generator())
    torch.testing.assert_close(out, clean)


def test_ddim_is_deterministic_and_ddpm_uses_its_generator():
    alphas = DDPMScheduler(20).alphas_cumprod

    def shrink(x_t, t):  # a crude denoiser: pulls towards zero
        x0 = 0.5 * x_t
        return x0, (x_t - alphas[t].sqrt() * x0) / (1 - alphas[t]).sqrt()

    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    steps = spaced_timesteps(20, 20)
    a = run_sampler(shrink, x, steps, alphas, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = run_sampler(shrink, x, steps, alphas, eta=1.0, generator=torch.Generator().manual_seed(5))
    c = run_sampler(shrink, x, steps, alphas, eta=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(run_sampler(shrink, x, steps, alphas), run_sampler(shrink, x, steps, alphas))


def test_dpm_solver_is_second_order_on_gaussian_data():
    """For data ~ N(0, s^2) the exact denoiser and the probability-flow ODE's solution are known in
    closed form; at equal steps DPM-Solver++(2M) must land far closer to it than DDIM does."""
    alphas = DDPMScheduler(1000, schedule="scaled_linear_beta").alphas_cumprod.double()
    s2 = 0.25

    def gaussian(x_t, t):
        a, var = alphas[t].sqrt(), 1 - alphas[t]
        x0 = a * s2 / (a**2 * s2 + var) * x_t
        return x0, (x_t - a * x0) / var.sqrt()

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spread = lambda t: (alphas[t] * s2 + 1 - alphas[t]).sqrt()  # noqa: E731 (std of x_t)
    exact = gaussian(x * spread(0) / spread(999), 0)[0]
    errors = {}
    for steps in (5, 10, 20):
        timesteps = spaced_timesteps(1000, steps)
        errors["ddim", steps] = float((run_sampler(gaussian, x, timesteps, alphas) - exact).abs().max())
        errors["dpm", steps] = float((dpm_solver_2m(gaussian, x, timesteps, alphas) - exact).abs().max())
    assert errors["dpm", 10] < 0.4 * errors["ddim", 10] and errors["dpm", 20] < 0.05 * errors["ddim", 20], errors
    assert errors["dpm", 20] < errors["dpm", 10] < errors["dpm", 5] <= errors["ddim", 5]


def test_the_registry_names_every_sampler_once_and_refuses_others():
    from typing import get_args

    from medsynth.models.samplers import SAMPLERS, Sampler, get_sampler

    assert set(SAMPLERS) == set(get_args(Sampler))
    assert [name for name, entry in SAMPLERS.items() if entry.every_timestep] == ["ddpm"]
    with pytest.raises(ValueError, match="unknown sampler 'euler' \\(known: ddim, ddpm, dpm_solver\\)"):
        get_sampler("euler")


def test_a_diffusion_model_samples_through_the_registry(monkeypatch):
    """A sampler registered under a name is what ``sample`` runs: the family holds no sampler list of its own."""
    from medsynth.models import DiffusionConfig, DiffusionSynthesizer, samplers

    calls = []

    def first_estimate(denoise, x, timesteps, alphas, generator):
        calls.append(list(timesteps))
        return denoise(x, int(timesteps[0]))[0]

    monkeypatch.setitem(samplers.SAMPLERS, "ddim", samplers.SamplerEntry(first_estimate))
    model = DiffusionSynthesizer(2, 1, DiffusionConfig(channels=(8, 8), attention_levels=(False, False),
                                                       num_res_blocks=1, norm_num_groups=8, num_head_channels=8))
    model.sample(torch.rand(1, 1, 8, 8), seed=0, options=SampleOptions(sampler="ddim", steps=3, ensemble=1))
    assert len(calls) == 1 and len(calls[0]) == 3
    with pytest.raises(ValueError, match="unknown sampler"):
        model.sample(torch.rand(1, 1, 8, 8), seed=0, options=SampleOptions(sampler="euler"))
