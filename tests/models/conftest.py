"""Fixtures shared by the model-family tests."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medsynth.models import StepContext

#: the smallest options of each family that still exercise every part: shared by the family tests
TINY_OPTIONS = {
    "diffusion": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                  "num_head_channels": 8, "num_train_timesteps": 20, "num_inference_steps": 3},
    "gan": {"channels": [8, 16], "noise_channels": 2, "spade_hidden": 8, "discriminator_channels": 8,
            "discriminator_layers": 2},
}
TINY_OPTIONS["latent_diffusion"] = {
    "channels": [8, 16], "latent_channels": 2, "norm_num_groups": 8, "autoencoder_steps": 2,
    "diffusion": {**TINY_OPTIONS["diffusion"], "num_inference_steps": 2}}


@pytest.fixture
def step_context():
    """A factory of the ``StepContext`` the trainer hands a family: per-group Adam (each group's own
    ``lr_scale`` and ``betas``), a seeded generator, CPU, no autocast."""

    def make(model, lr: float = 1e-2, seed: int = 0) -> StepContext:
        optimizers = {name: torch.optim.Adam(group["params"], lr=lr * group.get("lr_scale", 1.0),
                                             betas=group.get("betas", (0.9, 0.999)))
                      for name, group in model.parameter_groups().items()}

        def optimize(group: str, loss: torch.Tensor) -> float:
            loss.backward()
            optimizers[group].step()
            optimizers[group].zero_grad(set_to_none=True)
            return 1.0

        return StepContext(torch.Generator().manual_seed(seed), torch.device("cpu"), contextlib.nullcontext, optimize)

    return make
