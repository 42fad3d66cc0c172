"""Diffusion samplers as pure functions with one signature (k-diffusion's habit).

A sampler takes ``denoise(x_t, t) -> (x0, eps)`` (the model, already turned into an estimate of
the clean image and of the noise), a starting sample ``x`` at ``timesteps[0]``, the descending
timesteps to visit, the schedule's ``alphas_cumprod`` and a generator for stochastic samplers, and
returns the final ``x0``. :data:`SAMPLERS` is the registry every diffusion family samples through:
a new sampler is one function and one entry here (and its name in :data:`Sampler`).

- ``ddim``: deterministic DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"),
  ``eta = 0``, on any subset of the training timesteps.
- ``ddpm``: ancestral DDPM sampling (Ho et al. 2020) over all timesteps: the same update with
  ``eta = 1``, which equals the DDPM posterior with the "fixed small" variance.
- ``dpm_solver``: DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
  Sampling of Diffusion Probabilistic Models"), a second-order multistep solver of the
  probability-flow ODE in the data-prediction form: it reuses the previous step's ``x0`` to cancel
  DDIM's first-order error, at no extra network evaluation. First order on the first and last
  steps (their "lower order final", which keeps very few steps stable).

MONAI's ``DDIMScheduler.step`` is not used: in MONAI 1.6 it assumes timesteps spaced by
``T // N`` while ``set_timesteps`` spaces them by ``(T - 1) / (N - 1)``, so each step lands on a
slightly different timestep than the next model call is told.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

Denoiser = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
SamplerFunction = Callable[[Denoiser, torch.Tensor, Sequence[int], torch.Tensor, "torch.Generator | None"],
                           torch.Tensor]
Sampler = Literal["ddim", "ddpm", "dpm_solver"]


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, alpha_prev: torch.Tensor, eta: float,
              generator: torch.Generator | None) -> torch.Tensor:
    """One step from ``x_t`` (given as its ``x0``/``eps`` decomposition) to ``x_prev``."""
    sigma = eta * torch.sqrt((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev))
    direction = torch.sqrt(torch.clamp(1 - alpha_prev - sigma**2, min=0.0)) * eps
    x_prev = torch.sqrt(alpha_prev) * x0 + direction
    if eta > 0:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x_prev = x_prev + sigma * noise
    return x_prev


def run_sampler(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the reverse process from ``x`` at ``timesteps[0]`` down to a clean sample.

    Returns the final ``x0`` estimate, in the model's range ([-1, 1]).
    """
    alphas = alphas_cumprod.to(device=x.device, dtype=x.dtype)
    x0 = x
    for i, t in enumerate(timesteps):
        x0, eps = denoise(x, int(t))
        if i + 1 == len(timesteps):
            break
        x = ddim_step(x0, eps, alphas[t], alphas[timesteps[i + 1]], eta, generator)
    return x0


def dpm_solver_2m(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int],
                  alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) from ``x`` at ``timesteps[0]``; one network evaluation per timestep.

    With ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` and the half log-SNR
    ``lambda_t = log(alpha_t / sigma_t)``, a step of size ``h = lambda_next - lambda_t`` is
    ``x_next = sigma_next / sigma_t * x - alpha_next * (exp(-h) - 1) * D`` where ``D`` is the
    current ``x0`` (first order: exactly DDIM) or its extrapolation with the previous one,
    ``(1 + 1 / (2 r)) x0 - 1 / (2 r) x0_prev``, ``r = h_prev / h`` (second order).
    """
    abar = alphas_cumprod.to(device=x.device, dtype=torch.float64)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    previous: tuple[torch.Tensor, float] | None = None  # (x0, h) of the step before
    x0 = x
    for i, t in enumerate(timesteps):
        x0, _ = denoise(x, int(t))
        if i + 1 == len(timesteps):
            break
        s = timesteps[i + 1]
        h = float(lam[s] - lam[t])
        estimate = x0
        if previous is not None and i + 2 < len(timesteps):
            r = previous[1] / h
            estimate = (1 + 0.5 / r) * x0 - (0.5 / r) * previous[0]
        x = float(sigma[s] / sigma[t]) * x - float(alpha[s] * math.expm1(-h)) * estimate
        previous = (x0, h)
    return x0


def spaced_timesteps(num_train_timesteps: int, num_steps: int, start: int | None = None) -> list[int]:
    """``num_steps`` descending timesteps, evenly spaced from ``start`` (default ``T - 1``) to 0."""
    start = num_train_timesteps - 1 if start is None else start
    if not 1 <= num_steps <= start + 1:
        raise ValueError(f"number of steps must be in [1, {start + 1}], got {num_steps}")
    if num_steps == 1:
        return [start]
    steps = torch.linspace(start, 0, num_steps).round().long().tolist()
    return sorted(set(steps), reverse=True)


@dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler: its function and whether it visits every training timestep (then
    ``num_inference_steps`` does not apply)."""

    run: SamplerFunction
    every_timestep: bool = False


SAMPLERS: dict[str, SamplerEntry] = {
    "ddim": SamplerEntry(lambda denoise, x, timesteps, alphas, generator:
                         run_sampler(denoise, x, timesteps, alphas, eta=0.0, generator=generator)),
    "ddpm": SamplerEntry(lambda denoise, x, timesteps, alphas, generator:
                         run_sampler(denoise, x, timesteps, alphas, eta=1.0, generator=generator), every_timestep=True),
    "dpm_solver": SamplerEntry(lambda denoise, x, timesteps, alphas, generator:
                               dpm_solver_2m(denoise, x, timesteps, alphas)),
}
assert set(SAMPLERS) == set(get_args(Sampler)), "every registered sampler is named in Sampler, and only those"


def get_sampler(name: str) -> SamplerEntry:
    """The registered sampler ``name``; a ``ValueError`` naming the known ones otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})") from None
