"""Model families behind one interface (:class:`~medsynth.models.base.Synthesizer`).

A family is one module that defines its options dataclass and its synthesizer, registered in
``FAMILIES``; nothing else in medsynth names a family.
"""

from __future__ import annotations

from typing import Any

from medsynth.config import from_dict
from medsynth.errors import MedsynthError
from medsynth.models.base import StepContext, Synthesizer
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
        raise MedsynthError(f"family: unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    return from_dict(FAMILIES[family][0], options, "model")


def build_synthesizer(family: str, spatial_dims: int, condition_channels: int, options: dict[str, Any]) -> Synthesizer:
    """A new, untrained synthesizer of ``family``."""
    config = family_options(family, options)
    return FAMILIES[family][1](spatial_dims, condition_channels, config)


__all__ = ["FAMILIES", "StepContext", "Synthesizer", "build_synthesizer", "family_options"]
