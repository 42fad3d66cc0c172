from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, read_image, write_dicom_series
from tests.conftest import SeriesSpec, canonical, oblique_spec, require_tool, write_series

IDENTIFYING = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19700101",
               "AccessionNumber": "ACC-999", "InstitutionName": "St Example Hospital"}


@pytest.fixture
def source_series(tmp_path):
    spec = oblique_spec(slices=5)
    write_series(tmp_path / "source", spec)
    return tmp_path / "source", read_image(tmp_path / "source")


def test_round_trip_geometry_and_values(tmp_path, source_series):
    _, image = source_series
    image = image.with_array(image.array / 7.3)  # non-integer values: stored with a rescale slope
    write_dicom_series(image, tmp_path / "out", series_description="SYNTHETIC test")
    back = read_image(tmp_path / "out")
    ours, our_affine = canonical(image.array, image.affine)
    theirs, their_affine = canonical(back.array, back.affine)
    np.testing.assert_allclose(their_affine, our_affine, atol=1e-4)
    step = float(pydicom.dcmread(next((tmp_path / "out").iterdir())).RescaleSlope)
    np.testing.assert_allclose(theirs, ours, atol=step / 2 + 1e-6)


def test_integer_ct_is_lossless(tmp_path):
    hu = np.random.default_rng(0).integers(-1024, 3000, (7, 6, 3)).astype(np.float32)
    image = MedicalImage(hu, np.diag([0.7, 0.7, 2.0, 1.0]), {"modality": "CT"})
    write_dicom_series(image, tmp_path / "ct")
    back = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(back.array, hu)
    assert back.meta["modality"] == "CT"
    assert pydicom.dcmread(next((tmp_path / "ct").iterdir())).SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_synthetic_marking_and_no_patient_data(tmp_path, source_series):
    folder, image = source_series
    source = pydicom.dcmread(next(folder.iterdir()))
    write_dicom_series(image, tmp_path / "out", series_description="SYNTHETIC from medsynth")
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == image.array.shape[2]
    source_uids = {source.StudyInstanceUID, source.SeriesInstanceUID, source.FrameOfReferenceUID, source.SOPInstanceUID}
    sop_uids = set()
    for path in files:
        ds = pydicom.dcmread(path)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "SYNTHETIC" in ds.SeriesDescription
        assert ds.PatientIdentityRemoved == "YES"
        for keyword, value in IDENTIFYING.items():
            assert str(ds.get(keyword, "") or "") != value, keyword
        raw = path.read_bytes()
        for value in IDENTIFYING.values():
            assert value.encode() not in raw
        assert not {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID} & source_uids
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(files)


def test_uid_seed_makes_identical_files(tmp_path):
    image = MedicalImage(np.arange(60, dtype=np.float32).reshape(5, 4, 3), np.eye(4), {"modality": "MR"})
    write_dicom_series(image, tmp_path / "a", uid_seed="seed-1")
    write_dicom_series(image, tmp_path / "b", uid_seed="seed-1")
    write_dicom_series(image, tmp_path / "c", uid_seed="seed-2")
    a = [p.read_bytes() for p in sorted((tmp_path / "a").iterdir())]
    assert a == [p.read_bytes() for p in sorted((tmp_path / "b").iterdir())]
    assert a != [p.read_bytes() for p in sorted((tmp_path / "c").iterdir())]


def test_replaces_an_existing_series_completely(tmp_path):
    big = MedicalImage(np.zeros((4, 4, 6), np.float32), np.eye(4))
    small = MedicalImage(np.ones((4, 4, 2), np.float32), np.eye(4))
    write_dicom_series(big, tmp_path / "s")
    write_dicom_series(small, tmp_path / "s")
    assert len(list((tmp_path / "s").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_in_plane_shear(tmp_path):
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(MedsynthError, match="shear"):
        write_dicom_series(MedicalImage(np.zeros((3, 3, 2), np.float32), affine), tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_dciodvfy_finds_no_errors(tmp_path, mni, modality):
    tool = require_tool("dciodvfy")
    t1, _ = mni
    crop = t1.array[30:60, 30:60, 40:43]
    values = crop if modality == "MR" else np.round(crop * 2000 - 1000)
    write_dicom_series(MedicalImage(values, t1.affine, {"modality": modality}), tmp_path / "s",
                       series_description="SYNTHETIC test")
    for path in sorted((tmp_path / "s").iterdir()):
        result = subprocess.run([tool, str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_reading_a_written_series_with_spec_helper(tmp_path):
    """The fixture writer and medsynth's writer agree on the same geometry."""
    spec = SeriesSpec(slices=3)
    expected = spec.expected()
    write_dicom_series(expected, tmp_path / "s")
    back = read_image(tmp_path / "s")
    np.testing.assert_allclose(back.affine, expected.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, expected.array)
