"""The real slices ``medsynth compare`` measures on, and the synthetic sets it makes from their label maps.

Real: the training part's and the test part's 2D slices (along ``data.slice_axis``) whose label
foreground covers at least ``min_foreground``. Synthetic: images for randomly deformed copies of
*training* label maps, as ``medsynth augment`` makes them, so no synthetic image shares its
condition with a held-out real image (realism is measured unpaired).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions, label_condition
from medsynth.progress import progress as show_progress
from medsynth.synthesis.apply import TrainedModel, output_seed
from medsynth.synthesis.labels import deform_label
from medsynth.training.dataset import load_volumes, split_volumes
from medsynth.training.experiment import ExperimentConfig
from medsynth.validation.realism import ImageSet, common_shape, foreground_slices, stack_images


@dataclass
class RealSlices:
    """Training and held-out (test part) slices; ``train_index[i]`` is training slice ``i``'s index
    in ``data.train_slices`` numbering (the training part's slices in split order)."""

    train: ImageSet
    held: ImageSet
    train_index: list[int]


def real_slices(experiment: ExperimentConfig, min_foreground: float) -> RealSlices:
    """The real training and held-out 2D slices of the experiment's data, on one grid."""
    volumes = load_volumes(experiment.data, experiment.spatial_dims)
    if any(v.label is None for v in volumes):
        raise MedsynthError("compare: the data has no label maps (data.labels); generate models need them")
    parts = split_volumes(volumes, experiment.data)
    axis = experiment.data.slice_axis

    def cut(pieces: list) -> tuple[list, list, list, list]:
        images, labels, names, index = [], [], [], []
        offset = 0
        for part in pieces:
            for k in foreground_slices(part.image[0], part.label[0], axis, min_foreground):
                images.append(part.image[0].select(axis, k))
                labels.append(part.label[0].select(axis, k))
                names.append(f"{part.name}:{k}")
                index.append(offset + k)
            offset += part.image.shape[1 + axis]
        return images, labels, names, index

    train, held = cut(parts["train"]), cut(parts["test"])
    for what, found in (("training", train), ("held-out", held)):
        if len(found[0]) < 5:
            raise MedsynthError(f"compare: only {len(found[0])} {what} slices with label foreground >= "
                                f"{min_foreground} (at least 5 needed); check data.test and min_foreground")
    shape = common_shape(held[0] + train[0])

    def to_set(images: list, labels: list, names: list) -> ImageSet:
        return ImageSet(stack_images(images, shape), stack_images(labels, shape).round().long(), names)

    return RealSlices(to_set(*train[:3]), to_set(*held[:3]), train[3])


def class_names(experiment: ExperimentConfig) -> list[str]:
    from medsynth.data.samples import TISSUE_CLASSES

    classes = experiment.job.num_classes
    if experiment.data.images is None and classes == len(TISSUE_CLASSES):
        return list(TISSUE_CLASSES)
    return ["background"] + [f"class_{k}" for k in range(1, classes)]


def deformed_conditions(train: ImageSet, sources: list[int], seed: int, deform: float,
                        tag: str = "augment") -> tuple[torch.Tensor, list[int], list[str]]:
    """One deformed copy of training label map ``sources[k]`` per ``k`` (``deform_label``, as ``augment``),
    with the seed of each output and its name. The same ``(sources, seed, tag)`` give the same maps."""
    seeds = [output_seed(seed, f"{train.names[s]}/{tag}/{k}") for k, s in enumerate(sources)]
    labels = torch.stack([torch.as_tensor(deform_label(train.labels[s, 0].numpy(), z, deform))[None]
                          for s, z in zip(sources, seeds, strict=True)])
    names = [f"{train.names[s]}#{tag}{k}" for k, s in enumerate(sources)]
    return labels.long(), seeds, names


def sample_images(trained: TrainedModel, labels: torch.Tensor, seeds: list[int], options: SampleOptions,
                  batch_size: int, desc: str, progress: bool = True) -> tuple[torch.Tensor, float]:
    """One image per label map (``(N, 1, *spatial)``), each batch seeded by its first item; images and seconds."""
    classes = trained.config.job.num_classes
    out = []
    began = time.perf_counter()
    with torch.no_grad():
        for start in show_progress(range(0, len(labels), batch_size), desc=desc, leave=False, enabled=progress):
            condition = label_condition(labels[start:start + batch_size, 0], classes)
            out.append(trained.model.sample(condition.to(trained.device), seed=seeds[start], options=options)
                       .float().cpu().clamp(0, 1))
    return torch.cat(out), time.perf_counter() - began
