"""The one interface every model family implements: a conditional image-to-image generator."""

from __future__ import annotations

import itertools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
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


@dataclass(frozen=True, eq=False)
class SampleOptions:
    """How :meth:`Synthesizer.sample` samples: every option any family understands.

    ``None`` means the model's own default (its config's ``sampler``, ``num_inference_steps``,
    ``guidance_scale``, ``ensemble``). A family lists the options it takes in ``sample_options``;
    :func:`split_options` is the one place the others are told apart, so that ``sample`` refuses
    them and a command line can note them and go on.

    Attributes:
        sampler: a name in :data:`medsynth.models.samplers.SAMPLERS` (iterative families).
        steps: sampler steps (ignored by samplers that visit every timestep, such as ``ddpm``).
        guidance: classifier-free guidance weight (1: the plain conditional model).
        ensemble: average this many samples (seeds ``seed``, ``seed + 1``, ...): an estimate of
            the posterior mean, the estimate that maximises PSNR.
        flips: also average over every combination of flips of the spatial axes (geometric
            self-ensemble, ``2 ** dims`` times the cost); flip ``k`` is sampled with seed ``seed + k``.
        init: ``(B, 1, *spatial)`` image in [0, 1] to start from (SDEdit, Meng et al. 2022): it is
            noised to ``strength`` of the schedule and denoised from there.
        strength: fraction of the schedule to noise ``init`` to, in (0, 1] (``None``: 1).
        clip: clip the result to [0, 1]; ``False`` returns the unclipped mean, for callers that
            average further (overlapping windows) and clip once at the end.
    """

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    ensemble: int | None = None
    flips: bool = False
    init: torch.Tensor | None = None
    strength: float | None = None
    clip: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "ensemble"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength!r}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance!r}")

    def given(self) -> list[str]:
        """Names of the options set away from their default."""
        return [f.name for f in fields(self) if not _is_default(getattr(self, f.name), f.default)]

    def replace(self, **changes: Any) -> SampleOptions:
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The options given, as JSON-friendly values (``init`` as its shape), for manifests and reports."""
        return {name: list(self.init.shape) if name == "init" else getattr(self, name) for name in self.given()}


def _is_default(value: Any, default: Any) -> bool:
    return value is None if default is None else (not isinstance(value, torch.Tensor) and value == default)


#: what every family takes: averaging and clipping are the shared loop's (:meth:`SamplingMixin.sample`)
COMMON_OPTIONS = frozenset({"ensemble", "flips", "clip"})


def split_options(model: Synthesizer, options: SampleOptions) -> tuple[SampleOptions, list[str]]:
    """``options`` without those ``model`` does not take, and their names (empty when it takes all).

    The one place a family's options are told from the others: ``sample`` refuses what is left
    over; the trainer's previews and the command line drop it (the command line with a note).
    """
    refused = [name for name in options.given() if name not in model.sample_options]
    defaults = SampleOptions()
    return options.replace(**{name: getattr(defaults, name) for name in refused}), refused


def refuse_options(model: Synthesizer, options: SampleOptions) -> None:
    """Raise for options ``model`` does not take, naming them and the ones it does.

    Raises:
        ValueError: ``"<family> does not take <names> ..."``.
    """
    _, refused = split_options(model, options)
    if refused:
        raise ValueError(f"the {model.family} family does not take the sampling option(s) {', '.join(refused)} "
                         f"(it takes {', '.join(sorted(model.sample_options))})")


def check_residual(residual: bool, condition_channels: int) -> None:
    """Refuse ``model.residual`` (a correction added to the condition) without a one-channel image condition."""
    if residual and condition_channels != 1:
        raise ValueError("model.residual needs a one-channel image condition (denoise or super_resolve)")


def flip_subsets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of the spatial axes of a ``(B, C, *spatial)`` tensor, the empty one first."""
    axes = range(2, 2 + spatial_dims)
    return [dims for size in range(spatial_dims + 1) for dims in itertools.combinations(axes, size)]


def ensemble_mean(member: Callable[[int], torch.Tensor], seed: int, count: int) -> torch.Tensor:
    """The unclipped mean of ``count`` samples ``member(seed + k)``: the one ensemble loop of every family."""
    total = None
    for k in range(count):
        out = member(seed + k)
        if total is None:
            total = torch.zeros_like(out)
        total += out
    return total / count


def label_condition(labels: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """The condition of a label-conditioned model for integer label maps ``(B, *spatial)``: one-hot,
    channels first, ``(B, num_classes, *spatial)`` float32 (on the labels' device). The one place
    a label map becomes a condition: training, ``augment``, ``compare`` and benchmarks alike."""
    labels = torch.as_tensor(labels)
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


def output_shape(condition: torch.Tensor | None, init: torch.Tensor | None, shape: tuple[int, ...] | None,
                 condition_channels: int) -> tuple[int, ...]:
    """``(B, 1, *spatial)`` of a sample: ``shape``, else the grid of ``condition`` or ``init``.

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


class SamplingMixin(ABC):
    """The sampling every family shares: options checked in one place, the flip ensemble, clipping.

    A family implements ``_sample_mean(condition, shape, seed, options)``: the unclipped mean of
    its ``options.ensemble`` (or default) samples on the grid of ``shape`` (through
    :func:`ensemble_mean`), ``_evaluations_per_sample(options)`` and, if its default ensemble is
    not one, ``_default_ensemble()``.
    """

    family: str
    spatial_dims: int
    condition_channels: int
    sample_options: frozenset[str] = COMMON_OPTIONS

    @abstractmethod
    def _sample_mean(self, condition: torch.Tensor | None, shape: tuple[int, ...], seed: int,
                     options: SampleOptions) -> torch.Tensor:
        """The unclipped mean of the family's samples for one orientation of ``condition``."""

    def _default_ensemble(self) -> int:
        return 1

    def sampling_defaults(self) -> SampleOptions:
        return SampleOptions(ensemble=self._default_ensemble())

    @abstractmethod
    def _evaluations_per_sample(self, options: SampleOptions) -> int:
        """Network calls of one sample (one ensemble member, one flip)."""

    def cost(self, options: SampleOptions | None = None) -> int:
        """Network evaluations per output of :meth:`sample` with ``options``: the family's per
        sample, times the ensemble and the flips. The one place a cost in network evaluations comes
        from (``compare``, ``augment``, benchmarks).

        Raises:
            ValueError: options this family does not take.
        """
        options = options or SampleOptions()
        refuse_options(self, options)
        flips = len(flip_subsets(self.spatial_dims)) if options.flips else 1
        return self._evaluations_per_sample(options) * (options.ensemble or self._default_ensemble()) * flips

    @torch.no_grad()
    def sample(self, condition: torch.Tensor | None, *, seed: int, shape: tuple[int, ...] | None = None,
               options: SampleOptions | None = None) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` in [0, 1] on the grid of ``condition`` (or ``options.init``, or ``shape``).

        Args:
            condition: ``(B, C, *spatial)``, or ``None`` for an unconditional model.
            seed: seeds every draw: same seed, same images.
            shape: ``(B, 1, *spatial)`` when there is neither a condition nor an ``init``.
            options: how to sample (:class:`SampleOptions`); default: the model's own settings.

        Raises:
            ValueError: options the family does not take, a condition with the wrong channels.
        """
        options = options or SampleOptions()
        refuse_options(self, options)
        init = options.init
        shape = output_shape(condition, init, shape, self.condition_channels)
        subsets = flip_subsets(len(shape) - 2) if options.flips else [()]
        total = None
        for k, dims in enumerate(subsets):
            def flip(tensor: torch.Tensor | None, dims: tuple[int, ...] = dims) -> torch.Tensor | None:
                return tensor.flip(dims) if tensor is not None and dims else tensor

            flipped = options.replace(init=flip(init))
            out = flip(self._sample_mean(flip(condition), shape, seed + k, flipped))
            total = out if total is None else total + out
        mean = total / len(subsets)
        return mean.clamp(0, 1) if options.clip else mean


@runtime_checkable
class Synthesizer(Protocol):
    """A conditional generator: condition ``(B, C, *spatial)`` (or nothing) to image ``(B, 1, *spatial)``.

    Images are in [0, 1] (the data layer's normalised range); conditions are images in [0, 1]
    (denoise, super-resolve) or one-hot label maps (generate). Families are ``nn.Module`` s, so
    ``state_dict``/``load_state_dict``/``to`` come with them; they sample through
    :class:`SamplingMixin`.
    """

    family: str
    spatial_dims: int
    condition_channels: int
    #: the losses a progress bar shows (of those ``training_step`` returns; NaN ones are skipped)
    progress_losses: tuple[str, ...]
    #: the fields of :class:`SampleOptions` this family takes (the others are refused)
    sample_options: frozenset[str]

    def sampling_defaults(self) -> SampleOptions:
        """The options :meth:`sample` uses where a field is ``None``: the model's config (sampler,
        steps, guidance, ensemble)."""

    def parameter_groups(self) -> dict[str, dict]:
        """One optimizer per entry, in ``torch.optim`` param-group style: ``{"params": [...]}`` plus
        optional ``lr_scale`` (times ``train.lr``, e.g. TTUR) and ``betas``; names such as
        ``"network"`` or ``"generator"`` and ``"discriminator"``."""

    def ema_modules(self) -> dict[str, nn.Module]:
        """Sub-modules whose exponential moving average is used for sampling."""

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        """One optimisation step on ``batch`` (``target`` and, if conditional, ``condition``); returns losses."""

    def cost(self, options: SampleOptions | None = None) -> int:
        """Network evaluations per output of :meth:`sample` with ``options``: sampler steps, two per
        step with classifier-free guidance, plus any decoder pass, times the ensemble and flips."""

    def sample(self, condition: torch.Tensor | None, *, seed: int, shape: tuple[int, ...] | None = None,
               options: SampleOptions | None = None) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` in [0, 1] on the grid of ``condition`` (with ``clip=False``:
        the unclipped mean of the family's samples, for callers that average further)."""
