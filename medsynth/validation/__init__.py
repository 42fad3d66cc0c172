"""Validation: metrics that compare synthetic with real data, the feature network, the
downstream-segmentation experiment, and the comparison report (the validation layer of docs/architecture.md)."""

from medsynth.validation.compare import CompareConfig, compare, load_compare_config
from medsynth.validation.features import FeatureExtractor, load_feature_extractor, train_feature_network
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
from medsynth.validation.realism import ImageSet, memorization_check, realism_metrics
from medsynth.validation.utility_study import utility_experiment
from medsynth.validation.validate import load_image_set, validate

__all__ = ["CompareConfig", "FeatureExtractor", "ImageSet", "Memorization", "compare", "density_coverage",
           "frechet_distance", "intensity_distance", "kernel_inception_distance", "load_compare_config",
           "load_feature_extractor", "load_image_set", "memorization", "memorization_check", "ms_ssim_diversity",
           "precision_recall", "realism_metrics", "train_feature_network", "utility_experiment", "validate"]
