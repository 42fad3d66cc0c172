"""Validation: metrics that compare synthetic data with real data (layer 6 of DESIGN.md)."""

from medsynth.validation.metrics import (
    Memorization,
    density_coverage,
    frechet_distance,
    intensity_distance,
    kernel_inception_distance,
    memorization,
    ms_ssim_diversity,
    precision_recall,
)

__all__ = ["Memorization", "density_coverage", "frechet_distance", "intensity_distance",
           "kernel_inception_distance", "memorization", "ms_ssim_diversity", "precision_recall"]
