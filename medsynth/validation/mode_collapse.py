"""Diversity of a conditional generator beside the real data's, with an explicit mode-collapse flag.

MS-SSIM (:func:`medsynth.validation.metrics.ms_ssim_diversity`) of two images is 1 when they are
identical and falls as they differ; the mean over pairs of a set says how alike its images are.
Two quantities, each beside the real images' own cross-sample value:

- *within condition*: among several samples for one condition (one label map), averaged over
  conditions, with a 95% bootstrap interval over conditions. Real data has one image per label
  map, so it has no within-condition value; its cross-sample value is the reference.
- *across conditions*: among one sample per condition.

**Collapse rule.** With ``gap = 1 - real`` (how far real images are from identical to each other):
within-condition collapse when ``1 - within < WITHIN_FRACTION * gap`` (samples for one condition
differ from each other less than a tenth as much as real images do: the generator ignores its
noise); across-condition collapse when ``1 - across < ACROSS_FRACTION * gap`` (samples for
different conditions are closer to identical than half the real spread). Within-condition
collapse is harmless for restoration and fatal for augmentation. MS-SSIM sees structure and
contrast, not whether the variety is anatomically plausible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medsynth.validation.metrics import ms_ssim_diversity
from medsynth.validation.realism import diversity
from medsynth.validation.statistics import Estimate, bootstrap
from medsynth.validation.unpaired import as_ci95

WITHIN_FRACTION = 0.1
ACROSS_FRACTION = 0.5


@dataclass(frozen=True)
class DiversityCheck:
    """Within- and across-condition MS-SSIM beside the real images' own, and the collapse flags."""

    within: Estimate  # mean over conditions with a 95% bootstrap interval over conditions
    within_per_condition: list[float]
    across: float | None  # None with one condition
    real: float
    samples_per_condition: list[int]
    collapse_within: bool
    collapse_across: bool
    rule: str

    @property
    def collapse(self) -> bool:
        return self.collapse_within or self.collapse_across

    def as_dict(self) -> dict:
        return {"within": as_ci95(self.within), "within_per_condition": self.within_per_condition,
                "across": self.across, "real": self.real, "conditions": len(self.samples_per_condition),
                "samples_per_condition": self.samples_per_condition, "collapse_within": self.collapse_within,
                "collapse_across": self.collapse_across, "collapse": self.collapse, "rule": self.rule}


def diversity_check(samples: torch.Tensor | Sequence[torch.Tensor], real: torch.Tensor, *,
                    within_fraction: float = WITHIN_FRACTION, across_fraction: float = ACROSS_FRACTION
                    ) -> DiversityCheck:
    """Within- and across-condition MS-SSIM of ``samples`` beside ``real``'s, and the collapse flags.

    ``samples`` holds one ``(K, 1, *spatial)`` group of samples per condition (or one tensor
    ``(C, K, 1, *spatial)``), K >= 2; ``real`` is ``(N, 1, *spatial)``, N >= 2, all in [0, 1].
    ``across`` and ``real`` are mean pairwise MS-SSIM over at most ``realism.DIVERSITY_IMAGES`` images.
    """
    groups = list(samples)
    if not groups or any(len(g) < 2 for g in groups):
        raise ValueError("diversity needs at least two samples for each condition")
    spatial_dims = groups[0].ndim - 2
    per_condition = [ms_ssim_diversity(g, spatial_dims=spatial_dims) for g in groups]
    within = bootstrap([per_condition])
    across = diversity(torch.stack([g[0] for g in groups])) if len(groups) >= 2 else None
    reference = diversity(real)
    gap = 1 - reference
    rule = (f"collapse within a condition when 1 - within < {within_fraction:g} x (1 - real); across conditions "
            f"when 1 - across < {across_fraction:g} x (1 - real); real = mean pairwise MS-SSIM of real images")
    return DiversityCheck(within, per_condition, across, reference, [len(g) for g in groups],
                          collapse_within=bool(1 - within.value < within_fraction * gap),
                          collapse_across=bool(across is not None and 1 - across < across_fraction * gap), rule=rule)
