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

import torch

from medsynth.validation.metrics import ms_ssim_diversity
from medsynth.validation.realism import diversity
from medsynth.validation.statistics import bootstrap
from medsynth.validation.unpaired import as_ci95

WITHIN_FRACTION = 0.1
ACROSS_FRACTION = 0.5


def diversity_check(samples: torch.Tensor | Sequence[torch.Tensor], real: torch.Tensor, *,
                    within_fraction: float = WITHIN_FRACTION, across_fraction: float = ACROSS_FRACTION) -> dict:
    """Within- and across-condition MS-SSIM of ``samples`` beside ``real``'s, and the collapse flags.

    ``samples`` holds one ``(K, 1, *spatial)`` group of samples per condition (or one tensor
    ``(C, K, 1, *spatial)``), K >= 2; ``real`` is ``(N, 1, *spatial)``, N >= 2, all in [0, 1].
    Returns ``within`` (``{"value", "ci95"}``), ``across`` and ``real`` (mean pairwise MS-SSIM; the
    across and real values use at most ``realism.DIVERSITY_IMAGES`` images), the flags
    ``collapse_within``, ``collapse_across``, ``collapse`` (either), and the ``rule``.
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
    collapse_within = 1 - within.value < within_fraction * gap
    collapse_across = across is not None and 1 - across < across_fraction * gap
    rule = (f"collapse within a condition when 1 - within < {within_fraction:g} x (1 - real); across conditions "
            f"when 1 - across < {across_fraction:g} x (1 - real); real = mean pairwise MS-SSIM of real images")
    return {"within": as_ci95(within), "within_per_condition": per_condition, "across": across, "real": reference,
            "conditions": len(groups), "samples_per_condition": [len(g) for g in groups],
            "collapse_within": bool(collapse_within), "collapse_across": bool(collapse_across),
            "collapse": bool(collapse_within or collapse_across), "rule": rule}
