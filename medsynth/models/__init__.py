"""Model families behind one interface (:class:`~medsynth.models.base.Synthesizer`).

A family is one module that defines its options dataclass and its synthesizer, registered in
``FAMILIES``; nothing else in medsynth names a family.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from medsynth.config import ConfigError, from_dict
from medsynth.errors import short
from medsynth.models.base import SampleOptions, StepContext, Synthesizer, label_condition, split_options
from medsynth.models.diffusion import DiffusionConfig, DiffusionSynthesizer
from medsynth.models.gan import GANConfig, GANSynthesizer
from medsynth.models.latent import LatentDiffusionConfig, LatentDiffusionSynthesizer

#: family name -> (options dataclass, synthesizer class)
FAMILIES: dict[str, tuple[type, type]] = {
    "diffusion": (DiffusionConfig, DiffusionSynthesizer),
    "gan": (GANConfig, GANSynthesizer),
    "latent_diffusion": (LatentDiffusionConfig, LatentDiffusionSynthesizer),
}


def family_options(family: str, options: dict[str, Any]) -> Any:
    """Validate the ``model:`` section of a config with the family's own options dataclass."""
    if family not in FAMILIES:
        raise ConfigError("family", f"unknown model family {short(family)} (known: {', '.join(FAMILIES)})")
    return from_dict(FAMILIES[family][0], options, "model")


def build_synthesizer(family: str, spatial_dims: int, condition_channels: int, options: dict[str, Any]) -> Synthesizer:
    """A new, untrained synthesizer of ``family``."""
    config = family_options(family, options)
    return FAMILIES[family][1](spatial_dims, condition_channels, config)


_COUNTS: dict[tuple, dict[str, int]] = {}  # parameter_counts of recent configs (tests load configs a lot)


def parameter_counts(family: str, spatial_dims: int, condition_channels: int, options: Any) -> dict[str, int]:
    """Parameters of each of the family's parameter groups (``network``, ``generator``, ...) for
    validated ``options``, without allocating them: the synthesizer is built on the meta device.

    Raises:
        ValueError: the family cannot build this model (its message names the key).
    """
    key = (family, spatial_dims, condition_channels, repr(options))
    if key not in _COUNTS:
        # spectral norm adds buffers, no parameters, and its power iteration costs 0.15 s on meta tensors
        built = dataclasses.replace(options, spectral_norm=False) if getattr(options, "spectral_norm", False) \
            else options
        try:
            with torch.device("meta"):
                model = FAMILIES[family][1](spatial_dims, condition_channels, built)
            counts = {name: sum(p.numel() for p in group["params"])
                      for name, group in model.parameter_groups().items()}
        except ValueError:
            raise
        except Exception:  # noqa: BLE001 - a block that cannot be built on meta tensors: estimate analytically
            counts = options.parameter_estimate(spatial_dims, condition_channels)
        if len(_COUNTS) >= 256:
            _COUNTS.clear()
        _COUNTS[key] = counts
    return dict(_COUNTS[key])


__all__ = ["FAMILIES", "SampleOptions", "StepContext", "Synthesizer", "build_synthesizer", "family_options",
           "label_condition", "parameter_counts", "split_options"]
