"""Training data: volumes loaded once and cached in memory, random patches, and job-specific conditions.

Every random draw comes from one ``torch.Generator`` that the trainer saves in its checkpoints,
so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.data import (
    RandImageNoised,
    RandKSpaceTruncationd,
    RandLowDoseCTd,
    RandThickSlicesd,
    preprocessing,
)
from medsynth.data.intensity import intensity_scaling
from medsynth.errors import MedsynthError
from medsynth.io import ImageSource, find_input_images
from medsynth.io.monai_reader import to_metatensor
from medsynth.io.pairing import check_label, pair_labels
from medsynth.models import label_condition
from medsynth.training.experiment import DataConfig, ExperimentConfig, JobConfig

log = logging.getLogger("medsynth")


@dataclass
class Volume:
    """One preprocessed volume: image ``(1, X, Y, Z)`` in [0, 1], optional label ``(1, X, Y, Z)``."""

    image: torch.Tensor
    label: torch.Tensor | None
    name: str
    scaling: dict  # intensity scaling record (medsynth.data.intensity_scaling)


def load_volumes(data: DataConfig, spatial_dims: int, *, split: bool = True,
                 sources: list[ImageSource] | None = None) -> list[Volume]:
    """Read, reorient (RAS), resample and normalise every training image (and label) once.

    Without ``data.images``, the bundled MNI152 template and its tissue labels are used. Each
    image is scaled to [0, 1] by its modality's rule (CT window, or MR percentiles); with
    ``split``, MR percentiles come from the voxels of the training part only (the training
    slabs of a volume cut into slabs, see :func:`split_volumes`), so no statistic of a
    validation or test voxel reaches training. ``sources``: read these images instead of
    searching ``data.images`` (one scan of a folder, for self-supervised training).

    Raises:
        MedsynthError: no usable image, label problems, or 2D images for a 3D config.
    """
    if sources is not None:
        items = [{"image": source.read(), "name": source.name} for source in sources]
    elif data.images is None:
        from medsynth.data.samples import mni152

        if (data.modality or "").upper() == "CT":
            raise MedsynthError("data.images: the bundled MNI152 template is MR; a CT config needs CT data (--data)")
        image, label = mni152()
        items = [{"image": image, "label": label, "name": "mni152_t1"}]
    else:
        sources = find_input_images(data.images, data.labels)
        if data.labels:  # each label read once and checked: integer-valued, on its image's grid
            items = []
            for image_source, label_source in pair_labels(sources, data.labels):
                image = image_source.read()
                items.append({"image": image, "label": check_label(label_source.read(), image), "name": image.name})
        else:
            items = [{"image": source.read(), "name": source.name} for source in sources]
    label_key = "label" if "label" in items[0] else None
    load = preprocessing(keys=("image",), label_key=label_key, spacing_mm=data.spacing_mm, load=False,
                         normalize=False)
    by_slabs = split and len(items) < MIN_CASES_FOR_CASE_SPLIT
    volumes = []
    for item in items:
        loaded = load({k: to_metatensor(v) for k, v in item.items() if k != "name"})
        image, label = loaded["image"], loaded.get("label")
        if image.ndim == 3:  # a 2D image: one slice
            if spatial_dims == 3:
                raise MedsynthError(f"{item['name']}: 2D image, but the config is 3D (spatial_dims: 3)")
            image = image[..., None]
            label = None if label is None else label[..., None]
        raw = image.as_tensor().float()
        region = raw[..., _train_slices(raw.shape[-1], data)] if by_slabs else raw
        region = region if region.numel() else raw
        modality = data.modality or image.meta.get("modality")
        scaling = intensity_scaling(region, modality, window=data.ct_window)
        normalised = ((raw - scaling["low"]) / (scaling["high"] - scaling["low"])).clamp(0.0, 1.0)
        source = item["image"].meta.get("source") or item["name"]
        volumes.append(Volume(normalised, None if label is None else label.as_tensor().round().long(), str(source),
                              scaling))
    return volumes


#: a folder with at least this many volumes is split by case, fewer by axial slabs
MIN_CASES_FOR_CASE_SPLIT = 3
#: a volume with fewer slices (a 2D image) is not cut into slabs: it all goes to training
MIN_SLAB_DEPTH = 10
PARTS = ("train", "validation", "test")


def slab_bounds(depth: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """First and past-the-end slice of the axial slab ``fractions`` (of Z) of a ``depth``-slice volume."""
    return round(fractions[0] * depth), round(fractions[1] * depth)


def _train_slices(depth: int, data: DataConfig) -> torch.Tensor:
    """Indices of the axial slices of a volume cut into slabs that belong to the training part."""
    keep = torch.ones(depth, dtype=torch.bool)
    for fractions in (data.validation, data.test) if depth >= MIN_SLAB_DEPTH else ():
        start, stop = slab_bounds(depth, fractions)
        keep[start:stop] = False
    return torch.nonzero(keep)[:, 0]


def split_volumes(volumes: list[Volume], data: DataConfig) -> dict[str, list[Volume]]:
    """The three disjoint parts, ``{"train": [...], "validation": [...], "test": [...]}``.

    Fewer than :data:`MIN_CASES_FOR_CASE_SPLIT` volumes (the bundled template): each volume is cut
    into the axial slabs ``data.validation`` and ``data.test`` and the training pieces around
    them (``name:train0``, ``name:validation``, ...), so a 3D patch never spans two parts; a
    volume thinner than :data:`MIN_SLAB_DEPTH` slices (a 2D image) is all training. More
    volumes: whole cases, ``data.case_split`` of them for validation and test (at least one
    each), chosen by a hash of their names, so adding a case does not reshuffle the others.
    """
    parts: dict[str, list[Volume]] = {part: [] for part in PARTS}
    if len(volumes) >= MIN_CASES_FOR_CASE_SPLIT:
        ranked = sorted(volumes, key=lambda v: (zlib.crc32(v.name.encode("utf-8", "replace")), v.name))
        n_test = max(1, round(data.case_split[1] * len(ranked))) if data.case_split[1] > 0 else 0
        n_val = max(1, round(data.case_split[0] * len(ranked))) if data.case_split[0] > 0 else 0
        if n_test + n_val >= len(ranked):
            raise MedsynthError(f"data.case_split: {list(data.case_split)} of {len(ranked)} cases leaves none to train")
        parts["test"], parts["validation"], parts["train"] = (ranked[:n_test], ranked[n_test:n_test + n_val],
                                                              ranked[n_test + n_val:])
        return parts
    for volume in volumes:
        depth = volume.image.shape[-1]
        if depth < MIN_SLAB_DEPTH:
            parts["train"].append(volume)
            continue
        cuts = sorted([(*slab_bounds(depth, data.validation), "validation"), (*slab_bounds(depth, data.test), "test")])
        edge, pieces = 0, 0
        for start, stop, part in cuts + [(depth, depth, None)]:
            if start > edge:
                parts["train"].append(_slab(volume, edge, start, f"train{pieces}"))
                pieces += 1
            if part is not None and stop > start:
                parts[part].append(_slab(volume, start, stop, part))
            edge = max(edge, stop)
    return parts


def _slab(volume: Volume, start: int, stop: int, name: str) -> Volume:
    return Volume(volume.image[..., start:stop], None if volume.label is None else volume.label[..., start:stop],
                  f"{volume.name}:{name}", volume.scaling)


def check_labels(volumes: list[Volume], job: JobConfig) -> None:
    """Label maps must exist for label-conditioned generation and fit ``job.num_classes``."""
    if job.name != "generate" or job.num_classes == 0:
        return
    for volume in volumes:
        if volume.label is None:
            raise MedsynthError(f"{volume.name}: label-conditioned generation needs a label map (data.labels)")
        high = int(volume.label.max())
        if high >= job.num_classes:
            raise MedsynthError(f"{volume.name}: label value {high} is outside job.num_classes={job.num_classes} "
                                f"(classes 0..{job.num_classes - 1})")


class PatchSampler:
    """Random patches from cached volumes: 2D patches from slices along ``slice_axis``, or 3D patches.

    Patches are drawn where the foreground (label > 0, or image > 0.05 without labels) covers at
    least ``min_foreground`` of the patch (up to 20 tries, then the best one is kept); volumes
    smaller than the patch are zero-padded. With ``data.augment``, each patch is flipped at random
    along every axis and its intensities raised to a random power in [0.8, 1.25]: with little
    training data (one template) this keeps a restoration model from learning the anatomy by
    heart instead of the local mapping (measured: the 2D super-resolution model made held-out
    slices worse than its own input without it).
    """

    def __init__(self, volumes: list[Volume], data: DataConfig, spatial_dims: int) -> None:
        self.patch = tuple(data.patch_size)
        self.spatial_dims = spatial_dims
        self.slice_axis = data.slice_axis
        self.min_foreground = data.min_foreground
        self.augment = data.augment
        self.volumes = [self._prepare(v) for v in volumes]
        self.volumes = [v for v in self.volumes if v.image.shape[-1] > 0]
        if not self.volumes:
            raise MedsynthError("no training data left after removing the validation and test parts (data.validation, "
                                "data.test)")

    def _prepare(self, volume: Volume) -> Volume:
        """2D: move the slice axis last; pad every volume to at least the patch size.

        In-plane the padding is zeros (air beside the head). Along the slice axis of a 3D volume
        it mirrors the edge slices: a training piece cut out between the validation and test
        slabs continues in anatomy, not in air, and zero slabs would teach the network (and its
        batch statistics) a boundary that no real volume has.
        """
        image, label = volume.image, volume.label
        if self.spatial_dims == 2:
            order = [0] + [1 + a for a in range(3) if a != self.slice_axis] + [1 + self.slice_axis]
            image = image.permute(order)
            label = None if label is None else label.permute(order)
        needed = self.patch if self.spatial_dims == 3 else (*self.patch, 1)
        pads = [max(0, n - s) for n, s in zip(needed, image.shape[1:], strict=True)]
        if self.spatial_dims == 3 and pads[-1]:
            mirror = torch.as_tensor(np.pad(np.arange(image.shape[-1]), (pads[-1] // 2, pads[-1] - pads[-1] // 2),
                                            mode="symmetric"))
            image = image[..., mirror]
            label = None if label is None else label[..., mirror]
            pads[-1] = 0
        if any(pads):
            spec = [p for pad in reversed(pads) for p in (pad // 2, pad - pad // 2)]
            image = F.pad(image, spec)
            label = None if label is None else F.pad(label, spec)
        return Volume(image.contiguous(), None if label is None else label.contiguous(), volume.name, volume.scaling)

    def _foreground(self, volume: Volume, corner: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        region = tuple(slice(c, c + p) for c, p in zip(corner, self.patch, strict=False))
        if self.spatial_dims == 2:
            region = (*region, corner[-1])
        image = volume.image[(slice(None), *region)]
        label = None if volume.label is None else volume.label[(slice(None), *region)]
        mask = label > 0 if label is not None else image > 0.05
        return image, label, float(mask.float().mean())

    def _augment(self, image: torch.Tensor, label: torch.Tensor | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        flips = [1 + axis for axis in range(self.spatial_dims) if float(torch.rand((), generator=generator)) < 0.5]
        gamma = float(torch.exp((torch.rand((), generator=generator) * 2 - 1) * np.log(1.25)))
        if flips:
            image = image.flip(flips)
            label = None if label is None else label.flip(flips)
        return image.clamp(min=0) ** gamma, label

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch of patches: images ``(B, 1, *patch)`` and labels ``(B, 1, *patch)`` (or ``None``)."""
        images, labels = [], []
        for _ in range(batch_size):
            volume = self.volumes[int(torch.randint(len(self.volumes), (1,), generator=generator))]
            best = None
            for _ in range(20):
                limits = [s - p + 1 for s, p in zip(volume.image.shape[1:], self.patch, strict=False)]
                if self.spatial_dims == 2:
                    limits.append(volume.image.shape[-1])
                corner = [int(torch.randint(limit, (1,), generator=generator)) for limit in limits]
                candidate = self._foreground(volume, corner)
                if best is None or candidate[2] > best[2]:
                    best = candidate
                if candidate[2] >= self.min_foreground:
                    break
            image, label = best[0], best[1]
            if self.augment:
                image, label = self._augment(image, label, generator)
            images.append(image)
            labels.append(label)
        label_batch = None if labels[0] is None else torch.stack(labels)
        return torch.stack(images), label_batch


def make_condition(target: torch.Tensor, label: torch.Tensor | None, job: JobConfig, scaling: dict,
                   generator: torch.Generator) -> torch.Tensor | None:
    """The job's condition for a batch of clean patches ``(B, 1, *spatial)`` in [0, 1].

    generate: one-hot label map (``num_classes`` channels) or ``None``; denoise: the patch with
    simulated noise (level drawn per sample); super_resolve: the patch degraded along
    ``job.degrade_axis`` (factor drawn per sample), on the same grid.
    """
    if job.name == "generate":
        if job.num_classes == 0:
            return None
        return label_condition(label[:, 0], job.num_classes).to(target.dtype)
    degrade = degradation(job, scaling)
    conditions = [degrade(sample.numpy(), int(torch.randint(2**31 - 1, (1,), generator=generator)))
                  for sample in target]
    return torch.as_tensor(np.stack(conditions), dtype=target.dtype)


def degradation(job: JobConfig, scaling: dict) -> Callable[[np.ndarray, int], np.ndarray]:
    """``degrade(image, seed)``: the job's random degradation (a medsynth.data transform) of one
    channel-first image in [0, 1], parameters drawn from ``seed``.

    Low-dose CT noise is simulated in HU: the image is mapped back through its intensity
    scaling, degraded, and scaled again (values may leave [0, 1] slightly, as noise does).
    """
    if job.name == "denoise" and job.noise == "low_dose_ct":
        transform = RandLowDoseCTd("image", photons_range=job.photons)
    elif job.name == "denoise":
        transform = RandImageNoised("image", kind=job.noise, sigma_range=job.noise_sigma)
    elif job.degradation == "kspace":
        transform = RandKSpaceTruncationd("image", factor_range=job.factor, axes=job.degrade_axis)
    else:
        transform = RandThickSlicesd("image", factor_range=job.factor, axis=job.degrade_axis,
                                     interpolation=job.interpolation, profile=job.slice_profile,
                                     thickness=job.slice_thickness)
    low, high = float(scaling.get("low", 0.0)), float(scaling.get("high", 1.0))
    in_hu = job.name == "denoise" and job.noise == "low_dose_ct"

    def degrade(image: np.ndarray, seed: int) -> np.ndarray:
        transform.set_random_state(seed)
        if not in_hu:
            return transform({"image": image})["image"]
        noisy = transform({"image": image * (high - low) + low})["image"]
        return np.clip((noisy - low) / (high - low), -0.5, 1.5)

    return degrade


def training_slice_names(volumes: list[Volume], axis: int) -> list[str]:
    """``"<volume name>:<index>"`` of every 2D slice along ``axis`` of ``volumes``, in order: position
    ``k`` of this list is slice ``k`` of ``data.train_slices``."""
    return [f"{v.name}:{k}" for v in volumes for k in range(v.image.shape[1 + axis])]


def select_slices(volumes: list[Volume], data: DataConfig) -> list[Volume]:
    """The training ``volumes`` cut down to the slices ``data.train_slices`` lists (all when it is
    ``None``); a volume none of whose slices is listed is left out. Intensity scaling is unchanged
    (it was taken from the whole training part).

    Raises:
        MedsynthError: an index beyond the training part's slices.
    """
    if data.train_slices is None:
        return volumes
    wanted = set(data.train_slices)
    axis, out, offset = data.slice_axis, [], 0
    for volume in volumes:
        depth = volume.image.shape[1 + axis]
        keep = torch.tensor([k for k in range(depth) if offset + k in wanted], dtype=torch.long)
        offset += depth
        if len(keep):
            label = None if volume.label is None else volume.label.index_select(1 + axis, keep)
            out.append(Volume(volume.image.index_select(1 + axis, keep), label, volume.name, volume.scaling))
    if max(wanted) >= offset:
        raise MedsynthError(f"data.train_slices: index {max(wanted)} is beyond the {offset} slices of the training "
                            f"part (along slice_axis {axis}; indices start at 0)")
    return out


def training_sources(config: ExperimentConfig) -> tuple[PatchSampler, dict[str, list[Volume]]]:
    """Load, check and split the data of ``config``: the patch sampler (training part only, cut to
    ``data.train_slices`` when given) and the parts (``"train"`` cut alike, so previews use it too)."""
    volumes = load_volumes(config.data, config.spatial_dims)
    check_labels(volumes, config.job)
    parts = split_volumes(volumes, config.data)
    parts["train"] = select_slices(parts["train"], config.data)
    return PatchSampler(parts["train"], config.data, config.spatial_dims), parts


__all__ = ["PARTS", "PatchSampler", "Volume", "degradation", "load_volumes", "make_condition", "select_slices",
           "slab_bounds", "split_volumes", "training_slice_names", "training_sources"]
