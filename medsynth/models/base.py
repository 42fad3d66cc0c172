"""The one interface every model family implements: a conditional image-to-image generator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from medsynth.config import check_range
from medsynth.errors import short

#: Widest layer (channels) and most resolution levels an options dataclass accepts.
MAX_WIDTH, MAX_LEVELS = 4096, 8


def check_widths(options: Any, key: str = "channels", min_levels: int = 1) -> None:
    """Refuse ``options.<key>`` (one width per level) with fewer than ``min_levels`` or more than
    ``MAX_LEVELS`` levels, or a width outside ``[1, MAX_WIDTH]``.

    Raises:
        ValueError: ``"<key>: ..."``.
    """
    widths = getattr(options, key)
    if not min_levels <= len(widths) <= MAX_LEVELS:
        count = {1: "one level", 2: "two levels"}.get(min_levels, f"{min_levels} levels")
        raise ValueError(f"{key}: needs at least {count} of at least one channel and at most {MAX_LEVELS} levels, "
                         f"got {short(list(widths))}")
    check_range(options, key, 1, MAX_WIDTH)


def check_patch_stride(patch_size: tuple[int, ...], levels: int, key: str = "channels") -> None:
    """Refuse a training patch a U-Net of ``levels`` levels cannot take unpadded: its skip connections
    need every side to be a multiple of ``2 ** (levels - 1)``.

    Raises:
        ValueError: ``"<key>: ..."``.
    """
    stride = 2 ** (levels - 1)
    if any(side % stride for side in patch_size):
        raise ValueError(f"{key}: {levels} levels need every side of data.patch_size to be a multiple of {stride}, "
                         f"got {short(list(patch_size))}")


def conv_parameters(spatial_dims: int, cin: int, cout: int, kernel: int = 3) -> int:
    """Weights and bias of one convolution (for the analytic size estimates of the options dataclasses)."""
    return cin * cout * kernel**spatial_dims + cout


@dataclass
class StepContext:
    """What the trainer hands a family's ``training_step``.

    Attributes:
        generator: CPU generator for every random draw of the step (noise, timesteps, dropout),
            saved in checkpoints so that a resumed run repeats the same draws.
        device: device of the networks and the batch.
        autocast: context manager factory for mixed precision (a no-op on CPU).
        optimize: ``optimize(group, loss) -> grad_norm``: backward, unscale, (average over
            ranks,) clip, step and zero the gradients of one parameter group.
        rank, world_size: this process among the data-parallel ones (``torchrun``).

    Draws are per sample: the first axis of ``shape`` is the batch.
    """

    generator: torch.Generator
    device: torch.device
    autocast: Callable[[], object]
    optimize: Callable[[str, torch.Tensor], float]
    rank: int = 0
    world_size: int = 1

    def _draw(self, draw: Callable[..., torch.Tensor], shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """A per-sample draw (first axis: the batch). With several ranks, the draw is made for the
        global batch (every rank's generator is in the same state) and this rank keeps its rows,
        so K ranks with batch B see the noise one process with batch K * B would."""
        if self.world_size == 1 or not len(shape):
            return draw(tuple(shape)).to(self.device)
        rows = shape[0]
        full = draw((rows * self.world_size, *shape[1:]))
        return full[self.rank * rows:(self.rank + 1) * rows].to(self.device)

    def randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return self._draw(lambda s: torch.randn(s, generator=self.generator), shape)

    def rand(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return self._draw(lambda s: torch.rand(s, generator=self.generator), shape)

    def randint(self, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return self._draw(lambda s: torch.randint(0, high, s, generator=self.generator), shape)


@dataclass(frozen=True)
class GridPadding:
    """Replicate padding of the spatial axes up to a multiple (a network's total stride), and the crop back.

    Networks that halve the grid ``n`` times need sides divisible by ``2**n``; images of any size
    are padded on both sides, run, and cropped back to their own grid.
    """

    padding: tuple[int, ...]  # torch.nn.functional.pad order: last axis first, (before, after) pairs
    crop: tuple[slice, ...]
    shape: tuple[int, ...]  # padded spatial shape

    @classmethod
    def to_multiple(cls, spatial: tuple[int, ...], multiple: int) -> GridPadding:
        pads = [(-size) % multiple for size in spatial]
        padding = tuple(p for pad in reversed(pads) for p in (pad // 2, pad - pad // 2))
        crop = tuple(slice(pad // 2, pad // 2 + size) for pad, size in zip(pads, spatial, strict=True))
        return cls(padding, crop, tuple(s + p for s, p in zip(spatial, pads, strict=True)))

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """Pad ``(B, C, *spatial)`` (replicating the border voxels)."""
        return torch.nn.functional.pad(image, list(self.padding), mode="replicate") if any(self.padding) else image

    def crop_back(self, image: torch.Tensor) -> torch.Tensor:
        return image[(slice(None), slice(None), *self.crop)]


def output_shape(condition: torch.Tensor | None, init: torch.Tensor | None, shape: tuple[int, ...] | None,
                 condition_channels: int) -> tuple[int, ...]:
    """``(B, 1, *spatial)`` of a diffusion sample: ``shape``, else the grid of ``condition`` or ``init``.

    Raises:
        ValueError: a condition with the wrong channel count, or nothing to take the shape from.
    """
    given = 0 if condition is None else condition.shape[1]
    if given != condition_channels:
        raise ValueError(f"this model takes a condition of {condition_channels} channels, got {given}")
    reference = condition if condition is not None else init
    if reference is None and shape is None:
        raise ValueError("an unconditional sample needs `shape` or `init`")
    return tuple(shape) if shape is not None else (reference.shape[0], 1, *reference.shape[2:])


@runtime_checkable
class Synthesizer(Protocol):
    """A conditional generator: condition ``(B, C, *spatial)`` (or nothing) to image ``(B, 1, *spatial)``.

    Images are in [0, 1] (the data layer's normalised range); conditions are images in [0, 1]
    (denoise, super-resolve) or one-hot label maps (generate). Families are ``nn.Module`` s, so
    ``state_dict``/``load_state_dict``/``to`` come with them.
    """

    family: str
    spatial_dims: int
    #: the losses a progress bar shows (of those ``training_step`` returns; NaN ones are skipped)
    progress_losses: tuple[str, ...]

    @property
    def sampler_config(self) -> Any:
        """The options of the family's iterative sampler (sampler, steps, schedule: a
        ``DiffusionConfig``), or ``None`` for a family that samples in one pass."""

    def parameter_groups(self) -> dict[str, dict]:
        """One optimizer per entry, in ``torch.optim`` param-group style: ``{"params": [...]}`` plus
        optional ``lr_scale`` (times ``train.lr``, e.g. TTUR) and ``betas``; names such as
        ``"network"`` or ``"generator"`` and ``"discriminator"``."""

    def ema_modules(self) -> dict[str, nn.Module]:
        """Sub-modules whose exponential moving average is used for sampling."""

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        """One optimisation step on ``batch`` (``target`` and, if conditional, ``condition``); returns losses."""

    def network_evaluations(self, **options) -> int:
        """Network calls per image that :meth:`sample` makes with these ``options``: sampler steps,
        two per step with classifier-free guidance, times an ensemble, plus any decoder pass. The
        one place a cost in network evaluations comes from (``compare``, ``augment``, benchmarks)."""

    def sample(self, condition: torch.Tensor | None, *, seed: int, **options) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` in [0, 1] on the grid of ``condition`` (with ``clip=False``:
        the unclipped mean of the family's samples, for callers that average further)."""
