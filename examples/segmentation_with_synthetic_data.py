"""Does synthetic data help segmentation? A MONAI UNet on real slices vs real + medsynth's synthetic pairs.

On the bundled MNI152 template (axial slices, tissue labels background / grey matter / white
matter), on a CPU in a few minutes:

1. Real data: ``--real-slices`` axial slices from outside the held-out slab (the slab that the
   ready-made configs hold out, axial fractions 0.45-0.6) as 2D NIfTI image + label files.
2. A label-conditioned generator: ``--model RUN`` (e.g. a run of configs/generate_2d_gan.yaml,
   trained with the same held-out slab), or else a small GAN trained here on the real slices.
3. ``medsynth augment``: ``--per-image`` synthetic (image, label) pairs per real slice, from
   randomly deformed copies of the real label maps.
4. The same MONAI UNet (DiceCE loss, Adam, ``--steps`` steps, batch 8) trained on real only and
   on real + synthetic (``SyntheticMixDataset``, ``--ratio`` of the stream synthetic), for each seed.
5. Dice per tissue class on every held-out slice, mean and spread over seeds, printed.

Usage: python examples/segmentation_with_synthetic_data.py [--model RUN] [--real-slices 8]
       [--steps 200] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.transforms import Compose, EnsureChannelFirstd, RandSpatialCropd, SpatialPadd

from medsynth.data.samples import mni152
from medsynth.io import MedicalImage, write_nifti
from medsynth.io.files import write_datalist
from medsynth.synthesis import SyntheticMixDataset, augment
from medsynth.training import Trainer, load_experiment
from medsynth.validation import ImageSet
from medsynth.validation.utility import held_out_dice, segmentation_network

HOLDOUT = (0.45, 0.6)
CLASSES = ("grey matter", "white matter")
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "generate_2d_gan.yaml"


def write_slices(out: Path, real_slices: int) -> tuple[list[dict], ImageSet]:
    """Real training slices as 2D NIfTI files (+ datalist); held-out slices (normalised) as an ImageSet."""
    image, label = mni152()
    depth = image.array.shape[-1]
    start, stop = round(HOLDOUT[0] * depth), round(HOLDOUT[1] * depth)
    candidates = [z for z in range(depth) if (z < start or z >= stop) and (label.array[..., z] > 0).mean() > 0.15]
    chosen = [candidates[i] for i in np.linspace(0, len(candidates) - 1, real_slices).round().astype(int)]
    entries = []
    for z in chosen:
        affine = image.affine.copy()
        affine[:3, 3] = (image.affine @ [0, 0, z, 1])[:3]
        write_nifti(MedicalImage(image.array[..., z], affine, {"modality": "MR"}), out / "images" / f"z{z:03d}.nii.gz")
        write_nifti(MedicalImage(label.array[..., z], affine), out / "labels" / f"z{z:03d}.nii.gz", dtype=np.uint8)
        entries.append({"image": f"images/z{z:03d}.nii.gz", "label": f"labels/z{z:03d}.nii.gz"})
    write_datalist(out, entries, "real MNI152 training slices")
    held = ImageSet(torch.stack([torch.as_tensor(_normalise(image.array[..., z]))[None] for z in range(start, stop)]),
                    torch.stack([torch.as_tensor(label.array[..., z]).long()[None] for z in range(start, stop)]),
                    [f"z{z:03d}" for z in range(start, stop)])
    return load_decathlon_datalist(out / "dataset.json", data_list_key="training", base_dir=out), held


def train_generator(real: Path, out: Path) -> Path:
    """A small label-to-image GAN on the real slices (about 2 minutes on 2 CPU cores)."""
    config = load_experiment(CONFIG, [f"data.images={real / 'images'}", f"data.labels={real / 'labels'}",
                                      "data.holdout=[0.0, 0.0]", "train.steps=300", "train.batch_size=8",
                                      "train.sample_every=300", "train.checkpoint_every=300"])
    Trainer(config, out, device="cpu").fit()
    return out


def train_and_score(dataset, held: ImageSet, steps: int, seed: int) -> np.ndarray:
    """Train a MONAI UNet for ``steps`` steps; Dice per class (GM, WM) on the held-out slices."""
    torch.manual_seed(seed)
    dataset.transform.set_random_state(seed)
    network = segmentation_network(spatial_dims=2, num_classes=3)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    while step < steps:
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_function(network(batch["image"].as_tensor()), batch["label"].as_tensor())
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return held_out_dice(network, held, num_classes=3)


def _normalise(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.5])
    return np.clip((image - low) / (high - low), 0, 1).astype(np.float32)


class Normalise:
    """Percentile scaling to [0, 1] (what medsynth's data layer does for MR), for real and synthetic alike."""

    def __call__(self, item: dict) -> dict:
        image = item["image"]
        low, high = np.percentile(image.numpy(), [0.5, 99.5])
        item["image"] = ((image - float(low)) / max(float(high - low), 1e-6)).clamp(0, 1)
        return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run directory of a label-conditioned generate model")
    parser.add_argument("--real-slices", type=int, default=8)
    parser.add_argument("--per-image", type=int, default=4, help="synthetic pairs per real slice")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of the training stream that is synthetic")
    parser.add_argument("--steps", type=int, default=200, help="UNet training steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("example-output/segmentation"))
    args = parser.parse_args()
    began = time.perf_counter()
    real, held = write_slices(args.out / "real", args.real_slices)
    model = args.model or train_generator(args.out / "real", args.out / "generator")
    augment(args.out / "real" / "images", args.out / "synthetic", model, labels=args.out / "real" / "labels",
            per_image=args.per_image, device="cpu")
    synthetic = load_decathlon_datalist(args.out / "synthetic" / "dataset.json", data_list_key="training")
    keys = ["image", "label"]
    transform = Compose([EnsureChannelFirstd(keys), Normalise(), SpatialPadd(keys, (96, 96)),
                         RandSpatialCropd(keys, (96, 96), random_size=False)])
    results = {}
    for name, ratio in (("real only", 0.0), ("real + synthetic", args.ratio)):
        dataset = SyntheticMixDataset(real, synthetic, ratio=ratio, transform=transform)
        scores = []
        for seed in args.seeds:
            scores.append(train_and_score(dataset, held, args.steps, seed))
            print(f"{name}, seed {seed}: Dice GM {scores[-1][0]:.3f}, WM {scores[-1][1]:.3f} "
                  f"({len(dataset)} training slices, {dataset.synthetic_count} synthetic)", flush=True)
        results[name] = np.stack(scores)
    print(f"\nDice on {len(held)} held-out axial slices, mean +- std over seeds {args.seeds}, "
          f"{args.real_slices} real training slices, {args.steps} UNet steps:")
    print(f"{'':20s}" + "".join(f"{c:>22s}" for c in CLASSES))
    for name, scores in results.items():
        print(f"{name:20s}" + "".join(f"{m:15.3f} +- {s:.3f}" for m, s in zip(scores.mean(0), scores.std(0),
                                                                               strict=True)))
    print(f"({time.perf_counter() - began:.0f} s; generator: {model})")


if __name__ == "__main__":
    main()
