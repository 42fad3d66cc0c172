"""Which torch device a command runs on: one rule for ``--device`` everywhere."""

from __future__ import annotations

import torch

from medsynth.errors import MedsynthError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MedsynthError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if device != "cpu" and not device.startswith("cuda"):
        raise MedsynthError(f"--device {device}: use auto, cpu or cuda")
    return torch.device(device)
