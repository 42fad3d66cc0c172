"""Hostile input files: each ends in one clean MedsynthError line naming the file (or a warning and a
skip), never a hang, a memory blow-up, or values silently changed.

The compressed bombs are built in a blink from one compressed MiB of zeros repeated (deflate
segments ended by a full flush are independent), so a test file of a few hundred kB expands to
hundreds of MiB; each read is watched with tracemalloc.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medsynth.errors import MedsynthError
from medsynth.io import find_images, read_image, read_nifti
from medsynth.io.convert import convert
from tests.conftest import SeriesSpec, write_series

MIB = 1024**2


class Hang(BaseException):
    """Raised by :func:`deadline`; not an ``Exception``, so no reader's error handling swallows it."""


@contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking open() of a FIFO or a parse of /dev/zero."""
    def expire(signum, frame):
        raise Hang(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def memory_below(limit_mb: float) -> Iterator[None]:
    """Fail if Python allocations (numpy and zlib included) peak above ``limit_mb`` inside the block."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_mb * 1e6, f"peak {peak / 1e6:.0f} MB"


def refused(path: Path, match: str, read=read_image) -> MedsynthError:
    with pytest.raises(MedsynthError, match=match) as err:
        read(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    return err.value


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


# --- 1. files that never end: FIFOs, devices, sockets, link loops ---------------------------------

def test_a_fifo_a_device_link_and_a_socket_in_a_folder_are_skipped(tmp_path, caplog):
    good = _write_nifti(tmp_path / "in" / "good.nii.gz", np.ones((4, 4, 3), np.float32))
    os.mkfifo(tmp_path / "in" / "pipe.nii.gz")
    os.mkfifo(tmp_path / "in" / "pipe")  # looked into for the DICM magic
    (tmp_path / "in" / "zero.dcm").symlink_to("/dev/zero")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "in" / "sock.dcm"))
    try:
        with deadline(), caplog.at_level(logging.WARNING, logger="medsynth"):
            sources = find_images(tmp_path / "in")
    finally:
        sock.close()
    assert [s.path for s in sources] == [good]
    text = caplog.text
    for name, kind in [("pipe.nii.gz", "FIFO"), ("pipe", "FIFO"), ("zero.dcm", "character device"),
                       ("sock.dcm", "socket")]:
        assert f"{tmp_path / 'in' / name}: skipped, not a regular file (a {kind})" in text


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "/dev/zero"])
def test_a_fifo_or_device_given_as_the_input_is_a_clean_error(tmp_path, kind):
    path = {"fifo": tmp_path / "x.nii", "link to /dev/zero": tmp_path / "x.dcm", "/dev/zero": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    with deadline():
        refused(path, "not a regular file \\(a (FIFO|character device)\\)")
        if kind == "fifo":
            refused(path, "FIFO", read=read_nifti)


def test_symlink_loops_and_broken_links_do_not_hang(tmp_path, caplog):
    good = _write_nifti(tmp_path / "in" / "a" / "good.nii", np.ones((4, 4), np.float32))
    (tmp_path / "in" / "a" / "loop").symlink_to(tmp_path / "in")  # folder links are not followed
    (tmp_path / "in" / "self.nii").symlink_to(tmp_path / "in" / "self.nii")  # a link to itself
    (tmp_path / "in" / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    with deadline(), caplog.at_level(logging.WARNING, logger="medsynth"):
        assert [s.path for s in find_images(tmp_path / "in")] == [good]
    assert "gone.dcm: skipped, a broken symbolic link" in caplog.text


# --- 2. compressed payloads that expand before any size check -------------------------------------

def _segment(data: bytes, final: bool = False) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def deflate(parts: list[bytes | int]) -> bytes:
    """Raw deflate of ``parts``: bytes, or an int for that many MiB of zeros."""
    zero_segment = _segment(bytes(MIB))
    return b"".join([zero_segment * p if isinstance(p, int) else _segment(p) for p in parts] + [_segment(b"", True)])


def gzip_parts(parts: list[bytes | int]) -> bytes:
    crc, size, zeros = 0, 0, bytes(MIB)
    for part in parts:
        for data in [zeros] * part if isinstance(part, int) else [part]:
            crc, size = zlib.crc32(data, crc), size + len(data)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + deflate(parts) + struct.pack("<II", crc, size & 0xFFFFFFFF)


def nifti_header(vox_offset: float, extension: bool) -> bytes:
    """A valid NIfTI-1 header of a 4x4x4 float32 image, with ``vox_offset`` and the extension flag."""
    header = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).header
    header["vox_offset"] = vox_offset
    return header.binaryblock + (b"\x01\x00\x00\x00" if extension else b"\x00" * 4)


VOXELS = np.arange(64, dtype=np.float32).tobytes()


@pytest.mark.parametrize("case", ["extension of 256 MiB", "extension size 0 (read to the end)",
                                  "vox_offset beyond the limit"])
def test_a_nifti_gz_whose_header_expands_to_gigabytes_is_refused_first(tmp_path, case):
    extension = 256 * MIB + 16
    if case == "extension of 256 MiB":  # vox_offset fine, but the extension runs far past it
        parts = [nifti_header(368, True) + struct.pack("<ii", extension, 0), 256, b"\x00" * 8 + VOXELS]
    elif case == "extension size 0 (read to the end)":  # nibabel then reads everything that follows
        parts = [nifti_header(368, True) + struct.pack("<ii", 0, 0) + b"\x00" * 8 + VOXELS, 256]
    else:
        parts = [nifti_header(352 + extension, True) + struct.pack("<ii", extension, 0), 256, b"\x00" * 8 + VOXELS]
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip_parts(parts))
    assert path.stat().st_size < 2 * MIB
    with memory_below(32):
        refused(path, "vox_offset|extension")


def test_a_nifti_whose_vox_offset_points_into_its_header_is_refused(tmp_path):
    path = tmp_path / "x.nii"  # nibabel would read the header bytes as voxels
    path.write_bytes(nifti_header(0, False) + VOXELS)
    refused(path, "vox_offset 0 is outside 352")


def test_a_nifti_extension_under_the_limit_still_reads(tmp_path):
    path = tmp_path / "ok.nii.gz"
    path.write_bytes(gzip_parts([nifti_header(352 + 16 + MIB, True) + struct.pack("<ii", 16 + MIB, 0), 1,
                                 b"\x00" * 8 + VOXELS]))
    np.testing.assert_array_equal(read_image(path).array.ravel(order="F"), np.arange(64, dtype=np.float32))


def _explicit_le(ds: pydicom.Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def deflated_dicom(tmp_path: Path, middle: list[bytes | int], before_pixels: bool = True) -> Path:
    """A real one-slice series file, deflated, with ``middle`` encoded among its elements: before the pixel
    data (as private group 0009) or after it (as trailing padding)."""
    source = write_series(tmp_path / "src", SeriesSpec(slices=1))[0]
    ds = pydicom.dcmread(source)
    split = 0x00090000 if before_pixels else 0x7FE10000
    head, tail = pydicom.Dataset(), pydicom.Dataset()
    for element in ds:
        (head if element.tag < split else tail).add(element)
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta)
    body = deflate([_explicit_le(head), *middle, _explicit_le(tail)])
    path = tmp_path / "bomb.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + body)
    return path


def element(group: int, elem: int, vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2sHI", group, elem, vr, 0, length)


def item(tag: int = 0xE000, length: int = 0xFFFFFFFF) -> bytes:
    return struct.pack("<HHI", 0xFFFE, tag, length)


def test_a_deflated_dicom_round_trips_through_the_bounded_inflater(tmp_path):
    path = deflated_dicom(tmp_path, [element(0x0009, 0x1010, b"OB", MIB), 1])
    expected = SeriesSpec(slices=1).expected()
    np.testing.assert_array_equal(read_image(path).array, expected.array)


@pytest.mark.parametrize("case", ["private element of 3 GiB", "trailing padding of 256 MiB after the pixels"])
def test_a_deflated_dicom_holding_a_huge_element_is_refused_before_inflating_it(tmp_path, case):
    if case == "private element of 3 GiB":
        path = deflated_dicom(tmp_path, [element(0x0009, 0x1010, b"OB", 3 * 1024 * MIB), 3 * 1024])
        match = r"element \(0009,1010\) declares 3221225472 bytes"
    else:
        path = deflated_dicom(tmp_path, [element(0xFFFC, 0xFFFC, b"OB", 256 * MIB), 256], before_pixels=False)
        match = r"element \(FFFC,FFFC\) declares 268435456 bytes"
    assert path.stat().st_size < 4 * MIB
    with memory_below(32):
        refused(path, match)


def test_deflated_elements_inside_sequences_are_bounded_by_the_inflated_total(tmp_path, monkeypatch):
    monkeypatch.setattr("medsynth.io.dicom_read.MAX_HEADER_BYTES", 4 * MIB)  # elements in sequences: no stop_when
    sequence = [element(0x0009, 0x1020, b"SQ", 0xFFFFFFFF)]
    for _ in range(3):
        sequence += [item(), element(0x0009, 0x1010, b"OB", 2 * MIB), 2, item(0xE00D, 0)]
    path = deflated_dicom(tmp_path, [*sequence, item(0xE0DD, 0)])
    with memory_below(24):
        refused(path, f"inflates to more than {4 * MIB} bytes")


# --- 3. values that would change silently ---------------------------------------------------------

def test_a_uint32_label_of_three_billion_survives_convert(tmp_path):
    labels = np.zeros((4, 4, 3), np.uint32)
    labels[1, 1, 1], labels[2, 2, 2] = 3_000_000_000, 2**32 - 1
    _write_nifti(tmp_path / "img" / "c.nii.gz", np.ones((4, 4, 3), np.float32))
    _write_nifti(tmp_path / "lab" / "c.nii.gz", labels)
    convert(tmp_path / "img", tmp_path / "out", labels_path=tmp_path / "lab", progress=False)
    written = nib.load(tmp_path / "out" / "labels" / "c.nii.gz")
    assert written.get_data_dtype() == np.uint32
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)


def test_integers_float32_cannot_hold_are_refused_unless_read_exactly(tmp_path):
    path = _write_nifti(tmp_path / "big.nii.gz", np.array([[0, 2**24 + 1], [3, 4]], np.uint32))
    refused(path, "16777217.*cannot store exactly", read=read_nifti)
    np.testing.assert_array_equal(read_nifti(path, exact=True).array, [[0, 2**24 + 1], [3, 4]])
    assert read_nifti(_write_nifti(tmp_path / "ok.nii", np.array([[0, 2**24], [3, 4]], np.int32))).array.max() == 2**24


@pytest.mark.parametrize("dtype, match", [(np.complex64, "complex64"),
                                          (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB")])
def test_complex_and_rgb_nifti_are_refused(tmp_path, dtype, match):
    array = np.ones((4, 4, 3), dtype) if dtype == np.complex64 else np.zeros((4, 4, 3), dtype)
    refused(_write_nifti(tmp_path / "x.nii.gz", array), match)


@pytest.mark.parametrize("affine, match", [
    (np.diag([1e30, 1.0, 1.0, 1.0]), "outside 0.0001..10000 mm"),
    (np.diag([1e-6, 1.0, 1.0, 1.0]), "outside 0.0001..10000 mm"),
    (np.diag([0.0, 1.0, 1.0, 1.0]), "degenerate"),
    (np.array([[1.0, 0, 0, 1e7], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not within 1e\\+06 mm"),
])
def test_nifti_with_absurd_scaling_or_origin_is_refused(tmp_path, affine, match):
    image = nib.Nifti1Image(np.ones((4, 4, 3), np.float32), None)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(None, code=0)
    path = tmp_path / "x.nii"
    nib.save(image, path)
    refused(path, match)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 1, 1), (1, 1, 7), (7, 1), (1, 1)])
def test_nifti_that_is_1d_in_disguise_is_refused(tmp_path, shape):
    refused(_write_nifti(tmp_path / "x.nii", np.ones(shape, np.float32)), "fewer than two axes")


def _edit(path: Path, **fields) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.mark.parametrize("field, value, match", [
    ("PixelSpacing", ["1e300", "1"], "PixelSpacing .* outside"),
    ("PixelSpacing", ["1e-9", "1"], "PixelSpacing .* outside"),
    ("ImagePositionPatient", ["1e300", "0", "0"], "ImagePositionPatient .* not within"),
])
def test_dicom_with_absurd_geometry_is_refused_naming_the_file(tmp_path, field, value, match):
    paths = write_series(tmp_path / "s", SeriesSpec(slices=4))
    _edit(paths[2], **{field: value})
    with pytest.raises(MedsynthError, match=match) as err:
        read_image(tmp_path / "s")
    assert str(paths[2]) in str(err.value) and "\n" not in str(err.value)


def test_a_single_slice_with_an_absurd_slice_thickness_is_refused(tmp_path):
    path = write_series(tmp_path / "s", SeriesSpec(slices=1))[0]
    _edit(path, SliceThickness="1e300")
    refused(path, "SliceThickness .* outside")


@pytest.mark.parametrize("rows, columns, match", [(65535, 65535, "larger than"), (65535, 16000, "less than expected")])
def test_dicom_declaring_a_huge_grid_with_tiny_pixel_data_is_refused(tmp_path, rows, columns, match):
    path = write_series(tmp_path / "s", SeriesSpec(slices=1))[0]
    _edit(path, Rows=rows, Columns=columns)
    with memory_below(16):
        refused(path, match)


# --- 4. file names that are not UTF-8 -------------------------------------------------------------

def test_non_utf8_file_names_are_found_read_and_converted(tmp_path):
    name = os.fsdecode(b"caf\xe9")  # surrogate-escaped on Linux
    image_path = _write_nifti(tmp_path / "img" / f"{name}.nii.gz", np.ones((4, 4, 3), np.float32))
    labels = np.ones((4, 4, 3), np.uint8)
    _write_nifti(tmp_path / "lab" / f"{name}.nii.gz", labels)
    write_series(tmp_path / "img" / os.fsdecode(b"s\xe9rie"), SeriesSpec(slices=2, description="d"),
                 suffix=os.fsdecode(b".\xe9.dcm"))
    sources = find_images(tmp_path / "img")
    assert sorted(s.name for s in sources) == ["3_d", "caf"]
    assert read_image(image_path).meta["source"] == str(image_path)
    (tmp_path / "img2").mkdir()
    os.replace(tmp_path / "img" / f"{name}.nii.gz", tmp_path / "img2" / f"{name}.nii.gz")
    entries = convert(tmp_path / "img2", tmp_path / "out", labels_path=tmp_path / "lab", progress=False)
    assert [(e["image"], e["label"], e["source"]) for e in entries] == [
        ("images/caf.nii.gz", "labels/caf.nii.gz", "caf\ufffd.nii.gz")]  # recorded as JSON-safe text
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "out" / "labels" / "caf.nii.gz").dataobj), labels)
    json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    convert(tmp_path / "img", tmp_path / "out_dicom", progress=False)
    bad = tmp_path / "bad" / f"{name}.nii"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 10)
    refused(bad, "cannot read NIfTI")


def test_mutated_deflated_dicom_and_nifti_extensions_read_or_fail_cleanly(tmp_path):
    """Seeded mutations (flipped bytes, truncation) of the two formats inflated while parsing. A
    longer run (1500 cases, also flipping bytes inside the inflated data) had no other outcome
    and never allocated more than 1 MB."""
    sequence = [element(0x0009, 0x1020, b"SQ", 0xFFFFFFFF), item(), element(0x0009, 0x1010, b"OB", 16), b"\0" * 16,
                item(0xE00D, 0), item(0xE0DD, 0)]
    sources = {"x.dcm": deflated_dicom(tmp_path, sequence).read_bytes(),
               "x.nii.gz": gzip_parts([nifti_header(384, True) + struct.pack("<ii", 32, 0) + b"\0" * 24 + VOXELS])}
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "error": 0}
    with memory_below(16), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about broken values
        for case in range(120):
            name = "x.dcm" if case % 2 else "x.nii.gz"
            data = bytearray(sources[name])
            if case % 3 == 0:
                data = data[: int(rng.random() * len(data))]
            else:
                for _ in range(rng.integers(1, 6)):
                    data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
            path = tmp_path / f"case{case}" / name
            path.parent.mkdir()
            path.write_bytes(bytes(data))
            try:
                image = read_image(path)
                assert np.isfinite(image.array).all() and np.isfinite(image.affine).all()
                outcomes["read"] += 1
            except MedsynthError as err:
                assert "\n" not in str(err)
                outcomes["error"] += 1
    assert outcomes["read"] and outcomes["error"]


def test_a_long_third_party_error_is_never_cut_mid_sentence():
    from medsynth.errors import describe

    long = RuntimeError("reading failed: not a ZIP archive. This is an internal error. " + "Words " * 60 + "end.\nmore")
    assert describe(long) == "reading failed: not a ZIP archive. This is an internal error."
    one_sentence = describe(RuntimeError("word " * 100))
    assert one_sentence.endswith("word …") and len(one_sentence) <= 202
    assert describe(ValueError()) == "ValueError" and describe(OSError("short")) == "short"
