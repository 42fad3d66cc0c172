"""Modality-aware intensity normalisation to [0, 1], recorded so that outputs can be mapped back.

CT is windowed in Hounsfield units (a fixed, physically meaningful range); MR and every other
modality have arbitrary units and are scaled between two intensity percentiles. Either way the
rule is linear, ``x' = clip((x - low) / (high - low), 0, 1)``, and the pair ``(low, high)`` is
stored in the MetaTensor meta under ``"intensity_scaling"`` for :func:`denormalize`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

#: CT display windows as ``(level, width)`` in HU (radiology conventions, e.g. Radiopaedia).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
}

#: Meta key under which the applied scaling is recorded.
SCALING_KEY = "intensity_scaling"

Window = str | tuple[float, float]


def window_bounds(window: Window) -> tuple[float, float]:
    """HU range ``(low, high)`` of a CT window.

    Args:
        window: a preset name from :data:`CT_WINDOWS` or an explicit ``(level, width)`` in HU.
    """
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose one of {sorted(CT_WINDOWS)} "
                             "or give (level, width)")
        level, width = CT_WINDOWS[window]
    else:
        level, width = (float(v) for v in window)
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


def is_ct(modality: str | None) -> bool:
    """Whether ``modality`` (a DICOM Modality string such as "CT" or "MR") selects the CT rule."""
    return str(modality or "").strip().upper() == "CT"


def intensity_scaling(
    img: NdarrayOrTensor,
    modality: str | None,
    *,
    window: Window = "soft_tissue",
    lower: float = 0.5,
    upper: float = 99.5,
    nonzero: bool = False,
) -> dict[str, Any]:
    """The linear scaling that :class:`ModalityNormalize` applies to ``img``.

    Args:
        img: image of any shape (all channels share one scaling).
        modality: "CT" selects the HU window; anything else (MR, PT, unknown, None) percentiles.
        window: CT window, see :func:`window_bounds`.
        lower, upper: MR percentiles in [0, 100] mapped to 0 and 1.
        nonzero: compute the percentiles over nonzero voxels only (ignores zero background).

    Returns:
        ``{"kind": "ct_window" | "percentile", "low": float, "high": float}``, ``low``/``high`` in
        the original intensity units. A degenerate range (constant image) gets ``high = low + 1``.
    """
    if is_ct(modality):
        kind = "ct_window"
        low, high = window_bounds(window)
    else:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        kind = "percentile"
        values = convert_to_tensor(img, dtype=torch.float32, track_meta=False).reshape(-1)
        if nonzero and bool((values != 0).any()):
            values = values[values != 0]
        low, high = (float(percentile(values, q)) for q in (lower, upper))
    if not high > low:
        high = low + 1.0
    return {"kind": kind, "low": float(low), "high": float(high)}


def denormalize(img: NdarrayOrTensor, scaling: Mapping[str, Any]) -> NdarrayOrTensor:
    """Map a normalised image back to original intensity units: ``x = x' * (high - low) + low``.

    Exact (to float precision) for voxels that lay inside ``[low, high]`` before normalisation;
    clipped voxels come back as ``low`` or ``high``.

    Args:
        img: normalised image (numpy or torch, any shape).
        scaling: the ``"intensity_scaling"`` record written by :class:`ModalityNormalize`.
    """
    low, high = float(scaling["low"]), float(scaling["high"])
    return img * (high - low) + low


class ModalityNormalize(Transform):
    """Scale a channel-first image to [0, 1] by the rule of its modality, clipping outside values.

    CT: HU window (``window``) mapped to [0, 1]. MR and other modalities: the ``lower``/``upper``
    percentiles (over the whole image, or its nonzero voxels) mapped to [0, 1]: robust min-max
    scaling, with nnU-Net's percentile clipping (Isensee et al. 2021, Nat. Methods 18:203). The modality is
    ``modality`` when given, else ``img.meta["modality"]`` of a MetaTensor, else unknown (MR rule).

    MetaTensor outputs carry the applied scaling in ``meta["intensity_scaling"]``
    (see :func:`intensity_scaling`); invert with :func:`denormalize`.

    Args:
        modality: force the rule ("CT" or anything else); ``None`` reads it from the meta.
        window: CT window name from :data:`CT_WINDOWS` or ``(level, width)`` in HU.
        lower, upper: MR percentiles in [0, 100].
        nonzero: MR percentiles over nonzero voxels only.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        modality: str | None = None,
        window: Window = "soft_tissue",
        lower: float = 0.5,
        upper: float = 99.5,
        nonzero: bool = False,
    ) -> None:
        window_bounds(window)  # fail early on bad settings
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.modality = modality
        self.window = window
        self.lower = lower
        self.upper = upper
        self.nonzero = nonzero

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Normalise ``img`` (shape ``(C, *spatial)``); returns the same type, float32."""
        modality = self.modality
        if modality is None and isinstance(img, MetaTensor):
            modality = img.meta.get("modality")
        scaling = intensity_scaling(img, modality, window=self.window, lower=self.lower, upper=self.upper,
                                    nonzero=self.nonzero)
        out = ScaleIntensityRange(scaling["low"], scaling["high"], b_min=0.0, b_max=1.0, clip=True)(img)
        out = convert_to_dst_type(out, dst=img, dtype=np.float32)[0]
        if isinstance(out, MetaTensor):
            out.meta = {**out.meta, SCALING_KEY: scaling}
        return out


class ModalityNormalized(MapTransform):
    """Dictionary version of :class:`ModalityNormalize`; apply it to image keys only, never labels.

    Args:
        keys: keys of the images to normalise.
        modality, window, lower, upper, nonzero: see :class:`ModalityNormalize`.
        allow_missing_keys: do not fail on missing keys.
    """

    backend = ModalityNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        modality: str | None = None,
        window: Window = "soft_tissue",
        lower: float = 0.5,
        upper: float = 99.5,
        nonzero: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = ModalityNormalize(modality, window, lower, upper, nonzero)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d
