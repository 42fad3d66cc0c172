"""Training layer: experiment configs, cached training data, and the one trainer for every family."""

from medsynth.training.experiment import ExperimentConfig, load_experiment
from medsynth.training.run_dir import RunDirectory
from medsynth.training.trainer import Trainer

__all__ = ["ExperimentConfig", "RunDirectory", "Trainer", "load_experiment"]
