from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from medsynth.models.samplers import run_sampler, spaced_timesteps


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
