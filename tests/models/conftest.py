"""Fixtures shared by the model-family tests."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medsynth.models import StepContext


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
