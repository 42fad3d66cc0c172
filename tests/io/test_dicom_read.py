from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest

from medsynth.errors import MedsynthError
from medsynth.io import find_images, read_image
from tests.conftest import SeriesSpec, oblique_spec, write_series

SPECS = {
    "axial": SeriesSpec(),
    "oblique_descending_rescaled": oblique_spec(),
    "sagittal": SeriesSpec(row_cosine=(0, 1, 0), column_cosine=(0, 0, -1), pixel_spacing=(1.2, 0.9), slice_step=4.0),
    "coronal_descending": SeriesSpec(row_cosine=(1, 0, 0), column_cosine=(0, 0, -1), slice_step=-1.5),
}


@pytest.mark.parametrize("name", SPECS)
def test_series_geometry_and_values(tmp_path, name):
    spec = SPECS[name]
    write_series(tmp_path / "series", spec)
    image = read_image(tmp_path / "series")
    expected = spec.expected()
    assert image.array.shape == (spec.columns, spec.rows, spec.slices)
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.array, expected.array)
    assert image.meta["modality"] == spec.modality
    assert image.spacing_mm == pytest.approx((spec.pixel_spacing[1], spec.pixel_spacing[0], abs(spec.slice_step)),
                                             abs=1e-4)


def test_order_ignores_file_names_and_instance_numbers(tmp_path):
    spec = SeriesSpec(slices=6)
    write_series(tmp_path / "s", spec, shuffle=True)
    image = read_image(tmp_path / "s")
    # slice k of the volume must be the stored slice at the k-th lowest position
    np.testing.assert_array_equal(image.array[:, :, 2], spec.stored()[2].T.astype(np.float32))


def test_mixed_nested_folders_without_suffix(tmp_path):
    write_series(tmp_path / "a" / "b", SeriesSpec(description="first", number=1), suffix="")
    write_series(tmp_path / "a" / "b", oblique_spec(description="second", number=2, seed=5), suffix="")
    write_series(tmp_path / "c", SeriesSpec(description="third", number=3, slices=2, seed=9), suffix=".DCM")
    (tmp_path / "notes.txt").write_text("not an image")
    sources = find_images(tmp_path)
    assert sorted(s.name for s in sources) == ["1_first", "2_second", "3_third"]
    shapes = {s.name: s.read().array.shape for s in sources}
    assert shapes["3_third"] == (5, 6, 2)


def test_real_ct_series_from_pydicom(pydicom_file):
    image = read_image(pydicom_file("dicomdirtests/98892001/CT5N"))
    assert image.array.shape == (16, 16, 5)
    assert image.spacing_mm == pytest.approx((0.488281, 0.488281, 2.5), abs=1e-5)
    assert image.meta["modality"] == "CT"
    # slices ascend in z (superior) even though the files' positions run downwards
    assert image.affine[2, 2] == pytest.approx(2.5, abs=1e-5)
    ds = pydicom.dcmread(pydicom_file("dicomdirtests/98892001/CT5N/3353"))  # lowest slice, z = -1.2375
    np.testing.assert_array_equal(image.array[:, :, 0], ds.pixel_array.T.astype(np.float32) - 1024)


@pytest.mark.parametrize("name, shape, spacing", [("MR_small.dcm", (64, 64, 1), (0.3125, 0.3125, 0.8)),
                                                  ("CT_small.dcm", (128, 128, 1), (0.661468, 0.661468, 5.0))])
def test_single_real_slices(pydicom_file, name, shape, spacing):
    image = read_image(pydicom_file(name))
    assert image.array.shape == shape
    assert image.spacing_mm == pytest.approx(spacing, abs=1e-5)


@pytest.mark.parametrize("folder, message", [
    ("dicomdirtests/77654033/CT2", "uneven slice spacing"),
    ("dicomdirtests/98892003/MR700", "ImageOrientationPatient"),
])
def test_real_series_that_are_not_one_volume(pydicom_file, folder, message):
    with pytest.raises(MedsynthError, match=message):
        read_image(pydicom_file(folder))


def test_uneven_spacing_names_the_file(tmp_path):
    paths = write_series(tmp_path / "s", SeriesSpec(slices=5), shuffle=False)
    paths[3].unlink()  # a missing slice in the middle
    with pytest.raises(MedsynthError, match="uneven slice spacing") as err:
        read_image(tmp_path / "s")
    assert str(paths[4]) in str(err.value)


def test_two_volumes_in_one_series(tmp_path):
    paths = write_series(tmp_path / "s", SeriesSpec(slices=3))
    uid = pydicom.dcmread(paths[0]).SeriesInstanceUID
    for path in write_series(tmp_path / "echo2", SeriesSpec(slices=3, seed=4)):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.save_as(tmp_path / "s" / f"echo2_{path.name}")
    with pytest.raises(MedsynthError, match="share one position"):
        read_image(tmp_path / "s")


def test_inconsistent_sizes(tmp_path):
    write_series(tmp_path / "s", SeriesSpec(slices=3))
    odd = next((tmp_path / "s").iterdir())
    ds = pydicom.dcmread(odd)
    ds.Rows, ds.Columns = 3, 10
    ds.save_as(odd)
    with pytest.raises(MedsynthError, match="image size"):
        read_image(tmp_path / "s")


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_corrupt_inner_slice_is_an_error(tmp_path):
    paths = write_series(tmp_path / "s", SeriesSpec(slices=5, rows=30, columns=30), shuffle=False)
    _truncate(paths[2], keep=0.9)  # header intact, pixel data cut short
    with pytest.raises(MedsynthError, match="gap") as err:
        read_image(tmp_path / "s")
    assert str(paths[2]) in str(err.value)


def test_corrupt_end_slice_is_dropped_with_warning(tmp_path, caplog):
    spec = SeriesSpec(slices=5, rows=30, columns=30)
    paths = write_series(tmp_path / "s", spec, shuffle=False)
    _truncate(paths[4], keep=0.9)
    with caplog.at_level(logging.WARNING, logger="medsynth"):
        image = read_image(tmp_path / "s")
    assert image.array.shape == (30, 30, 4)
    np.testing.assert_array_equal(image.array, spec.expected().array[:, :, :4])
    assert any(str(paths[4]) in record.getMessage() for record in caplog.records)


def test_garbage_dicom_beside_a_good_series(tmp_path, caplog):
    write_series(tmp_path / "s", SeriesSpec())
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    with caplog.at_level(logging.WARNING, logger="medsynth"):
        sources = find_images(tmp_path)
    assert len(sources) == 1 and sources[0].read().array.shape == (5, 6, 4)
    assert any("broken.dcm" in record.getMessage() for record in caplog.records)


def test_header_text_cannot_escape_the_output_folder(tmp_path):
    write_series(tmp_path / "s", SeriesSpec(description="../../etc/passwd \x07/abs"))
    (source,) = find_images(tmp_path)
    assert "/" not in source.name and ".." not in source.name and source.name.isprintable()


def test_input_is_never_modified(tmp_path, pydicom_file):
    shutil.copytree(pydicom_file("dicomdirtests/98892001/CT5N"), tmp_path / "ct")
    before = {p: p.read_bytes() for p in (tmp_path / "ct").iterdir()}
    read_image(tmp_path / "ct")
    assert {p: p.read_bytes() for p in (tmp_path / "ct").iterdir()} == before
