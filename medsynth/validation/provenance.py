"""Where a measured figure came from: code version, date, packages, machine, config and seeds.

Every results record (``benchmarks/results/*.json``, ``metrics.json`` of ``compare``) carries
:func:`provenance`, so a number can be traced to the code and machine that produced it and a run
is only reused when its resolved config is the same (:func:`config_hash`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("medsynth", "torch", "monai", "numpy", "scipy", "scikit-image", "nibabel", "pydicom", "bm3d")


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of a resolved config's canonical JSON: equal configs, equal hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def git_commit(folder: str | os.PathLike | None = None) -> str:
    """The checked-out commit of the repository holding ``folder`` (default: this package), with
    ``+dirty`` when tracked files differ from it; ``unknown`` outside a git checkout."""
    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


#: the commit of the code this process runs: read once, at import, so a record written hours later
#: (after the checkout has moved on) still names the code that produced it
COMMIT_AT_START = git_commit()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    with contextlib.suppress(OSError):  # no /proc (macOS, Windows): the platform's word below
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(*, config: dict[str, Any] | None = None, seeds: list[int] | None = None,
               **extra: Any) -> dict[str, Any]:
    """The provenance block of a results record: commit, UTC date, packages, CPU and cores, Python,
    torch threads, the config's hash, seeds, and any ``extra`` fields (e.g. wall times)."""
    import torch

    record = {
        "commit": COMMIT_AT_START,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "packages": package_versions(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if config is not None:
        record["config_hash"] = config_hash(config)
    if seeds is not None:
        record["seeds"] = list(seeds)
    record.update(extra)
    return record
