"""2D slices of 3D volumes for 2D models, and the way back.

:class:`ExtractSlicesd` turns one sample of channel-first 3D volumes into a list of samples of 2D
slices (as MONAI's ``RandCropByPosNegLabeld`` returns a list), each slice keeping where it came
from; :func:`assemble_volume` puts 2D outputs back into a volume.

Slice geometry: a slice ``(C, A, B)`` cut at index ``k`` of spatial axis ``axis`` of a volume with
affine ``V`` gets the 4x4 affine ``[V[:, a], V[:, b], V[:, axis], V @ e_k]``: its in-plane columns
are those of the two remaining axes (in order), its third column is the sliced axis, and the slice
offset is folded into the translation, so ``affine @ [i, j, 0, 1]`` is the world position (mm) of
pixel ``(i, j)``. MONAI's 2D spatial transforms read only the top-left 2x2 block of that affine,
which is the in-plane geometry only for ``axis=2`` of an RAS-oriented volume.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys, convert_data_type, convert_to_dst_type


def slice_affine(volume_affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """4x4 affine of slice ``index`` along spatial ``axis`` (0-2) of a volume (see the module docstring)."""
    volume_affine = np.asarray(volume_affine, dtype=np.float64)
    in_plane = [a for a in range(3) if a != axis]
    affine = np.eye(4)
    affine[:, :3] = volume_affine[:, [*in_plane, axis]]
    affine[:3, 3] = volume_affine[:3, 3] + index * volume_affine[:3, axis]
    return affine


def _take_slice(volume: NdarrayOrTensor, axis: int, index: int) -> NdarrayOrTensor:
    """Slice ``index`` of spatial ``axis`` of a ``(C, X, Y, Z)`` volume as a contiguous ``(C, A, B)`` copy."""
    selector = [slice(None)] * 4
    selector[axis + 1] = index
    if isinstance(volume, MetaTensor):
        affine = slice_affine(volume.affine.detach().cpu().numpy(), axis, index)
        meta = {
            **{k: v for k, v in volume.meta.items() if k != MetaKeys.AFFINE},
            "slice_index": index,
            "slice_axis": axis,
            "volume_affine": volume.affine.detach().cpu().clone(),
            "volume_shape": np.asarray(volume.shape[1:]),
        }
        data = volume.as_tensor()[tuple(selector)].clone()
        return MetaTensor(data, affine=torch.as_tensor(affine), meta=meta)
    data = volume[tuple(selector)]
    return data.clone() if isinstance(data, torch.Tensor) else np.array(data)


def foreground_fraction(slice_: NdarrayOrTensor) -> float:
    """Fraction of pixels of a ``(C, A, B)`` slice where any channel is nonzero."""
    array = convert_data_type(slice_, output_type=np.ndarray)[0]
    return float(np.any(array != 0, axis=0).mean())


class ExtractSlicesd(MapTransform):
    """Split a sample of channel-first 3D volumes into a list of samples of 2D slices.

    Every key is sliced at the same indices along spatial ``axis``; other entries of the sample
    are shared by all slice samples. A slice is kept when the foreground fraction of the reference
    (``skip_empty_key``, or the first key) is above ``min_foreground``; foreground means any
    channel nonzero, so give a label map (not a one-hot with a background channel) as reference.
    With the defaults, all-zero slices are dropped.

    MetaTensor slices carry their 2D-in-3D ``affine`` (module docstring) and, in their meta,
    ``slice_index``, ``slice_axis``, ``volume_affine`` (4x4) and ``volume_shape`` (spatial shape),
    enough for :func:`assemble_volume` and for writing outputs in the source geometry.

    Args:
        keys: keys of the ``(C, X, Y, Z)`` volumes to slice.
        axis: spatial axis to slice along (0, 1 or 2; 2 = axial for RAS volumes).
        skip_empty_key: key whose foreground decides which slices to keep; default the first key.
        min_foreground: keep slices whose foreground fraction is strictly greater than this.
        skip_empty: set False to keep every slice.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = 2,
        skip_empty_key: str | None = None,
        min_foreground: float = 0.0,
        skip_empty: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        if not 0.0 <= min_foreground < 1.0:
            raise ValueError(f"min_foreground must be in [0, 1), got {min_foreground}")
        self.axis = axis
        self.skip_empty_key = skip_empty_key
        self.min_foreground = min_foreground
        self.skip_empty = skip_empty

    def slice_indices(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[int]:
        """Indices along ``axis`` of the slices that :meth:`__call__` keeps."""
        keys = list(self.key_iterator(dict(data)))
        if not keys:
            return []
        lengths = {key: tuple(data[key].shape) for key in keys}
        for key, shape in lengths.items():
            if len(shape) != 4:
                raise ValueError(f"{key}: expected a channel-first 3D volume (C, X, Y, Z), got shape {shape}")
            if shape[1:] != lengths[keys[0]][1:]:
                raise ValueError(f"{key}: spatial shape {shape[1:]} differs from {keys[0]}'s "
                                 f"{lengths[keys[0]][1:]}")
        count = lengths[keys[0]][self.axis + 1]
        if not self.skip_empty:
            return list(range(count))
        reference = data[self.skip_empty_key if self.skip_empty_key is not None else keys[0]]
        fractions = [foreground_fraction(_take_plain(reference, self.axis, k)) for k in range(count)]
        return [k for k, fraction in enumerate(fractions) if fraction > self.min_foreground]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        samples = []
        for index in self.slice_indices(data):
            sample = dict(data)
            for key in self.key_iterator(sample):
                sample[key] = _take_slice(data[key], self.axis, index)
            samples.append(sample)
        return samples


def _take_plain(volume: NdarrayOrTensor, axis: int, index: int) -> NdarrayOrTensor:
    """A view of one slice, without meta (for measuring it)."""
    selector = [slice(None)] * 4
    selector[axis + 1] = index
    data = volume.as_tensor() if isinstance(volume, MetaTensor) else volume
    return data[tuple(selector)]


def assemble_volume(
    slices: Sequence[NdarrayOrTensor] | NdarrayOrTensor,
    indices: Sequence[int],
    axis: int,
    shape: Sequence[int],
    background: NdarrayOrTensor | None = None,
) -> NdarrayOrTensor:
    """Put 2D slices back into a channel-first 3D volume; the inverse of :class:`ExtractSlicesd`.

    Args:
        slices: ``N`` slices ``(C, A, B)``, as a list or a batch ``(N, C, A, B)`` (e.g. model outputs).
        indices: the ``N`` slice indices along ``axis`` (``meta["slice_index"]``).
        axis: spatial axis the slices were cut along (0, 1 or 2).
        shape: spatial shape ``(X, Y, Z)`` of the volume (``meta["volume_shape"]``).
        background: ``(C, X, Y, Z)`` volume that supplies the slices not given; default zeros.

    Returns:
        ``(C, X, Y, Z)`` volume, numpy if the slices are numpy, else a torch tensor on their device;
        a MetaTensor with the volume affine when the first slice is a MetaTensor with
        ``meta["volume_affine"]``.
    """
    if len(slices) != len(indices):
        raise ValueError(f"got {len(slices)} slices but {len(indices)} indices")
    if len(slices) == 0 and background is None:
        raise ValueError("no slices to assemble and no background volume")
    shape = tuple(int(s) for s in shape)
    first = slices[0] if len(slices) else background
    if isinstance(first, torch.Tensor):
        plain = first.as_tensor() if isinstance(first, MetaTensor) else first
        volume = plain.new_zeros((plain.shape[0], *shape))
    else:
        volume = np.zeros((first.shape[0], *shape), first.dtype)
    if background is not None:
        volume = convert_to_dst_type(background, dst=volume)[0]
        volume = volume.clone() if isinstance(volume, torch.Tensor) else volume.copy()
    if tuple(volume.shape[1:]) != shape:
        raise ValueError(f"background shape {tuple(volume.shape[1:])} differs from the volume shape {shape}")
    for slice_, index in zip(slices, indices, strict=True):
        selector = [slice(None)] * 4
        selector[axis + 1] = int(index)
        data = slice_.as_tensor() if isinstance(slice_, MetaTensor) else slice_
        volume[tuple(selector)] = convert_to_dst_type(data, dst=volume)[0]
    if isinstance(first, MetaTensor) and "volume_affine" in first.meta:
        return MetaTensor(volume, affine=torch.as_tensor(first.meta["volume_affine"]))
    return volume
