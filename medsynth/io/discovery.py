"""Find every image under a file or folder: NIfTI files and DICOM series, nested and mixed."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from medsynth.errors import MedsynthError, display
from medsynth.io.dicom_read import DicomSeries, read_dicom_series, scan_dicom
from medsynth.io.dicom_seg import read_dicom_seg
from medsynth.io.files import (
    check_regular_file,
    file_problem,
    is_inside,
    is_nifti,
    nifti_stem,
    safe_name,
    unique_names,
)
from medsynth.io.image import MedicalImage
from medsynth.io.nifti import read_nifti

log = logging.getLogger("medsynth")


@dataclass
class ImageSource:
    """One image found on disk, not yet read: a NIfTI file or a DICOM series.

    Attributes:
        name: unique, file-name-safe name for outputs (NIfTI stem, or DICOM series number and
            description).
        path: the NIfTI file, or the DICOM series' folder (its file, for a one-file series).
        series: the DICOM series (``None`` for NIfTI).
        label: a label map (set by :func:`~medsynth.io.pairing.pair_labels`): NIfTI values are read
            exactly, in their stored integer type, instead of as float32.
    """

    name: str
    path: Path
    series: DicomSeries | None = None
    label: bool = False
    segmentation: bool = False  # a DICOM SEG file: read as one label map

    @property
    def format(self) -> str:
        return "dicom-seg" if self.segmentation else "nifti" if self.series is None else "dicom"

    def read(self) -> MedicalImage:
        if self.segmentation:
            image = read_dicom_seg(self.path)
        else:
            image = read_nifti(self.path, exact=self.label) if self.series is None else read_dicom_series(self.series)
        image.meta["name"] = self.name
        return image


def _walk(root: Path) -> list[Path]:
    """All regular files below ``root`` in a stable order, hidden files and folders skipped.

    Symbolic links to files are followed; links to folders are not (``os.walk``'s default), so a
    link loop cannot make the walk endless. FIFOs, devices, sockets and broken links (or links to
    them) are skipped with a warning: opening one would block or never end. Unreadable folders
    are skipped with a warning.
    """
    found = []

    def unreadable(err: OSError) -> None:
        log.warning("%s: skipped unreadable folder (%s)", err.filename, err.strerror or err)

    for folder, subfolders, files in os.walk(root, onerror=unreadable):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            problem = file_problem(path)
            if problem:
                log.warning("%s: skipped, %s", path, problem)
            else:
                found.append(path)
    return found


def find_images(path: str | os.PathLike, segmentations: bool = False) -> list[ImageSource]:
    """Every NIfTI file and DICOM series under ``path`` (a file or a folder), in a stable order.

    DICOM files are recognised by content (``DICM`` magic) or a ``.dcm`` suffix and grouped by
    SeriesInstanceUID, wherever they lie. Files that look like DICOM but cannot be parsed are
    reported as warnings (their series is then checked for gaps when read). Only regular files
    are read: FIFOs, devices and sockets in a folder are skipped with a warning, and symbolic
    links to folders are not followed. DICOM SEG files are label maps: with ``segmentations``
    they are listed (``ImageSource.segmentation``), otherwise skipped with a warning.

    Raises:
        MedsynthError: ``path`` does not exist, is a file but not a regular one, or holds no image.
    """
    root = Path(path)
    if not root.exists():
        raise MedsynthError(f"{root}: no such file or folder")
    if not root.is_dir():
        check_regular_file(root)
    files = [root] if not root.is_dir() else _walk(root)
    nifti_files = [f for f in files if is_nifti(f)]
    scan = scan_dicom([f for f in files if not is_nifti(f)])
    for bad, reason in scan.unreadable.items():
        log.warning("%s: skipped unreadable DICOM file (%s)", bad, reason)
    candidates = [(nifti_stem(f), f, None) for f in nifti_files]
    candidates += [(s.name, s.location, s) for s in sorted(scan.series, key=lambda s: (str(s.location), s.name))]
    if segmentations:
        candidates += [(f.stem, f, "seg") for f in scan.segmentations]
    else:
        for seg in scan.segmentations:
            log.warning("%s: DICOM SEG (label maps, not an image): skipped; give it with --labels", seg)
    if not candidates:
        if not files:
            raise MedsynthError(f"{root}: folder is empty")
        if scan.unreadable:
            first = next(iter(scan.unreadable.items()))
            raise MedsynthError(f"{first[0]}: no readable image under {root} ({first[1]})")
        raise MedsynthError(f"{root}: no NIfTI file or DICOM image series found ({len(files)} other files)")
    names = unique_names([safe_name(name) for name, _, _ in candidates])
    return [ImageSource(name, p, None if series == "seg" else series, label=series == "seg",
                        segmentation=series == "seg") for name, (_, p, series) in zip(names, candidates, strict=True)]


#: folder names that hold label maps by convention (MONAI/nnU-Net datasets, medsynth's sample data)
LABEL_FOLDERS = frozenset({"labels", "label", "labelstr", "labelsts", "masks", "mask", "segmentations", "seg"})


def find_input_images(path: str | os.PathLike, labels: str | os.PathLike | None = None) -> list[ImageSource]:
    """The images under ``path`` (:func:`find_images`) that a command reads as images: never the
    label maps. Files inside ``labels`` (a labels folder kept inside ``path``) are left out.

    Raises:
        MedsynthError: as :func:`find_images`; also when ``path`` holds a folder of label maps by
            name (``labels``, ``masks``, ...; :data:`LABEL_FOLDERS`) that is not ``labels``, so that
            label maps are never read, converted or restored as images, or when nothing but labels is found.
    """
    sources = find_images(path)
    if labels is not None and is_inside(labels, path):
        sources = [s for s in sources if not is_inside(s.path, labels)]
        if not sources:
            raise MedsynthError(f"{display(path)}: holds no image outside the labels folder {display(labels)}")
    root = Path(path)
    for source in sources if root.is_dir() else []:
        relative = Path(os.path.relpath(source.path, root))
        folders = relative.parts if source.path.is_dir() else relative.parts[:-1]
        named = [k for k, part in enumerate(folders) if part.lower() in LABEL_FOLDERS]
        if named:
            where = root.joinpath(*folders[:named[0] + 1])
            raise MedsynthError(f"{display(where)}: a folder of label maps inside {display(path)}; pass it with "
                                "--labels (or give a folder of images only), so labels are not read as images")
    return sources


def read_image(path: str | os.PathLike) -> MedicalImage:
    """Read one image: a NIfTI file, a DICOM file (a SEG file: its label map), or a folder holding
    exactly one DICOM series."""
    sources = find_images(path, segmentations=Path(path).is_file())
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources[:3]) + (", ..." if len(sources) > 3 else "")
        raise MedsynthError(f"{path}: holds {len(sources)} images ({names}); pass one file or series folder, "
                            "or use find_images()")
    return sources[0].read()
