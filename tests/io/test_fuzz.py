"""Fuzzing the readers with mutated real files: every case is a clean MedsynthError or a correct read.

Sources: pydicom's real MR and CT slices, nibabel's real anatomical NIfTI, and a crop of the
MNI152 template (plain and gzipped). Mutations: flipped bytes anywhere, truncation, and header
fields set to absurd values (huge or negative dimensions, zero/negative/NaN spacing). A short
run always; ``-m slow`` runs thousands of cases (docs/reliability.md has the counts).
"""

from __future__ import annotations

import os
import resource
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medsynth.data.samples import mni152, pydicom_test_file
from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, read_image, write_nifti

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every broken value

SHORT = settings(max_examples=int(os.environ.get("MEDSYNTH_FUZZ_CASES", 40)), deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: NIfTI-1 header offsets: dim (8 x int16) at 40, pixdim (8 x float32) at 76
DIM, PIXDIM = 40, 76


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz-sources")
    image, _ = mni152()
    crop = MedicalImage(image.array[30:62, 40:72, 40:56].copy(), image.affine, {"modality": "MR"})
    write_nifti(crop, root / "mni.nii")
    write_nifti(crop, root / "mni.nii.gz")
    anatomical = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    files = {"MR_small.dcm": pydicom_test_file("MR_small.dcm"), "CT_small.dcm": pydicom_test_file("CT_small.dcm"),
             "anatomical.nii": anatomical, "mni.nii": root / "mni.nii", "mni.nii.gz": root / "mni.nii.gz"}
    return {name: path.read_bytes() for name, path in files.items()}


mutations = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1,
                                        max_size=8)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("dim"), st.tuples(st.integers(0, 7), st.sampled_from([-1, 0, 1, 7, 4096, 32767, -32768]))),
    st.tuples(st.just("pixdim"), st.tuples(st.integers(1, 3), st.sampled_from([0.0, -1.0, 1e-30, 1e30, float("nan"),
                                                                               float("inf")]))),
)


def mutate(data: bytes, name: str, mutation: tuple) -> bytes:
    kind, value = mutation
    out = bytearray(data)
    if kind == "flip":
        for offset, xor in value:
            out[offset % len(out)] ^= xor
    elif kind == "truncate":
        out = out[: int(value * len(out))]
    elif name.endswith(".nii"):  # header fields only make sense uncompressed
        index, number = value
        if kind == "dim":
            struct.pack_into("<h", out, DIM + 2 * index, number)
        else:
            struct.pack_into("<f", out, PIXDIM + 4 * index, number)
    return bytes(out)


def check_one(tmp_path: Path, sources: dict[str, bytes], name: str, mutation: tuple) -> str:
    path = tmp_path / f"case_{name}"
    path.write_bytes(mutate(sources[name], name, mutation))
    try:
        image = read_image(path)
    except MedsynthError as err:
        assert "\n" not in str(err) and str(err)
        return "error"
    assert image.array.ndim in (2, 3) and np.isfinite(image.array).all()
    assert np.isfinite(image.affine).all() and abs(np.linalg.det(image.affine[:3, :3])) > 0
    return "read"


@SHORT
@given(name=st.sampled_from(["MR_small.dcm", "CT_small.dcm", "anatomical.nii", "mni.nii", "mni.nii.gz"]),
       mutation=mutations)
@example(name="MR_small.dcm", mutation=("flip", [(254, 1)]))  # a transfer syntax UID that names no transfer syntax
def test_mutated_files_read_or_fail_cleanly(tmp_path, sources, name, mutation):
    check_one(tmp_path, sources, name, mutation)


def campaign(tmp_path: Path, sources: dict[str, bytes], cases: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """``cases`` random mutations (numpy-seeded, reproducible); outcome counts per source file."""
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    names = sorted(sources)
    for _ in range(cases):
        name = names[rng.integers(len(names))]
        kind = ["flip", "truncate", "dim", "pixdim"][rng.integers(4)]
        if kind == "flip":
            flips = int(rng.integers(1, 9))
            mutation = (kind, [(int(rng.integers(2**20)), int(rng.integers(1, 256))) for _ in range(flips)])
        elif kind == "truncate":
            mutation = (kind, float(rng.random()))
        elif kind == "dim":
            mutation = (kind, (int(rng.integers(8)), int(rng.choice([-1, 0, 1, 7, 4096, 32767, -32768]))))
        else:
            mutation = (kind, (int(rng.integers(1, 4)), float(rng.choice([0.0, -1.0, 1e-30, 1e30, np.nan, np.inf]))))
        outcome = check_one(tmp_path, sources, name, mutation)
        counts.setdefault(name, {"read": 0, "error": 0})[outcome] += 1
    return counts


@pytest.mark.slow
def test_a_long_fuzz_campaign_reads_or_fails_cleanly(tmp_path, sources):
    counts = campaign(tmp_path, sources, cases=int(os.environ.get("MEDSYNTH_FUZZ_LONG", 5000)))
    print(counts)  # the figures in docs/reliability.md
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB: never near a memory blow-up


def test_a_header_declaring_gigabytes_is_refused_before_reading(tmp_path, sources):
    for name in ("mni.nii", "mni.nii.gz"):
        data = bytearray(sources[name])
        if name.endswith(".gz"):
            import gzip

            data = bytearray(gzip.decompress(bytes(data)))
        struct.pack_into("<3h", data, DIM + 2, 1000, 1000, 1000)  # 10^9 voxels in a ~100 kB file
        path = tmp_path / name
        path.write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(MedsynthError, match="more than the .*-byte file can hold"):
            read_image(path)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
