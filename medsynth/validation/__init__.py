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
from medsynth.validation.nearest_training import calibrated_memorization
from medsynth.validation.realism import ImageSet
from medsynth.validation.unpaired import fid_check, kid_interval
from medsynth.validation.utility_study import utility_experiment
from medsynth.validation.validate import load_image_set, validate

__all__ = ["CompareConfig", "FeatureExtractor", "ImageSet", "Memorization", "calibrated_memorization", "compare",
           "density_coverage", "fid_check", "frechet_distance", "intensity_distance", "kernel_inception_distance",
           "kid_interval", "load_compare_config", "load_feature_extractor", "load_image_set", "memorization",
           "ms_ssim_diversity", "precision_recall", "train_feature_network", "utility_experiment", "validate"]
