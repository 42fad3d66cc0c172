"""A MONAI data pipeline on real data with medsynth's I/O and data layer (runs in seconds on a CPU).

1. Writes the bundled real sample data (MNI152 T1 + tissue labels, also as a DICOM series).
2. Converts the DICOM series to NIfTI with geometry kept, pairing the tissue labels by name.
3. Loads the converted datalist through medsynth's preprocessing (MONAI transforms), slices the
   volume into axial 2D samples and builds the (condition, target) pairs that the denoising and
   super-resolution models train on.
4. Saves a PNG of a few training pairs.

Usage: python examples/monai_pipeline_with_medsynth_io.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from monai.data import load_decathlon_datalist
from monai.transforms import CopyItemsd

from medsynth.data import ExtractSlicesd, RandImageNoised, RandThickSlicesd, preprocessing
from medsynth.data.samples import write_sample_data
from medsynth.io.convert import convert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("example-output"))
    args = parser.parse_args()
    sample = write_sample_data(args.out / "sample")
    # the DICOM series and a label folder whose file is named like the converted series
    labels = args.out / "labels-for-dicom"
    labels.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample["labels"] / "mni152_t1.nii.gz", labels / "1_MNI152_T1_template.nii.gz")
    convert(sample["dicom"] / "mni152_t1", args.out / "converted", labels_path=labels)
    items = load_decathlon_datalist(str(args.out / "converted" / "dataset.json"), data_list_key="training")

    load = preprocessing(keys=("image",), label_key="label", spacing_mm=2.0)
    volume = load(items[0])
    print(f"volume {tuple(volume['image'].shape)}, spacing {volume['image'].pixdim.tolist()} mm, "
          f"intensity scaling {volume['image'].meta['intensity_scaling']}")
    slices = ExtractSlicesd(["image", "label"], axis=2, skip_empty_key="label", min_foreground=0.2)(volume)
    print(f"{len(slices)} axial slices with >20% tissue")

    noisy = CopyItemsd("image", names="noisy")
    rician = RandImageNoised("noisy", kind="rician", sigma_range=(0.05, 0.05))
    rician.set_random_state(0)
    chosen = [slices[i] for i in np.linspace(0, len(slices) - 1, 4).astype(int)]
    figure, axes = plt.subplots(3, len(chosen), figsize=(3 * len(chosen), 9))
    for column, item in enumerate(chosen):
        pair = rician(noisy(dict(item)))
        axes[0, column].imshow(pair["image"][0].T, cmap="gray", origin="lower")
        axes[0, column].set_title(f"slice {int(item['image'].meta['slice_index'])}")
        axes[1, column].imshow(pair["noisy"][0].T, cmap="gray", origin="lower")
        axes[2, column].imshow(item["label"][0].T, cmap="viridis", origin="lower", vmin=0, vmax=2)
    for row, name in enumerate(["clean (target)", "Rician 5% (denoise condition)", "tissue labels"]):
        axes[row, 0].set_ylabel(name)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(args.out / "training_pairs.png", dpi=80)
    thick = RandThickSlicesd("image", factor_range=(4, 4), axis=0)
    thick.set_random_state(0)
    low_res = thick(dict(volume))["image"]
    error = float((low_res - volume["image"]).abs().mean())
    print(f"thick-slice (4x, sagittal axis) condition: mean abs difference to the target {error:.4f}")
    print(f"wrote {args.out / 'training_pairs.png'}")


if __name__ == "__main__":
    main()
