"""The near-copy check of ``augment --reject-copies``: is an output closer to a training image than
training images are to each other? (The memorization metric, applied to one output at a time.)"""

from __future__ import annotations

import math
import os

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.training import RunDirectory
from medsynth.training.dataset import load_volumes, select_slices, split_volumes
from medsynth.validation.metrics import memorization
from medsynth.validation.realism import common_shape, foreground_slices, stack_images

#: slices whose foreground covers less than this are not compared (near-empty slices all look alike)
MIN_FOREGROUND = 0.1


def _slices(volume: np.ndarray, axis: int, label: np.ndarray | None = None) -> list[np.ndarray]:
    """2D slices along ``axis`` with enough foreground to compare."""
    return [volume.take(k, axis) for k in foreground_slices(volume, label, axis, MIN_FOREGROUND)]


def near_copy_check(run_dir: str | os.PathLike, threshold: float = 0.5):
    """A copy check for :func:`medsynth.synthesis.augment`: reads the run's real training data (its
    config's ``data``: its training part, cut to ``data.train_slices``) once, and flags an output
    (model space) whose closest slice (2D models) or volume (3D) lies nearer a training one than
    ``threshold`` times that training image's distance to its own nearest neighbour. Returns the
    ratio when flagged.
    """
    if not (math.isfinite(threshold) and threshold > 0):
        raise MedsynthError(f"--copy-threshold {threshold}: must be a positive number")
    config = RunDirectory(run_dir).read_config()
    train = select_slices(split_volumes(load_volumes(config.data, config.spatial_dims), config.data)["train"],
                          config.data)  # what the model saw: its training part, cut to data.train_slices
    axis = config.data.slice_axis
    if config.spatial_dims == 2:
        images = [s for v in train for s in _slices(v.image[0].numpy(), axis,
                                                    None if v.label is None else v.label[0].numpy())]
    else:
        images = [v.image[0].numpy() for v in train]
    if len(images) < 2:
        raise MedsynthError(f"{run_dir}: fewer than 2 training images to compare outputs with")
    shape = common_shape(images)
    reference = stack_images(images, shape).flatten(1).numpy()

    def check(output: np.ndarray) -> float | None:
        if config.spatial_dims == 3:
            candidates = [output]
        else:
            candidates = [output] if output.ndim == 2 else _slices(output, axis)
        if not candidates:
            return None
        result = memorization(reference, stack_images(candidates, shape).flatten(1).numpy(), threshold)
        ratio = float(result.ratio.min())
        return ratio if ratio < threshold else None

    return check
