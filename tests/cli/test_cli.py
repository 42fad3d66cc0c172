"""The command line, through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.io import MedicalImage, read_image, write_nifti
from tests.conftest import SeriesSpec, canonical, oblique_spec, run_dcm2niix, write_series

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for name in ("info", "convert", "sample-data"):
        assert name in result.stdout


def test_version_is_the_package_version():
    from medsynth import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"medsynth {__version__}"


def test_info_json():
    result = run("info", "--json")
    assert result.exit_code == 0
    details = json.loads(result.stdout)
    assert {"medsynth", "torch", "monai", "cuda", "default device"} <= set(details)


def test_convert_mixed_folder_matches_dcm2niix(tmp_path):
    spec = oblique_spec(description="tilted", number=4)
    write_series(tmp_path / "in" / "patient" / "s4", spec, suffix="")
    write_series(tmp_path / "in" / "patient" / "s4", SeriesSpec(description="axial", number=5, seed=3), suffix="")
    write_nifti(MedicalImage(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / "in" / "extra.nii.gz")
    result = run("convert", tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    datalist = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert sorted(e["image"] for e in datalist["training"]) == [
        "images/4_tilted.nii.gz", "images/5_axial.nii.gz", "images/extra.nii.gz"]
    ours = nib.load(tmp_path / "out" / "images" / "4_tilted.nii.gz")
    # the series alone, converted by the reference tool
    write_series(tmp_path / "alone", spec)
    reference = run_dcm2niix(tmp_path / "alone", tmp_path / "ref")
    a, a_affine = canonical(ours.get_fdata(), ours.affine)
    b, b_affine = canonical(reference.get_fdata(), reference.affine)
    np.testing.assert_allclose(a_affine, b_affine, atol=1e-3)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_convert_to_dicom_with_labels(tmp_path):
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    image = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    write_nifti(MedicalImage(image, affine, {"modality": "MR"}), tmp_path / "img" / "case1_0000.nii.gz")
    write_nifti(MedicalImage((image > 0.5).astype(np.float32), affine), tmp_path / "lab" / "case1.nii.gz")
    result = run("convert", tmp_path / "img", tmp_path / "out", "--format", "dicom", "--labels", tmp_path / "lab")
    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads((tmp_path / "out" / "dataset.json").read_text())["training"]
    assert entry["image"] == "images/case1_0000" and entry["label"] == "labels/case1_0000.dcm"  # a DICOM SEG
    back = read_image(tmp_path / "out" / entry["image"])
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.array, image, atol=1e-4)
    label = read_image(tmp_path / "out" / entry["label"])  # the SEG, read back on its image's grid
    np.testing.assert_array_equal(label.array, (image > 0.5).astype(np.uint16))
    np.testing.assert_allclose(label.affine, back.affine, atol=1e-4)


def test_skip_invalid_converts_the_rest(tmp_path, pydicom_file):
    import shutil

    shutil.copytree(pydicom_file("dicomdirtests/98892003/MR700"), tmp_path / "in" / "localizer")
    shutil.copytree(pydicom_file("dicomdirtests/98892001/CT5N"), tmp_path / "in" / "ct")
    assert run("convert", tmp_path / "in", tmp_path / "strict").exit_code == 1
    assert not (tmp_path / "strict" / "images").exists()
    result = run("convert", tmp_path / "in", tmp_path / "out", "--skip-invalid")
    assert result.exit_code == 0
    assert "warning: skipped" in result.stderr and "ImageOrientationPatient" in result.stderr
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == ["5_SmartScore_-_Gated_0.5_sec.nii.gz"]


def _empty(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path / "in", "folder is empty"


def _no_images(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("hello")
    (tmp_path / "in" / "table.csv").write_text("a,b\n1,2\n")
    return tmp_path / "in", "no NIfTI file or DICOM image series"


def _corrupt_inner_slice(tmp_path):
    paths = write_series(tmp_path / "in", SeriesSpec(slices=5, rows=20, columns=20), shuffle=False)
    paths[2].write_bytes(paths[2].read_bytes()[:-300])
    return tmp_path / "in", paths[2].name


def _uneven_spacing(tmp_path):
    paths = write_series(tmp_path / "in", SeriesSpec(slices=5), shuffle=False)
    paths[1].unlink()
    return tmp_path / "in", "uneven slice spacing"


def _inconsistent_sizes(tmp_path):
    import pydicom

    paths = write_series(tmp_path / "in", SeriesSpec(slices=3), shuffle=False)
    ds = pydicom.dcmread(paths[1])
    ds.Rows, ds.Columns, ds.PixelData = 2, 2, np.zeros((2, 2), np.int16).tobytes()
    ds.save_as(paths[1])
    return tmp_path / "in", "image size"


def _nan_voxels(tmp_path):
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "nan.nii.gz")
    return tmp_path / "nan.nii.gz", "non-finite"


def _four_d(tmp_path):
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "in" / "fmri.nii.gz")
    return tmp_path / "in", "4 dimensions"


def _corrupt_nifti(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    return tmp_path / "in", "broken.nii.gz"


@pytest.mark.parametrize("make", [_empty, _no_images, _corrupt_inner_slice, _uneven_spacing, _inconsistent_sizes,
                                  _nan_voxels, _four_d, _corrupt_nifti], ids=lambda f: f.__name__.strip("_"))
def test_bad_input_gives_one_line_error_and_no_output(tmp_path, make):
    source, expected = make(tmp_path)
    before = sorted(p.name for p in source.parent.rglob("*")) if source.is_file() else None
    result = run("convert", source, tmp_path / "out")
    assert result.exit_code == 1
    line = error_line(result)
    assert expected in line
    assert not (tmp_path / "out" / "images").exists() and not (tmp_path / "out" / "dataset.json").exists()
    if before is not None:
        assert sorted(p.name for p in source.parent.rglob("*") if "out" not in p.parts) == \
            [n for n in before if n != "out"]


def test_label_shape_mismatch(tmp_path):
    write_nifti(MedicalImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "img" / "a.nii.gz")
    write_nifti(MedicalImage(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "lab" / "a.nii.gz")
    result = run("convert", tmp_path / "img", tmp_path / "out", "--labels", tmp_path / "lab")
    assert result.exit_code == 1 and "label shape" in error_line(result)
    assert not (tmp_path / "out" / "images").exists()


def test_label_affine_mismatch(tmp_path):
    write_nifti(MedicalImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "img" / "a.nii.gz")
    write_nifti(MedicalImage(np.zeros((4, 4, 4), np.float32), np.diag([1, 1, 2.0, 1])), tmp_path / "lab" / "a.nii.gz")
    result = run("convert", tmp_path / "img", tmp_path / "out", "--labels", tmp_path / "lab")
    assert result.exit_code == 1 and "affine differs" in error_line(result)


def test_output_inside_input_and_unwritable_output(tmp_path):
    write_nifti(MedicalImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "in" / "a.nii.gz")
    result = run("convert", tmp_path / "in", tmp_path / "in" / "out")
    assert result.exit_code == 1 and "inside the input" in error_line(result)
    assert not (tmp_path / "in" / "out").exists()
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = run("convert", tmp_path / "in", tmp_path / "blocker" / "out")
    assert result.exit_code == 1 and "blocker" in error_line(result)


def test_subprocess_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "medsynth", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "convert" in ok.stdout
    usage = subprocess.run([sys.executable, "-m", "medsynth", "convert"], capture_output=True, text=True)
    assert usage.returncode == 2
    missing = subprocess.run([sys.executable, "-m", "medsynth", "convert", str(tmp_path / "nope"), str(tmp_path / "o")],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such file or folder"]
