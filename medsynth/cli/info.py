"""``medsynth info``: versions, compute devices and where data is looked for."""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from medsynth.cli.common import command


def collect_info() -> dict[str, str]:
    """Versions of medsynth and its stack, the compute devices, and bundled-data locations."""
    import torch

    def package_version(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    info = {name: package_version(name) for name in ("medsynth", "torch", "monai", "nibabel", "pydicom", "nilearn")}
    info["python"] = platform.python_version()
    info["cpu"] = f"{platform.machine()}, {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = f"{torch.version.cuda}: " + ", ".join(names)
        info["default device"] = "cuda"
    else:
        info["cuda"] = "not available"
        info["default device"] = "cpu"
    info["dcm2niix"] = shutil.which("dcm2niix") or "not found (only needed by the reference tests)"
    try:
        from medsynth.data.samples import pydicom_test_file

        info["sample DICOM"] = str(pydicom_test_file("MR_small.dcm").parent)
    except (ImportError, FileNotFoundError):
        info["sample DICOM"] = "not found"
    try:
        from nilearn.datasets import MNI152_FILE_PATH

        info["sample MNI152"] = str(MNI152_FILE_PATH)
    except ImportError:
        info["sample MNI152"] = "nilearn not installed"
    return info


@command
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the information as one JSON object.")] = False,
) -> None:
    """Show versions of medsynth, torch and MONAI, the CPU/CUDA devices, and where sample data lives."""
    details = collect_info()
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    width = max(map(len, details))
    for key, value in details.items():
        typer.echo(f"{key:<{width}}  {value}")
