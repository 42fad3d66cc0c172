"""Enhanced (multi-frame) and compressed DICOM: read as one volume, checked against dcm2niix."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medsynth.errors import MedsynthError
from medsynth.io import find_images, read_image
from tests.conftest import SeriesSpec, oblique_spec
from tests.io.test_dcm2niix_reference import assert_matches_dcm2niix

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def write_enhanced(path: Path, spec: SeriesSpec, stacks: int = 1, compress: str | None = None) -> Path:
    """``spec`` as one Enhanced MR file: frames in shuffled order, positions per frame, orientation,
    spacing and rescaling shared (PS3.3 C.7.6.16); ``stacks`` > 1 repeats the volume as more stacks."""
    stored = np.concatenate([spec.stored()] * stacks)
    order = np.random.default_rng(spec.seed + 5).permutation(len(stored))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "MR", spec.description, spec.number, 1
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20260101", "120000", "20260101120000"
    ds.Rows, ds.Columns, ds.NumberOfFrames = spec.rows, spec.columns, len(stored)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = _item(
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[f"{v:.6f}" for v in
                                                                         (*spec.row_cosine, *spec.column_cosine)])]),
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[f"{v:.6f}" for v in spec.pixel_spacing],
                                              SliceThickness=f"{abs(spec.slice_step):.6f}")]),
        PixelValueTransformationSequence=Sequence([_item(RescaleSlope=f"{spec.slope:g}",
                                                         RescaleIntercept=f"{spec.intercept:g}", RescaleType="US")]))
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for index in order:
        stack, k = divmod(int(index), spec.slices)
        position = np.asarray(spec.origin) + k * spec.slice_step * spec.normal
        frames.append(_item(
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[f"{v:.6f}" for v in position])]),
            FrameContentSequence=Sequence([_item(StackID=str(stack + 1), InStackPositionNumber=k + 1,
                                                 DimensionIndexValues=[stack + 1, k + 1])])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = stored[order].tobytes()
    if compress:
        ds.compress(compress, encoding_plugin="pydicom")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("compress", [None, RLELossless], ids=["uncompressed", "rle"])
def test_an_enhanced_oblique_file_reads_as_its_volume_and_as_dcm2niix_reads_it(tmp_path, compress):
    spec = oblique_spec()
    write_enhanced(tmp_path / "series" / "enhanced.dcm", spec, compress=compress)
    image = read_image(tmp_path / "series")
    expected = spec.expected()
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.array, expected.array)
    assert image.meta["num_frames"] == spec.slices
    if compress is None:  # dcm2niix misdecodes this signed 16-bit RLE multi-frame file; the exact volume is the check
        assert_matches_dcm2niix(image, tmp_path / "series", tmp_path, 1e-4)


def test_a_legacy_converted_enhanced_mr_made_by_highdicom_reads_as_its_series(tmp_path):
    import highdicom

    from tests.conftest import write_series

    spec = oblique_spec()
    files = write_series(tmp_path / "single", spec)
    legacy = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(p) for p in files], series_instance_uid=generate_uid(), series_number=spec.number,
        sop_instance_uid=generate_uid(), instance_number=1)
    (tmp_path / "enhanced").mkdir()
    legacy.save_as(tmp_path / "enhanced" / "legacy.dcm")
    image, expected = read_image(tmp_path / "enhanced"), spec.expected()
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.array, expected.array)
    assert_matches_dcm2niix(image, tmp_path / "enhanced", tmp_path, 1e-4)


def test_a_real_enhanced_ct_matches_dcm2niix(tmp_path, pydicom_file):
    folder = tmp_path / "ect"
    folder.mkdir()
    shutil.copy(pydicom_file("eCT_Supplemental.dcm"), folder)
    image = read_image(folder)
    assert image.array.shape == (512, 512, 2) and image.meta["modality"] == "CT"
    assert_matches_dcm2niix(image, folder, tmp_path, 1e-3)


def test_several_stacks_in_one_file_are_refused_with_the_count(tmp_path):
    path = write_enhanced(tmp_path / "two.dcm", SeriesSpec(), stacks=2)
    with pytest.raises(MedsynthError, match=r"two.dcm: its 8 frames form 2 volumes \(stacks\)"):
        read_image(path)


def test_an_enhanced_mr_without_geometry_keeps_its_frame_order_and_spacing(pydicom_file, caplog):
    with caplog.at_level(logging.WARNING, logger="medsynth"):
        image = read_image(pydicom_file("emri_small.dcm"))
    assert image.array.shape == (64, 64, 10) and image.spacing_mm == pytest.approx((1.0, 1.0, 1.2))
    assert "no patient geometry" in caplog.text and "stored frame order" in caplog.text
    frames = pydicom.dcmread(pydicom_file("emri_small.dcm")).pixel_array
    np.testing.assert_array_equal(image.array, np.transpose(frames, (2, 1, 0)).astype(np.float32))


@pytest.mark.parametrize("name, same_as", [
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_bigendian.dcm", "MR_small.dcm"),
])
def test_compressed_transfer_syntaxes_decode_to_the_uncompressed_values(pydicom_file, name, same_as):
    np.testing.assert_array_equal(read_image(pydicom_file(name)).array, read_image(pydicom_file(same_as)).array)


def test_jpeg_lossless_process_14_decodes(pydicom_file):
    image = read_image(pydicom_file("JPEG-LL.dcm"))
    reference = pydicom.dcmread(pydicom_file("JPEG-LL.dcm")).pixel_array
    assert image.array.shape[:2] == reference.shape[::-1] and float(image.array.max()) == float(reference.max())


def test_an_undecodable_codec_is_named_with_what_decodes_it(pydicom_file, monkeypatch):
    def no_decoder(self):
        raise RuntimeError("Unable to decode the pixel data: no plugin available")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(MedsynthError) as error:
        read_image(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    message = str(error.value)
    assert "MR_small_jpeg_ls_lossless.dcm: cannot decode pixel data in JPEG-LS Lossless" in message
    assert "python-gdcm" in message and "no plugin available" in message


def test_a_dicom_seg_beside_images_is_skipped_not_read_as_an_image(tmp_path, caplog):
    write_enhanced(tmp_path / "img.dcm", SeriesSpec())
    seg = pydicom.dcmread(tmp_path / "img.dcm")
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.SeriesInstanceUID = generate_uid()
    seg.save_as(tmp_path / "seg.dcm")
    with caplog.at_level(logging.WARNING, logger="medsynth"):
        sources = find_images(tmp_path)
    assert [s.path.name for s in sources] == ["img.dcm"] and "DICOM SEG" in caplog.text


def test_an_absurd_frame_count_is_refused_before_anything_is_allocated(tmp_path, pydicom_file):
    ds = pydicom.dcmread(pydicom_file("emri_small.dcm"))
    ds.NumberOfFrames = 10**9
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(MedsynthError, match="NumberOfFrames 1000000000 of 64x64 is empty or larger than"):
        read_image(tmp_path / "huge.dcm")
