"""Synthesis pipelines: apply a trained model to folders of real images (docs/architecture.md, Layers)."""

from medsynth.synthesis.apply import TrainedModel, run_on_volume
from medsynth.synthesis.augment import augment, synthesize
from medsynth.synthesis.mixing import OnTheFlySynthesis, SyntheticMixDataset
from medsynth.synthesis.restore import restore
from medsynth.synthesis.self_supervised import SelfTraining

__all__ = ["OnTheFlySynthesis", "SelfTraining", "SyntheticMixDataset", "TrainedModel", "augment", "restore",
           "run_on_volume", "synthesize"]
