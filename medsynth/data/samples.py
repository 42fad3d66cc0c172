"""Real sample data that installs with medsynth's dependencies; nothing is downloaded.

- The MNI152 2009 T1 template with grey/white-matter probability maps, shipped by nilearn.
  Tissue labels are the argmax of (background, GM, WM), background = 1 - GM - WM clipped at 0.
- pydicom's bundled test files: ``MR_small.dcm`` and ``CT_small.dcm`` (single real slices) and
  a real 5-slice CT series (``dicomdirtests/98892001/CT5N``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from medsynth.io.dicom_write import write_dicom_series
from medsynth.io.image import MedicalImage
from medsynth.io.nifti import write_nifti

TISSUE_CLASSES = ("background", "grey_matter", "white_matter")


def mni152(resolution_mm: int = 2) -> tuple[MedicalImage, MedicalImage]:
    """The MNI152 2009 T1 template and its tissue label map (0 background, 1 GM, 2 WM).

    Args:
        resolution_mm: 1 or 2 (nilearn's resolutions); 2 gives a ``(99, 117, 95)`` volume.

    Returns:
        ``(t1, tissue_labels)`` on the same grid; ``t1`` intensities in [0, 1].
    """
    from nilearn import datasets  # heavy import, only when the template is needed

    t1 = datasets.load_mni152_template(resolution=resolution_mm)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution_mm).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution_mm).dataobj, dtype=np.float32)
    background = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.uint8)
    affine = np.asarray(t1.affine, dtype=np.float64)
    meta = {"modality": "MR", "source": "nilearn MNI152 2009 template", "name": "mni152_t1",
            "series_description": "MNI152 T1 template"}
    image = MedicalImage(np.asarray(t1.dataobj, dtype=np.float32), affine, meta)
    label = MedicalImage(labels, affine.copy(), {**meta, "source": "nilearn MNI152 GM/WM templates (argmax)"})
    return image, label


def pydicom_test_file(name: str) -> Path:
    """Path of a file bundled with pydicom, e.g. ``"MR_small.dcm"`` or ``"dicomdirtests/98892001/CT5N"``,
    or installed with the ``pydicom-data`` package (e.g. ``"emri_small.dcm"``); never downloaded."""
    import pydicom.data

    path = Path(pydicom.data.__file__).parent / "test_files" / name
    if path.exists():
        return path
    found = pydicom.data.get_testdata_file(name, download=False)
    if found is None:
        raise FileNotFoundError(f"{name}: neither bundled with this pydicom version nor installed with pydicom-data")
    return Path(found)


def write_sample_data(output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write a small folder of real sample data to try medsynth on.

    Layout::

        images/mni152_t1.nii.gz       MNI152 T1 template (NIfTI)
        labels/mni152_t1.nii.gz       its tissue labels (0 background, 1 GM, 2 WM)
        dicom/mni152_t1/IM*.dcm       the same template as a DICOM MR series
        dicom/pydicom/...             pydicom's real MR and CT slices and 5-slice CT series

    Returns:
        The paths of ``images``, ``labels`` and ``dicom``.
    """
    out = Path(output_dir)
    image, label = mni152()
    write_nifti(image, out / "images" / "mni152_t1.nii.gz")
    write_nifti(label, out / "labels" / "mni152_t1.nii.gz", dtype=np.uint8)
    write_dicom_series(image, out / "dicom" / "mni152_t1", series_description="MNI152 T1 template",
                       series_number=1, uid_seed="medsynth-sample-mni152")
    real = out / "dicom" / "pydicom"
    real.mkdir(parents=True, exist_ok=True)
    for name in ("MR_small.dcm", "CT_small.dcm"):
        shutil.copyfile(pydicom_test_file(name), real / name)
    shutil.copytree(pydicom_test_file("dicomdirtests/98892001/CT5N"), real / "CT5N", dirs_exist_ok=True)
    return {"images": out / "images", "labels": out / "labels", "dicom": out / "dicom"}
