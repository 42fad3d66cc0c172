"""Synthetic samples in a MONAI training stream, at a chosen ratio.

Both sources give what ``LoadImaged(["image", "label"], reader=MedsynthReader(), image_only=True)``
gives for a datalist entry: ``MetaTensor`` s ``(X, Y[, Z])`` with their affine and MONAI's meta
keys, plus ``meta["synthetic"]`` (``True``/``False``) so a pipeline can tell them apart. The
rest of a MONAI pipeline (``EnsureChannelFirstd``, crops, augmentations) goes in ``transform``
and is applied to real and synthetic samples alike::

    real = load_decathlon_datalist("real/dataset.json", data_list_key="training")
    synthetic = load_decathlon_datalist("augmented/dataset.json", data_list_key="training")  # medsynth augment
    # or: synthetic = OnTheFlySynthesis("runs/generate_2d_gan", real)          # generated as needed
    dataset = SyntheticMixDataset(real, synthetic, ratio=0.5, transform=train_transforms)
    loader = DataLoader(dataset, batch_size=8, shuffle=True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from medsynth.data.preprocess import load_images
from medsynth.io import MedicalImage, read_image
from medsynth.io.monai_reader import monai_meta
from medsynth.models import SampleOptions
from medsynth.synthesis.apply import TrainedModel, output_seed
from medsynth.synthesis.augment import synthesize


def _as_metatensor(image: MedicalImage, synthetic: bool) -> MetaTensor:
    meta = monai_meta(image)
    affine = torch.as_tensor(meta.pop("affine"))
    meta["synthetic"] = synthetic
    return MetaTensor(torch.as_tensor(np.asarray(image.array, dtype=np.float32)), affine=affine, meta=meta)


class OnTheFlySynthesis:
    """Synthetic (image, label) pairs generated when asked for, from a label-conditioned run.

    Item ``k`` deforms the label map of real pair ``k % len(real)`` (seed from ``seed`` and ``k``)
    and generates an image for it: the same ``k``, the same sample. Real pairs are read once.

    Args:
        model: a ``generate`` run directory or a loaded :class:`TrainedModel`.
        real: datalist entries ``{"image": path, "label": path}`` to start from.
        seed: base seed.
        device: where the model runs (``auto``, ``cpu``, ``cuda``).
        options: how to sample (e.g. ``SampleOptions(steps=10)``); default: the model's own settings.
    """

    def __init__(self, model: str | os.PathLike | TrainedModel, real: Sequence[dict], seed: int = 0,
                 device: str = "cpu", options: SampleOptions | None = None) -> None:
        self.trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model, device)
        self.trained.require_job("generate")
        if not real:
            raise ValueError("OnTheFlySynthesis needs at least one real (image, label) pair")
        self.real = list(real)
        self.seed = seed
        self.options = options
        self._cache: dict[int, tuple[MedicalImage, MedicalImage]] = {}

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, k: int) -> dict[str, MetaTensor]:
        index = k % len(self.real)
        if index not in self._cache:
            entry = self.real[index]
            self._cache[index] = (read_image(entry["image"]), read_image(entry["label"]))
        image, label = self._cache[index]
        seed = output_seed(self.seed, str(k))
        with torch.no_grad():
            fake, fake_label = synthesize(self.trained, image, label, seed, options=self.options)
        return {"image": _as_metatensor(fake, True), "label": _as_metatensor(fake_label, True)}


class SyntheticMixDataset(torch.utils.data.Dataset):
    """Real samples plus synthetic ones, a fraction ``ratio`` of the stream synthetic.

    With ``n`` real entries the dataset has ``n + round(n * ratio / (1 - ratio))`` items: all real
    entries, then synthetic ones (spread evenly over ``synthetic`` if it is longer, cycled if it is
    shorter). Shuffle it with the DataLoader.

    Args:
        real: datalist entries (dicts of paths), loaded with ``LoadImaged`` + ``MedsynthReader``;
            keys other than ``keys`` are dropped, so real and synthetic items collate together.
        synthetic: datalist entries (e.g. an ``augment`` output's ``dataset.json``, paths absolute
            as ``load_decathlon_datalist`` makes them) or an :class:`OnTheFlySynthesis`.
        ratio: fraction of synthetic items, in [0, 1).
        transform: applied to every loaded item (real and synthetic).
        keys: the keys to load from datalist entries.
    """

    def __init__(self, real: Sequence[dict], synthetic: Sequence[dict] | OnTheFlySynthesis, ratio: float,
                 transform: Callable | None = None, keys: Sequence[str] = ("image", "label")) -> None:
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        if ratio > 0 and len(synthetic) == 0:
            raise ValueError("no synthetic samples to mix in")
        self.real, self.synthetic, self.transform = list(real), synthetic, transform
        self.synthetic_count = round(len(self.real) * ratio / (1 - ratio))
        self.keys = list(keys)
        self._load = load_images(self.keys)

    def __len__(self) -> int:
        return len(self.real) + self.synthetic_count

    def _load_entry(self, entry: dict, synthetic: bool) -> dict:
        item = self._load({k: str(entry[k]) for k in self.keys})  # only ``keys``: real and synthetic items match
        for key in self.keys:
            if isinstance(item.get(key), MetaTensor):
                item[key].meta["synthetic"] = synthetic
        return item

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < len(self.real):
            item = self._load_entry(self.real[index], False)
        elif isinstance(self.synthetic, OnTheFlySynthesis):
            item = self.synthetic[index - len(self.real)]
        else:  # spread over the whole pool when it is larger than needed, cycle through it when smaller
            k = index - len(self.real)
            pool = len(self.synthetic)
            item = self._load_entry(self.synthetic[k * pool // self.synthetic_count if pool > self.synthetic_count
                                                   else k % pool], True)
        return self.transform(item) if self.transform is not None else item
