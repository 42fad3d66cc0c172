"""Pictures of training progress: sample grids (condition | sample | real)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from medsynth.io.files import atomic_path


def subplots(rows: int, columns: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure and its ``(rows, columns)`` grid of axes, made without pyplot: no global backend
    or figure registry is touched, so a notebook's plotting backend stays as it was."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _middle(image: torch.Tensor) -> torch.Tensor:
    """2D view of one ``(C, *spatial)`` item: the middle slice along the last axis for 3D."""
    return image[..., image.shape[-1] // 2] if image.ndim == 4 else image


def _condition_view(condition: torch.Tensor) -> tuple[torch.Tensor, str, dict]:
    if condition.shape[0] > 1:  # one-hot label map -> class indices
        return condition.argmax(0).float(), "label map", {"cmap": "viridis", "vmin": 0, "vmax": condition.shape[0] - 1}
    return condition[0], "condition", {"cmap": "gray", "vmin": 0, "vmax": 1}


def sample_grid(real: torch.Tensor, output: torch.Tensor, condition: torch.Tensor | None, path: Path,
                title: str = "") -> Path:
    """Save a grid with one row per item: [condition |] sample | real (images in [0, 1])."""
    rows = real.shape[0]
    columns = 3 if condition is not None else 2
    figure, axes = subplots(rows, columns, (2.2 * columns, 2.2 * rows))
    for row in range(rows):
        panels = []
        if condition is not None:
            panels.append(_condition_view(_middle(condition[row])))
        panels.append((_middle(output[row])[0], "sample", {"cmap": "gray", "vmin": 0, "vmax": 1}))
        panels.append((_middle(real[row])[0], "real", {"cmap": "gray", "vmin": 0, "vmax": 1}))
        for column, (image, name, style) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image.T.numpy(), origin="lower", **style)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=72, format="png")
    return path
