"""How a model runs over a whole volume: inference strategies as small objects, in the spirit of
MONAI's ``SliceInferer`` and ``SlidingWindowInferer``.

An inferer takes a model, a condition ``(C, *spatial)`` (or ``None``), an optional start image
``init`` ``(*spatial)`` and :class:`~medsynth.models.base.SampleOptions`, and returns the output
``(*spatial)`` in [0, 1]. Ensembles and overlapping windows are averaged unclipped and the
result is clipped once: clipping each part first biases the mean where the truth sits at 0 (air).
Seeds are ``seed`` plus the index of the first slice of a batch (or of the window batch), so the
same seed gives the same volume whatever the batch size of a 3D run... and of a 2D run, batch by
batch. :func:`choose_inferer` picks one from the run's config.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import torch

from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions, Synthesizer
from medsynth.training.experiment import ExperimentConfig

#: 3D restoration runs in overlapping windows this many training patches a side, Gaussian-blended:
#: windows of one patch leave some holding background only, which training never showed
#: (``data.min_foreground``), and the whole volume at once puts the network outside the field of
#: view it was trained on (docs/architecture.md).
WINDOW_PATCHES = 2
WINDOW_OVERLAP = 0.5


class Inferer(Protocol):
    def __call__(self, model: Synthesizer, condition: torch.Tensor | None, *, seed: int,
                 spatial: tuple[int, ...], options: SampleOptions,
                 init: torch.Tensor | None = None) -> torch.Tensor:
        """The output ``(*spatial)`` in [0, 1] (on the CPU) for ``condition`` ``(C, *spatial)``."""


def _device(model: Synthesizer) -> torch.device:
    return next(model.parameters()).device


@dataclass(frozen=True)
class SliceInferer:
    """A 2D model over a volume, ``batch_size`` slices across ``axis`` per call."""

    axis: int
    batch_size: int = 8

    def __call__(self, model: Synthesizer, condition: torch.Tensor | None, *, seed: int,
                 spatial: tuple[int, ...], options: SampleOptions,
                 init: torch.Tensor | None = None) -> torch.Tensor:
        device = _device(model)
        cond = None if condition is None else condition.movedim(self.axis + 1, 0)  # (N, C, a, b)
        start = None if init is None else init[None].movedim(self.axis + 1, 0)
        count = spatial[self.axis]
        plane = tuple(s for i, s in enumerate(spatial) if i != self.axis)
        outputs = []
        for first in range(0, count, self.batch_size):
            part = slice(first, min(first + self.batch_size, count))
            batch_init = None if start is None else start[part].to(device)
            out = model.sample(None if cond is None else cond[part].to(device), seed=seed + first,
                               shape=(part.stop - part.start, 1, *plane),
                               options=options.replace(init=batch_init, clip=False))
            outputs.append(out[:, 0].cpu())
        return torch.cat(outputs).movedim(0, self.axis).clamp(0, 1)


@dataclass(frozen=True)
class WholeVolumeInferer:
    """The whole image in one call (label-conditioned generation: one map, one coherent volume)."""

    def __call__(self, model: Synthesizer, condition: torch.Tensor | None, *, seed: int,
                 spatial: tuple[int, ...], options: SampleOptions,
                 init: torch.Tensor | None = None) -> torch.Tensor:
        device = _device(model)
        start = None if init is None else init[None, None].to(device)
        cond = None if condition is None else condition[None].to(device)
        return model.sample(cond, seed=seed, shape=(1, 1, *spatial), options=options.replace(init=start))[0, 0].cpu()


@dataclass(frozen=True)
class SlidingWindowInferer:
    """Overlapping ``window`` s blended with Gaussian weights (MONAI ``sliding_window_inference``),
    ``batch_size`` windows per call; window batch ``k`` is sampled with seed ``seed + k``.

    A start image travels with the condition as an extra channel, so each window starts from its own part.
    """

    window: tuple[int, ...]
    batch_size: int = 8
    overlap: float = WINDOW_OVERLAP

    def __call__(self, model: Synthesizer, condition: torch.Tensor | None, *, seed: int,
                 spatial: tuple[int, ...], options: SampleOptions,
                 init: torch.Tensor | None = None) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        if condition is None:
            raise MedsynthError("sliding windows need a condition to cut into windows")
        device = _device(model)
        channels = condition.shape[0]
        inputs = condition if init is None else torch.cat([condition, init[None]])
        calls = itertools.count()

        def predict(windows: torch.Tensor) -> torch.Tensor:  # windows come in a fixed order: seeds are reproducible
            start = None if init is None else windows[:, channels:]
            return model.sample(windows[:, :channels], seed=seed + next(calls),
                                options=options.replace(init=start, clip=False))

        out = sliding_window_inference(inputs[None].to(device), self.window, self.batch_size, predict,
                                       overlap=self.overlap, mode="gaussian")
        return out[0, 0].clamp(0, 1).cpu()


def restoration_window(config: ExperimentConfig, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Window of patch-wise restoration: :data:`WINDOW_PATCHES` training patches a side, at most the image."""
    return tuple(min(s, WINDOW_PATCHES * p) for s, p in zip(spatial, config.data.patch_size, strict=True))


def choose_inferer(config: ExperimentConfig, spatial: tuple[int, ...], *, conditional: bool, batch_size: int = 8,
                   patch_wise: bool | None = None) -> Inferer:
    """The strategy for a model trained with ``config`` on an image of ``spatial`` size.

    A 2D model on a volume: slice by slice across ``data.slice_axis``. Otherwise the whole image,
    or, with ``patch_wise`` (default: restoration, which has a condition to cut), overlapping
    windows (:func:`restoration_window`).

    Raises:
        MedsynthError: a 3D model given a 2D image.
    """
    if config.spatial_dims == 2 and len(spatial) == 3:
        return SliceInferer(config.data.slice_axis, batch_size)
    if config.spatial_dims == 3 and len(spatial) != 3:
        raise MedsynthError("a 3D model needs 3D images; this one is 2D")
    if patch_wise is None:
        patch_wise = conditional and config.job.name != "generate"
    if patch_wise:
        return SlidingWindowInferer(restoration_window(config, spatial), batch_size)
    return WholeVolumeInferer()
