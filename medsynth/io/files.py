"""Safe file handling: atomic writes, staged outputs, output-folder checks, header-safe names."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_NAME_LENGTH = 64


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without its NIfTI suffix: ``case01.nii.gz`` -> ``case01``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def safe_name(text: str, fallback: str = "image") -> str:
    """A file name made from untrusted header text: it can never leave its folder.

    Keeps ASCII letters, digits, ``.``, ``_`` and ``-``; everything else (path separators,
    control characters, spaces) becomes ``_``. Leading dots are dropped (no ``..`` or hidden
    files) and the result is at most ``MAX_NAME_LENGTH`` characters.
    """
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+|\.{2,}", "_", text)
    text = re.sub(r"_+", "_", text).strip("._-")
    text = text[:MAX_NAME_LENGTH].rstrip("._-")
    return text or fallback


def unique_names(names: list[str]) -> list[str]:
    """Make names unique in order of appearance by appending ``_2``, ``_3``, ... to repeats."""
    seen: dict[str, int] = {}
    taken = set(names)
    result = []
    for name in names:
        if name not in seen:
            seen[name] = 1
            result.append(name)
            continue
        count = seen[name]
        while True:
            count += 1
            candidate = f"{name}_{count}"
            if candidate not in taken:
                break
        seen[name] = count
        taken.add(candidate)
        result.append(candidate)
    return result


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (symlinks resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def prepare_output_dir(output_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Create ``output_dir`` if needed and check it is writable and not inside the input.

    ``input_path`` may be a folder (the output must not lie below it) or a file (the output
    must not be that file).

    Raises:
        MedsynthError: the folder is inside ``input_path``, is a file, or cannot be written.
    """
    output_dir = Path(output_dir)
    if input_path is not None and is_inside(output_dir, input_path):
        raise MedsynthError(f"{output_dir}: output folder is inside the input {input_path}; "
                            "medsynth never writes into its input")
    if output_dir.exists() and not output_dir.is_dir():
        raise MedsynthError(f"{output_dir}: output path exists and is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=output_dir, prefix=".medsynth-write-test-").close()  # probe: deleted on close
    except OSError as err:
        raise MedsynthError(f"{output_dir}: output folder is not writable ({err.strerror or err})") from None
    return output_dir


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    Works for files and folders. On any error the temporary is removed, so ``target`` is either
    the complete new content, or whatever it was before. The temporary keeps ``target``'s
    suffixes so writers that look at the extension (``.nii.gz``) behave.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:40]}.tmp-",
                                    suffix="".join(target.suffixes[-2:]))
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir():
            old = target.with_name(f".{target.name[:40]}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def is_leftover(path: Path) -> bool:
    """A temporary of :func:`atomic_path` left behind by a killed process."""
    return path.name.startswith(".") and (".tmp-" in path.name or ".old-" in path.name)


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete ``atomic_path`` temporaries that a killed process left in ``folder``; returns how many."""
    leftovers = [p for p in Path(folder).glob(".*") if is_leftover(p)] if Path(folder).is_dir() else []
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(leftovers)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_datalist(output_dir: Path, entries: list[dict[str, str]], description: str) -> Path:
    """Write ``dataset.json``, a MONAI datalist (``monai.data.load_decathlon_datalist``).

    Paths in ``entries`` must already be relative to ``output_dir``.
    """
    path = output_dir / "dataset.json"
    write_json(path, {"description": description, "numTraining": len(entries), "training": entries})
    return path
