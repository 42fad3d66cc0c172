"""Reading speed of medsynth's DICOM reader against dcm2niix and against NIfTI, measured in one run.

Writes the real MNI152 template (2 mm, 99x117x95) as a 95-file DICOM series, then times, on the
same files and in the same process:
  - medsynth: find_images + read (header scan, ordering, decode, rescale),
  - dcm2niix: the reference converter (C), DICOM -> uncompressed NIfTI on disk, as a subprocess,
  - nibabel: reading the same volume from .nii.gz (the floor for a compressed read).

Usage: python -m benchmarks.io_read [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from medsynth.data.samples import mni152
from medsynth.io import find_images, read_nifti, write_dicom_series, write_nifti


def timed(function, repeats: int) -> float:
    """Median wall time of ``function()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    t1, _ = mni152()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dicom_series(t1, tmp / "series")
        write_nifti(t1, tmp / "t1.nii.gz")
        results = {"voxels": int(t1.array.size), "files": len(list((tmp / "series").iterdir()))}
        results["medsynth_dicom_s"] = timed(lambda: find_images(tmp / "series")[0].read(), args.repeats)
        results["nibabel_nifti_gz_s"] = timed(lambda: read_nifti(tmp / "t1.nii.gz"), args.repeats)
        tool = shutil.which("dcm2niix")
        if tool:
            def run_dcm2niix() -> None:
                out = tmp / "ref"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                subprocess.run([tool, "-z", "n", "-b", "n", "-o", str(out), str(tmp / "series")],
                               check=True, capture_output=True)

            results["dcm2niix_s"] = timed(run_dcm2niix, args.repeats)
    print(f"{results['files']} DICOM files, {results['voxels']} voxels, median of {args.repeats} runs")
    print(f"  medsynth DICOM read      {results['medsynth_dicom_s'] * 1000:8.1f} ms")
    print(f"  nibabel .nii.gz read     {results['nibabel_nifti_gz_s'] * 1000:8.1f} ms")
    if "dcm2niix_s" in results:
        print(f"  dcm2niix (incl. writing) {results['dcm2niix_s'] * 1000:8.1f} ms")
        print(f"  ratio medsynth / dcm2niix: {results['medsynth_dicom_s'] / results['dcm2niix_s']:.2f}")
    print(f"  ratio DICOM / NIfTI read: {results['medsynth_dicom_s'] / results['nibabel_nifti_gz_s']:.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "io_read.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
