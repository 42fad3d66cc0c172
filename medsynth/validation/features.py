"""Image features for the distribution metrics (FID, KID, precision/recall, density/coverage).

Pretrained medical feature networks (RadImageNet, MedicalNet) cannot be downloaded by medsynth,
so there are two sources of features, and every report says which one it used:

- **medsynth's own feature network**, trained here on the *real training data* and then frozen
  and reused for every family, so the comparison is fair. A small MONAI residual encoder
  (``ResidualUnit`` stages, 2D or 3D) with a light multi-scale head, trained to segment the
  tissue labels when labels exist, else self-supervised to fill in masked blocks of the image.
  Features are the global average of every encoder stage, concatenated. It knows only the
  training data: FID values on it are comparable within one report, not with published FIDs.
- **a feature extractor of your own**: a TorchScript file (``--features model.pt``, from
  ``torch.jit.trace``/``script``) or a ``torch.export`` archive (``model.pt2``), e.g. RadImageNet or
  MedicalNet weights you have locally. It receives ``(N, 1, *spatial)`` float images in [0, 1]
  and returns ``(N, D)`` features (or feature maps, which are averaged over space).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import ResidualUnit
from monai.transforms import ResizeWithPadOrCrop
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medsynth.config import check_range, from_dict, to_dict
from medsynth.errors import MedsynthError, describe, display, short, shown
from medsynth.io.files import atomic_path, check_regular_file, read_text_file, write_json
from medsynth.progress import progress as show_progress

log = logging.getLogger("medsynth")

WEIGHTS, CONFIG = "weights.safetensors", "config.json"


class FeatureNetwork(nn.Module):
    """A residual encoder (MONAI ``ResidualUnit``, stride 2 after the first stage) with a
    feature-pyramid head: every stage projected, upsampled to the input size and summed."""

    def __init__(self, spatial_dims: int = 2, channels: tuple[int, ...] = (16, 32, 64, 128),
                 out_channels: int = 1, head_channels: int = 32) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.encoder = nn.ModuleList()
        previous = 1
        for index, width in enumerate(channels):
            self.encoder.append(ResidualUnit(spatial_dims, previous, width, strides=1 if index == 0 else 2,
                                             norm="BATCH", act="PRELU"))
            previous = width
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.lateral = nn.ModuleList(conv(width, head_channels, 1) for width in channels)
        self.output = nn.Sequential(nn.ReLU(), conv(head_channels, out_channels, 1))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.encoder:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        head = sum(F.interpolate(lateral(m), size=x.shape[2:], mode=mode, align_corners=False)
                   for lateral, m in zip(self.lateral, self.stages(x), strict=True))
        return self.output(head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, sum(channels))``: the spatial mean of every encoder stage."""
        return torch.cat([m.flatten(2).mean(2) for m in self.stages(x)], dim=1)


def _masked(images: torch.Tensor, generator: torch.Generator, block: int, fraction: float = 0.5) -> torch.Tensor:
    """``images`` with a random ``fraction`` of ``block``-sized cubes/squares set to zero."""
    grid = [max(1, s // block) for s in images.shape[2:]]
    keep = (torch.rand((images.shape[0], 1, *grid), generator=generator) >= fraction).float()
    return images * F.interpolate(keep, size=images.shape[2:], mode="nearest")


def _random_patches(images: list[torch.Tensor], labels: list[torch.Tensor] | None, patch: tuple[int, ...],
                    count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` random patches (zero-padded where an image is smaller than ``patch``)."""
    pad = ResizeWithPadOrCrop(patch)
    xs, ys = [], []
    for _ in range(count):
        index = int(torch.randint(len(images), (1,), generator=generator))
        image = images[index]
        corner = [int(torch.randint(max(1, s - p + 1), (1,), generator=generator)) for s, p in
                  zip(image.shape[1:], patch, strict=True)]
        window = (slice(None),) + tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
        xs.append(pad(image[window]).as_tensor())
        if labels is not None:
            ys.append(pad(labels[index][window]).as_tensor())
    return torch.stack(xs), (torch.stack(ys) if labels is not None else None)


def train_feature_network(images: list[torch.Tensor], labels: list[torch.Tensor] | None = None, *,
                          num_classes: int = 0, steps: int = 300, batch_size: int = 16, seed: int = 0,
                          device: str | torch.device = "cpu", progress: bool = True) -> FeatureExtractor:
    """Train medsynth's feature network on real training images ``(1, *spatial)`` in [0, 1].

    With ``labels`` (integer maps, ``num_classes`` incl. background) it learns to segment them
    (cross-entropy), else to reconstruct images from which half the blocks were masked (L1).
    """
    if not images:
        raise MedsynthError("feature network: no real training images to train on")
    spatial_dims = images[0].ndim - 1
    patch = (64, 64) if spatial_dims == 2 else (32, 32, 32)
    segment = labels is not None and num_classes >= 2
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = FeatureNetwork(spatial_dims, out_channels=num_classes if segment else 1).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    began = time.perf_counter()
    losses = []
    for _ in show_progress(range(steps), desc="feature network", unit="step", enabled=progress, leave=False):
        x, y = _random_patches(images, labels if segment else None, patch, batch_size, generator)
        x = x.to(device)
        if segment:
            loss = F.cross_entropy(network(x), y[:, 0].long().to(device))
        else:
            loss = F.l1_loss(network(_masked(x, generator, block=8 if spatial_dims == 2 else 4)), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    config = {"kind": "medsynth", "spatial_dims": spatial_dims, "channels": [16, 32, 64, 128],
              "out_channels": num_classes if segment else 1,
              "objective": f"segmentation of {num_classes} label classes" if segment else "masked-block reconstruction",
              "steps": steps, "training_images": len(images), "seconds": round(time.perf_counter() - began, 1),
              "final_loss": float(np.mean(losses[-max(1, steps // 10):]))}
    return FeatureExtractor(network.eval(), config)


class FeatureExtractor:
    """Frozen feature network: ``extract(images)`` -> ``(N, D)`` numpy features; ``description`` for reports."""

    def __init__(self, network: nn.Module, config: dict[str, Any]) -> None:
        with contextlib.suppress(NotImplementedError):  # torch.export modules have no eval(): exported in eval mode
            network.eval()
        self.network = network
        self.config = config

    @property
    def description(self) -> str:
        c = self.config
        if c["kind"] == "torchscript":
            return f"user-supplied feature extractor {c['path']} (TorchScript/torch.export)"
        return (f"medsynth feature network ({c['spatial_dims']}D residual encoder, "
                f"{sum(c['channels'])} features), trained locally for {c['steps']} steps on "
                f"{c['training_images']} real training images ({c['objective']}); not a pretrained network, "
                "so its FID/KID are comparable within this report only")

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """Features of ``images`` ``(N, 1, *spatial)`` in [0, 1]."""
        expected = self.config.get("spatial_dims")
        if expected is not None and images.ndim - 2 != expected:
            raise MedsynthError(f"feature network: trained on {expected}D images, given {images.ndim - 2}D ones")
        parameter = next(self.network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float().to(device)
            if self.config["kind"] == "torchscript":
                features = self.network(batch)
                features = features.flatten(2).mean(2) if features.ndim > 2 else features
            else:
                features = self.network.features(batch)
            out.append(features.double().cpu())
        result = torch.cat(out).numpy()
        if result.ndim != 2 or not np.isfinite(result).all():
            raise MedsynthError(f"feature extractor: expected finite (N, D) features, got shape {result.shape}")
        return result

    def save(self, folder: str | os.PathLike) -> Path:
        """Write medsynth's network as ``weights.safetensors`` + ``config.json`` (reusable with ``--features``)."""
        if self.config["kind"] != "medsynth":
            raise ValueError("only medsynth's own feature network is saved; a TorchScript file is reused as it is")
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / WEIGHTS) as tmp:
                save_file({k: v.contiguous().cpu() for k, v in self.network.state_dict().items()}, tmp)
            write_json(folder / CONFIG, self.config)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error type
            raise MedsynthError(f"{display(folder)}: cannot save the feature network ({describe(err)})") from None
        return folder


@dataclass
class SavedFeatureNetwork:
    """The ``config.json`` of a saved medsynth feature network, checked before anything is built."""

    kind: Literal["medsynth"]
    spatial_dims: Literal[2, 3]
    channels: tuple[int, ...]
    out_channels: int
    objective: str
    steps: int
    training_images: int
    seconds: float | None = None
    final_loss: float | None = None

    def validate(self) -> None:
        if not 1 <= len(self.channels) <= 8:
            raise ValueError(f"channels: needs 1 to 8 stages, got {short(list(self.channels))}")
        check_range(self, "channels", 1, 1024)
        check_range(self, "out_channels", 1, 1024)
        check_range(self, "steps", 0, 10**9)
        check_range(self, "training_images", 0, 10**9)
        if self.seconds is not None:
            check_range(self, "seconds", 0.0)
        if len(self.objective) > 200:
            raise ValueError(f"objective: {len(self.objective)} characters, more than 200")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _load_saved_network(folder: Path, device: str | torch.device) -> FeatureExtractor:
    """A feature network folder written by :meth:`FeatureExtractor.save`: ``config.json`` is checked
    in full, and the network it describes must fit ``weights.safetensors``, before anything is built."""
    try:
        text = read_text_file(folder / CONFIG, suffixes=(".json",))
    except MedsynthError as err:
        raise MedsynthError(f"{folder}: not a medsynth feature network ({err})") from None
    try:
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as err:
            raise MedsynthError(f"not JSON ({shown(describe(err), 100)})") from None
        saved = from_dict(SavedFeatureNetwork, data)
        with torch.device("meta"):  # sizes only: nothing allocated
            needed = sum(4 * p.numel() for p in FeatureNetwork(saved.spatial_dims, saved.channels,
                                                               saved.out_channels).parameters())
    except MedsynthError as err:
        raise MedsynthError(f"{folder}: not a medsynth feature network ({CONFIG}: {err})") from None
    weights = folder / WEIGHTS
    try:
        size = check_regular_file(weights, kind="weights").st_size
    except MedsynthError as err:
        raise MedsynthError(f"{folder}: not a medsynth feature network ({err})") from None
    if needed > size:
        raise MedsynthError(f"{folder}: not a medsynth feature network ({WEIGHTS}: {size:,} bytes, too small for "
                            f"the network {CONFIG} describes, {needed:,} bytes)")
    try:
        network = FeatureNetwork(saved.spatial_dims, saved.channels, saved.out_channels)
        network.load_state_dict(load_file(weights))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as err:
        raise MedsynthError(f"{folder}: not a medsynth feature network ({WEIGHTS}: {describe(err)})") from None
    return FeatureExtractor(network.to(device), to_dict(saved))


def load_feature_extractor(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureExtractor:
    """A feature network saved by medsynth (its folder), a TorchScript file or a ``torch.export`` archive (``.pt2``).

    Raises:
        MedsynthError: the path is neither, or cannot be loaded.
    """
    path = Path(path)
    if "\0" in str(path):
        raise MedsynthError(f"{short(str(path))}: a path cannot contain a NUL byte")
    if path.is_dir():
        return _load_saved_network(path, device)
    if not path.exists():
        raise MedsynthError(f"{path}: no such feature network (a TorchScript or torch.export file, or a medsynth "
                            "feature network folder)")
    check_regular_file(path, kind="feature extractor")  # not a FIFO or a device: torch would wait or read forever
    try:
        if path.suffix == ".pt2":  # torch.export archive
            network = torch.export.load(str(path)).module().to(device)
        else:
            network = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # torch raises RuntimeError/ValueError/zip errors for files of another kind
        raise MedsynthError(f"{path}: cannot load as a TorchScript/torch.export feature extractor "
                            f"({describe(err)})") from None
    return FeatureExtractor(network, {"kind": "torchscript", "path": str(path)})
