"""Downstream-segmentation utility: does adding synthetic (image, label) pairs raise Dice on held-out real data?

The same MONAI ``UNet`` (DiceCE loss, Adam, a fixed number of steps, the same seeds) is trained
on real pairs only and on real + each family's synthetic pairs, at several fractions of the
real training data. At a reduced fraction only the synthetic pairs made from *those* real label
maps are used, so the synthetic data adds no label information the real subset lacks (the
generators themselves were trained on all real training data: say so when reporting).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from tqdm.auto import tqdm

from medsynth.validation.realism import ImageSet

REAL_ONLY = "real only"


def real_subset(count: int, fraction: float) -> list[int]:
    """Evenly spaced indices of ``round(fraction * count)`` (at least 2) real training pairs."""
    keep = min(count, max(2, round(fraction * count)))
    return sorted(set(np.linspace(0, count - 1, keep).round().astype(int).tolist()))


def _crop_batch(sets: list[ImageSet], picks: list[tuple[int, int]], patch: tuple[int, ...],
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for which, index in picks:
        image, label = sets[which].images[index], sets[which].labels[index]
        pad = [p for s, t in zip(reversed(image.shape[1:]), reversed(patch), strict=True) for p in (0, max(0, t - s))]
        image, label = F.pad(image, pad), F.pad(label, pad)
        corner = [int(torch.randint(s - t + 1, (1,), generator=generator)) for s, t in
                  zip(image.shape[1:], patch, strict=True)]
        window = (slice(None),) + tuple(slice(c, c + t) for c, t in zip(corner, patch, strict=True))
        images.append(image[window])
        labels.append(label[window])
    return torch.stack(images), torch.stack(labels)


def segmentation_network(spatial_dims: int, num_classes: int) -> UNet:
    """The segmentation network of the utility experiment (and of examples/segmentation_with_synthetic_data.py)."""
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=num_classes, channels=(16, 32, 64, 128),
                strides=(2, 2, 2), num_res_units=1)


@torch.no_grad()
def held_out_dice(network: torch.nn.Module, held: ImageSet, num_classes: int) -> np.ndarray:
    """Dice per foreground class of ``network``'s predictions on every ``held`` image together
    (images padded to a multiple of 8 for the UNet, predictions cropped back)."""
    network.eval()
    device = next(network.parameters()).device
    metric = DiceMetric(include_background=False, reduction="mean_batch")
    spatial = held.images.shape[2:]
    pad = [p for s in reversed(spatial) for p in (0, (-s) % 8)]
    for start in range(0, len(held), 8):
        x = F.pad(held.images[start:start + 8], pad).to(device)
        prediction = network(x).argmax(1)[(slice(None),) + tuple(slice(0, s) for s in spatial)]
        one_hot = lambda t: F.one_hot(t.long(), num_classes).movedim(-1, 1)  # noqa: E731
        metric(one_hot(prediction.cpu()), one_hot(held.labels[start:start + 8, 0]))
    return metric.aggregate().numpy()


def train_and_score(real: ImageSet, held: ImageSet, synthetic: ImageSet | None, *, num_classes: int, steps: int,
                    seed: int, ratio: float = 0.5, batch_size: int = 8,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Train a UNet on ``real`` (+ ``synthetic``: each batch item synthetic with probability ``ratio``)
    for ``steps`` steps; Dice per foreground class on every ``held`` image together."""
    spatial_dims = real.images.ndim - 2
    side = 96 if spatial_dims == 2 else 48  # random crops, sides a multiple of 8 (the UNet's 3 downsamplings)
    patch = tuple(max(8, min(side, s - s % 8)) for s in real.images.shape[2:])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = segmentation_network(spatial_dims, num_classes).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    sets = [real] + ([synthetic] if synthetic is not None and len(synthetic) else [])
    for _ in range(steps):
        picks = []
        for _ in range(batch_size):
            which = int(len(sets) > 1 and float(torch.rand(1, generator=generator)) < ratio)
            picks.append((which, int(torch.randint(len(sets[which]), (1,), generator=generator))))
        images, labels = _crop_batch(sets, picks, patch, generator)
        optimizer.zero_grad()
        loss = loss_function(network(images.to(device)), labels.to(device))
        loss.backward()
        optimizer.step()
    return held_out_dice(network, held, num_classes)


def segmentation_utility(train: ImageSet, held: ImageSet, synthetic: dict[str, tuple[ImageSet, list[int]]], *,
                         class_names: list[str], seeds: list[int], fractions: list[float], steps: int,
                         ratio: float = 0.5, device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Dice per foreground class on ``held``, mean and std over ``seeds``, for real only and real +
    each synthetic set, at each fraction of the real training pairs.

    Args:
        synthetic: name -> (pairs, index of the real training pair each synthetic pair was made from).
    """
    conditions = [REAL_ONLY] + list(synthetic)
    runs = [(c, f, s) for f in fractions for c in conditions for s in seeds]
    scores: dict[tuple[str, float], list[np.ndarray]] = {}
    counts: dict[tuple[str, float], dict] = {}
    began = time.perf_counter()
    for condition, fraction, seed in tqdm(runs, desc="segmentation utility", disable=not progress, leave=False):
        subset = real_subset(len(train), fraction)
        extra = None
        if condition != REAL_ONLY:
            pairs, sources = synthetic[condition]
            extra = pairs.subset([i for i, s in enumerate(sources) if s in set(subset)])
        dice = train_and_score(train.subset(subset), held, extra, num_classes=len(class_names), steps=steps,
                               seed=seed, ratio=ratio, device=device)
        scores.setdefault((condition, fraction), []).append(dice)
        counts[(condition, fraction)] = {"real": len(subset), "synthetic": 0 if extra is None else len(extra)}
    results = {}
    for (condition, fraction), values in scores.items():
        values = np.stack(values)
        entry = results.setdefault(condition, {})
        entry[f"{fraction:g}"] = {
            **counts[(condition, fraction)],
            "dice": {name: {"mean": float(values[:, k].mean()), "std": float(values[:, k].std()),
                            "per_seed": values[:, k].tolist()} for k, name in enumerate(class_names[1:])},
            "mean_dice": float(values.mean()), "mean_dice_std": float(values.mean(1).std())}
    return {"conditions": results, "seeds": seeds, "fractions": fractions, "steps": steps, "ratio": ratio,
            "held_out_images": len(held), "network": "MONAI UNet (16, 32, 64, 128), DiceCE, Adam 2e-3, batch 8",
            "seconds": round(time.perf_counter() - began, 1)}
