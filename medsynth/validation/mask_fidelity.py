"""Label fidelity of mask-conditioned generation: does each synthetic image show the label map it was made from?

Segmenters trained on real pairs only (the utility study's UNet, :func:`real_segmenters`) segment
every synthetic image; its Dice against the conditioning label map is the figure. The same
segmenters' Dice on held-out real images against their own label maps is the reference: a
generator that follows its labels as faithfully as real images show theirs scores about that
high. Above the reference does not mean better than real: images easier to segment than real
ones (flatter, higher contrast) score higher.

What it cannot show: realism (an image that paints each class a flat, distinct grey can score
high), nor why a score is low (the layout is wrong, or the texture is too unlike real images
for a real-trained segmenter: a domain gap). Its interval covers the choice of segmenter seeds
and images, not of the segmenter's architecture or training length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from medsynth.validation.realism import ImageSet
from medsynth.validation.statistics import bootstrap
from medsynth.validation.utility import per_image_dice, train_segmenter


def real_segmenters(train: ImageSet, *, num_classes: int, steps: int, seeds: Sequence[int] = (0,),
                    device: str | torch.device = "cpu") -> list[torch.nn.Module]:
    """One UNet per seed trained on ``train`` (real pairs) alone, as the utility study's real-only arm."""
    return [train_segmenter(train, None, num_classes=num_classes, steps=steps, seed=seed, device=device)
            for seed in seeds]


def _dice_of(segmenters: Sequence[torch.nn.Module], images: ImageSet, class_names: list[str],
             replicates: int) -> dict:
    values = np.stack([per_image_dice(network, images, len(class_names)) for network in segmenters])
    return {"dice": bootstrap(values.mean(-1), replicates=replicates).as_dict(),
            "dice_per_class": {name: bootstrap(values[..., k], replicates=replicates).as_dict()
                               for k, name in enumerate(class_names[1:])},
            "per_image": values.mean((0, 2)).tolist()}


def label_fidelity(segmenters: Sequence[torch.nn.Module], synthetic: Mapping[str, ImageSet], reference: ImageSet, *,
                   class_names: list[str], replicates: int = 2000) -> dict:
    """Mean Dice of each synthetic set's images against their conditioning label maps, and of ``reference``
    (held-out real images) against their own, per :func:`medsynth.validation.utility.per_image_dice`.

    Args:
        segmenters: trained on real data only (:func:`real_segmenters`, or the utility study's
            real-only networks at fraction 1 through its ``keep`` hook), one per seed.
        synthetic: name -> images whose ``labels`` are the maps they were conditioned on.

    Returns ``{"reference": entry, "synthetic": {name: entry}, ...}``; an entry has ``dice`` (mean over
    images and foreground classes, ``{"value", "ci95", "seeds", "items"}``, 95% bootstrap over
    segmenter seeds, then images), ``dice_per_class`` and ``per_image`` (mean over seeds and classes).
    """
    if not segmenters:
        raise ValueError("label fidelity needs at least one segmenter")
    for name, images in {"reference": reference, **synthetic}.items():
        if images.labels is None or len(images) < 1:
            raise ValueError(f"{name}: label fidelity needs images with their label maps")
    return {"reference": _dice_of(segmenters, reference, class_names, replicates),
            "synthetic": {name: _dice_of(segmenters, images, class_names, replicates)
                          for name, images in synthetic.items()},
            "segmenters": len(segmenters),
            "interval": "95% hierarchical bootstrap over segmenter seeds, then images",
            "dice": "per image, mean over foreground classes; a class absent from prediction and label scores 1"}
