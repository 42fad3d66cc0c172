"""Downstream-segmentation utility: the segmenter and its Dice.

The same MONAI ``UNet`` (DiceCE loss, Adam, a fixed number of steps, the same seeds) is trained
on real pairs alone or with a share of each batch drawn from another source (:func:`train_segmenter`).
:mod:`medsynth.validation.utility_study` runs the study of issue #24 on it (generators keyed by
real fraction, classical-augmentation and domain-randomisation arms, paired differences with 95%
intervals), which ``medsynth compare`` runs; :mod:`medsynth.validation.mask_fidelity` reuses the
real-only segmenter for label fidelity."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet

from medsynth.validation.realism import ImageSet

REAL_ONLY = "real only"


def real_subset(count: int, fraction: float) -> list[int]:
    """Evenly spaced indices of ``round(fraction * count)`` (at least 2) real training pairs."""
    keep = min(count, max(2, round(fraction * count)))
    return sorted(set(np.linspace(0, count - 1, keep).round().astype(int).tolist()))


#: one training pair ``(image (1, *spatial), label (1, *spatial))``, drawn with the given generator
Draw = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def draw_from(pairs: ImageSet) -> Draw:
    """Draws a stored pair uniformly at random (one ``randint`` of the generator per draw)."""
    if pairs.labels is None:
        raise ValueError("training pairs need label maps")

    def draw(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(torch.randint(len(pairs), (1,), generator=generator))
        return pairs.images[index], pairs.labels[index]

    return draw


def _crop(image: torch.Tensor, label: torch.Tensor, patch: tuple[int, ...],
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``patch`` of ``(image, label)``, zero-padded first where the pair is smaller."""
    pad = [p for s, t in zip(reversed(image.shape[1:]), reversed(patch), strict=True) for p in (0, max(0, t - s))]
    image, label = F.pad(image, pad), F.pad(label, pad)
    corner = [int(torch.randint(s - t + 1, (1,), generator=generator)) for s, t in
              zip(image.shape[1:], patch, strict=True)]
    window = (slice(None),) + tuple(slice(c, c + t) for c, t in zip(corner, patch, strict=True))
    return image[window], label[window]


def segmentation_network(spatial_dims: int, num_classes: int) -> UNet:
    """The segmentation network of the utility experiment (and of examples/segmentation_with_synthetic_data.py)."""
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=num_classes, channels=(16, 32, 64, 128),
                strides=(2, 2, 2), num_res_units=1)


def train_segmenter(real: ImageSet, extra: Draw | None = None, *, num_classes: int, steps: int, seed: int,
                    ratio: float = 0.5, batch_size: int = 8, device: str | torch.device = "cpu") -> UNet:
    """A UNet trained for ``steps`` steps (DiceCE, Adam 2e-3) on random crops of ``real`` pairs; each batch
    item comes from ``extra`` instead with probability ``ratio``.

    Every random draw comes from ``seed``; each item draws its uniform arm choice whether or not
    ``extra`` is given, so an ``extra`` that draws like :func:`draw_from` on a copy of ``real``
    trains a network identical to real-only (what pairs the arms of one seed)."""
    spatial_dims = real.images.ndim - 2
    side = 96 if spatial_dims == 2 else 48  # random crops, sides a multiple of 8 (the UNet's 3 downsamplings)
    patch = tuple(max(8, min(side, s - s % 8)) for s in real.images.shape[2:])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = segmentation_network(spatial_dims, num_classes).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    real_draw = draw_from(real)
    network.train()
    for _ in range(steps):
        images, labels = [], []
        for _ in range(batch_size):
            use_extra = float(torch.rand(1, generator=generator)) < ratio
            image, label = (extra if extra is not None and use_extra else real_draw)(generator)
            image, label = _crop(image, label, patch, generator)
            images.append(image)
            labels.append(label)
        optimizer.zero_grad()
        loss = loss_function(network(torch.stack(images).to(device)), torch.stack(labels).to(device))
        loss.backward()
        optimizer.step()
    return network


@torch.no_grad()
def _predictions(network: torch.nn.Module, held: ImageSet,
                 num_classes: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One-hot ``(prediction, label)`` batches of up to 8 ``held`` images (padded to a multiple of 8 for
    the UNet, predictions cropped back)."""
    network.eval()
    device = next(network.parameters()).device
    spatial = held.images.shape[2:]
    pad = [p for s in reversed(spatial) for p in (0, (-s) % 8)]
    for start in range(0, len(held), 8):
        x = F.pad(held.images[start:start + 8], pad).to(device)
        prediction = network(x).argmax(1)[(slice(None),) + tuple(slice(0, s) for s in spatial)]
        one_hot = lambda t: F.one_hot(t.long(), num_classes).movedim(-1, 1)  # noqa: E731
        yield one_hot(prediction.cpu()), one_hot(held.labels[start:start + 8, 0])


def held_out_dice(network: torch.nn.Module, held: ImageSet, num_classes: int) -> np.ndarray:
    """Dice per foreground class of ``network``'s predictions, averaged over the ``held`` images whose
    label map holds that class."""
    metric = DiceMetric(include_background=False, reduction="mean_batch")
    for prediction, label in _predictions(network, held, num_classes):
        metric(prediction, label)
    return metric.aggregate().numpy()


def per_image_dice(network: torch.nn.Module, images: ImageSet, num_classes: int) -> np.ndarray:
    """``(N, num_classes - 1)`` Dice of ``network``'s prediction on each image against its label map,
    per foreground class. A class absent from both scores 1, absent from one only 0, so every entry
    is finite and images pair across arms; it says nothing of where a boundary is wrong."""
    if images.labels is None:
        raise ValueError("Dice needs label maps")
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    rows = [metric(prediction, label) for prediction, label in _predictions(network, images, num_classes)]
    return torch.cat(rows).numpy().astype(np.float64)


def train_and_score(real: ImageSet, held: ImageSet, synthetic: ImageSet | None, *, num_classes: int, steps: int,
                    seed: int, ratio: float = 0.5, batch_size: int = 8,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """:func:`train_segmenter` on ``real`` (+ ``synthetic`` pairs), then :func:`held_out_dice` on ``held``."""
    extra = draw_from(synthetic) if synthetic is not None and len(synthetic) else None
    network = train_segmenter(real, extra, num_classes=num_classes, steps=steps, seed=seed, ratio=ratio,
                              batch_size=batch_size, device=device)
    return held_out_dice(network, held, num_classes)
