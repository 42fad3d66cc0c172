"""Training data from the one scan being restored (``data.self_supervised``; ``--self`` on the CLI).

Super-resolution (SMORE, Zhao et al. 2021; ECLARE, Remedios et al. 2025): a thick-slice scan is
sharp in-plane. Its in-plane slices, degraded along one in-plane axis to the scan's own slice
profile (``job.factor``, ``job.slice_profile``, ``job.slice_thickness``), are the training pairs;
the model then restores the through-plane axis in the two planes that contain it
(``job.fuse_planes``). Both in-plane axes are degraded (two copies of the scan), and
``data.augment`` flips them.

Denoising (Neighbor2Neighbor, Huang et al. 2021): each 2x2 cell of a noisy patch gives one voxel
to the condition and an adjacent one to the target, so condition and target carry independent
noise over the same anatomy and the model learns the expected noisy value (for magnitude MR, the
Rician mean, which :mod:`medsynth.data.noise` maps back to the signal at inference). Without the
paper's regulariser: the families' own losses train on the pairs as they are.

There is no validation or test part: the scan is the whole training set and nothing clean is
ever seen, which is also why a self-supervised model can be scored fairly on the scan it was
trained on.
"""

from __future__ import annotations

import torch

from medsynth.errors import MedsynthError
from medsynth.io import ImageSource
from medsynth.training.dataset import PatchSampler, Volume, load_volumes
from medsynth.training.experiment import ExperimentConfig

#: in-plane voxels a scan needs, per side, to draw self-supervised pairs from
MIN_IN_PLANE = 32


def plane_axes(slice_axis: int, degrade_axis: int) -> tuple[int, int]:
    """``(restored, other)``: the volume axis a 2D model on slices along ``slice_axis`` restores
    (its patch axis ``degrade_axis``), and the third axis."""
    in_plane = [a for a in range(3) if a != slice_axis]
    restored = in_plane[degrade_axis % 2]
    return restored, in_plane[1 - degrade_axis % 2]


def self_supervised_sources(config: ExperimentConfig, sources: list[ImageSource] | None = None,
                            ) -> tuple[PatchSampler, dict[str, list[Volume]]]:
    """The patch sampler over one scan (``data.images``, or ``sources``) and the parts (all of it is
    ``"train"``), shaped so that the 2D patches are the pairs described in the module docstring.

    Raises:
        MedsynthError: not exactly one scan, a 2D image, or a scan too small for pairs.
    """
    volumes = load_volumes(config.data, 2, split=False, sources=sources)  # a 2D image: one slice, refused below
    if len(volumes) != 1:
        raise MedsynthError(f"{config.data.images}: self-supervised training takes one scan, found {len(volumes)}")
    volume = volumes[0]
    shape = tuple(volume.image.shape[1:])
    if len(shape) != 3 or min(shape) < 2:
        raise MedsynthError(f"{volume.name}: a 2D image; self-supervised restoration needs a 3D scan")
    data, job = config.data, config.job
    if job.name == "super_resolve":
        restored, other = plane_axes(data.slice_axis, job.degrade_axis)
        # the scan's thick axis becomes the slice axis, and each in-plane axis in turn the degraded one
        copies = []
        for in_plane in (data.slice_axis, other):
            order = [0, 0, 0]
            order[data.slice_axis], order[restored] = restored, in_plane
            order[other] = data.slice_axis if in_plane == other else other
            copies.append(Volume(volume.image.permute(0, *(1 + a for a in order)), None,
                                 f"{volume.name}:in-plane{len(copies)}", volume.scaling))
        sides = [shape[a] for a in (data.slice_axis, other)]
        if min(sides) < max(MIN_IN_PLANE, 4 * job.factor[0]):
            raise MedsynthError(f"{volume.name}: in-plane size {sides[0]}x{sides[1]} is too small to draw "
                                f"super-resolution pairs from (at least {max(MIN_IN_PLANE, 4 * job.factor[0])} "
                                "voxels a side)")
    else:
        sides = [s for a, s in enumerate(shape) if a != data.slice_axis]
        if min(sides) < MIN_IN_PLANE:
            raise MedsynthError(f"{volume.name}: slices of {sides[0]}x{sides[1]} voxels are too small to draw "
                                f"denoising pairs from (at least {MIN_IN_PLANE} a side)")
        copies = [volume]
    return PatchSampler(copies, data, 2), {"train": copies, "validation": [], "test": []}


def neighbor_pairs(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor sub-images of ``(B, C, H, W)`` noisy patches (H, W even): in every 2x2
    cell one voxel goes to the first image and a horizontally or vertically adjacent one to the
    second, both chosen at random per cell. Returns two ``(B, C, H / 2, W / 2)`` images."""
    b, c, h, w = images.shape
    if h % 2 or w % 2:
        raise ValueError(f"neighbor_pairs needs even patch sides, got {h}x{w}")
    cells = images.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)
    first = torch.randint(4, (b, 1, h // 2, w // 2, 1), generator=generator)
    # positions 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1): flipping the column bit (xor 1) or the row bit
    # (xor 2) gives an adjacent voxel, never the diagonal one
    flip = 1 + torch.randint(2, first.shape, generator=generator)
    second = first ^ flip

    def pick(index: torch.Tensor) -> torch.Tensor:
        return cells.gather(-1, index.expand(b, c, -1, -1, -1))[..., 0]

    return pick(first), pick(second)


__all__ = ["MIN_IN_PLANE", "neighbor_pairs", "plane_axes", "self_supervised_sources"]
