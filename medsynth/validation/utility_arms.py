"""The two arms a user would pick instead of a generative model, as training-pair draws for the utility study.

- **Classical augmentation**: MONAI random affine + elastic deformation (image and label map
  together) and intensity transforms (noise, gamma contrast, bias field; image only), applied on
  the fly to the real pairs.
- **Domain randomisation** (SynthSeg-style, Billot et al. 2023): a new image drawn for a
  (randomly deformed) real label map at every draw, with per-class Gaussian intensities whose
  means and spreads are random per image, then blur, a smooth multiplicative bias field, gamma
  and noise. The images look like no scanner: the point is that a segmenter trained on them
  cannot rely on intensity, only on shape. TorchIO's ``RandomLabelsToImage`` does the same, but
  TorchIO (with SimpleITK) is a heavy dependency for one short function, so it is written here.

Both use only the label maps of the real subset they are given, like the generative arms.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
)
from monai.utils import convert_to_tensor
from scipy.ndimage import gaussian_filter

from medsynth.synthesis.labels import deform_label
from medsynth.validation.realism import ImageSet
from medsynth.validation.utility import Draw

CLASSICAL = "classical augmentation"
RANDOMISED = "domain randomisation"


def classical_augmentation(spatial_dims: int, *, spatial_prob: float = 0.5, intensity_prob: float = 0.3) -> Compose:
    """MONAI dict transforms on ``{"image", "label"}`` (channel-first, image in [0, 1]).

    Spatial, on both keys with one draw (image bilinear, label nearest, zero padding): ``RandAffined``
    (rotation up to 15 degrees per axis, scale +-10%) with probability ``spatial_prob``, then an
    elastic deformation (2D: control points every 16 voxels, displacement 1-3 voxels; 3D: sigma
    5-8, magnitude 50-150) with probability ``spatial_prob / 2``. Intensity, on the image only,
    each with probability ``intensity_prob``: Gaussian noise (std up to 0.03), gamma contrast
    (0.7-1.5), a polynomial bias field (degree 3, coefficients up to 0.2).
    """
    keys, modes = ["image", "label"], ("bilinear", "nearest")
    rotate = (math.pi / 12,) * (1 if spatial_dims == 2 else 3)
    if spatial_dims == 2:
        elastic = Rand2DElasticd(keys, spacing=(16, 16), magnitude_range=(1.0, 3.0), prob=spatial_prob / 2,
                                 mode=modes, padding_mode="zeros")
    elif spatial_dims == 3:
        elastic = Rand3DElasticd(keys, sigma_range=(5.0, 8.0), magnitude_range=(50.0, 150.0), prob=spatial_prob / 2,
                                 mode=modes, padding_mode="zeros")
    else:
        raise ValueError(f"images are 2D or 3D, got {spatial_dims} spatial dimensions")
    return Compose([
        RandAffined(keys, prob=spatial_prob, rotate_range=rotate, scale_range=(0.1,) * spatial_dims, mode=modes,
                    padding_mode="zeros"),
        elastic,
        RandGaussianNoised("image", prob=intensity_prob, std=0.03),
        RandAdjustContrastd("image", prob=intensity_prob, gamma=(0.7, 1.5)),
        RandBiasFieldd("image", prob=intensity_prob, coeff_range=(0.0, 0.2)),
    ])


def augmented(image: torch.Tensor, label: torch.Tensor, transform: Compose,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``transform`` applied to one pair with every random draw from ``seed``; image clipped to [0, 1]."""
    transform.set_random_state(seed)
    out = transform({"image": image.float(), "label": label.float()})
    image, label = (convert_to_tensor(out[key], track_meta=False) for key in ("image", "label"))
    return image.float().clamp(0, 1), label.round().long()


def augmented_draw(real: ImageSet, transform: Compose | None = None) -> Draw:
    """Draws a real pair and augments it with ``transform`` (default :func:`classical_augmentation`)."""
    transform = transform or classical_augmentation(real.images.ndim - 2)

    def draw(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(torch.randint(len(real), (1,), generator=generator))
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return augmented(real.images[index], real.labels[index], transform, seed)

    return draw


def randomised_image(label: np.ndarray, rng: np.random.Generator, *, num_classes: int, deform: float = 1.0,
                     max_std: float = 0.1, max_blur: float = 1.0, max_bias: float = 0.3,
                     max_gamma: float = 0.25, max_noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """A SynthSeg-style image for the integer ``label`` map (``(*spatial)``); returns ``(image, label)``.

    ``label`` is first deformed like ``medsynth augment`` deforms it (``deform`` = strength, 0: unchanged);
    each class ``k`` gets intensity ``N(mean_k, std_k)`` with ``mean_k ~ U(0, 1)`` and
    ``std_k ~ U(0, max_std)`` drawn anew per image (background included); then a Gaussian blur of
    ``sigma ~ U(0, max_blur)`` voxels, a bias field ``exp(smooth noise)`` of std ``~ U(0, max_bias)``
    (from a 4-per-axis grid, linearly upsampled), min-max rescaling, gamma ``exp(N(0, max_gamma))``
    and noise of std ``~ U(0, max_noise)``, clipped to [0, 1]. The image has the label map's shape;
    classes are told apart by contrast only within one image, never across images.
    """
    if deform:
        label = deform_label(label, int(rng.integers(2**31 - 1)), deform)
    means = rng.uniform(0, 1, num_classes)
    stds = rng.uniform(0, max_std, num_classes)
    index = np.clip(label, 0, num_classes - 1).astype(int)
    image = means[index] + stds[index] * rng.standard_normal(label.shape)
    image = gaussian_filter(image, rng.uniform(0, max_blur)) if max_blur > 0 else image
    if max_bias > 0:
        coarse = torch.as_tensor(rng.normal(0, rng.uniform(0, max_bias), (1, 1) + (4,) * label.ndim))
        mode = "bilinear" if label.ndim == 2 else "trilinear"
        field = F.interpolate(coarse, size=label.shape, mode=mode, align_corners=True)[0, 0].numpy()
        image = image * np.exp(field)
    image = (image - image.min()) / max(image.max() - image.min(), 1e-8)
    image = image ** np.exp(rng.normal(0, max_gamma))
    image = image + rng.normal(0, rng.uniform(0, max_noise), label.shape)
    return np.clip(image, 0, 1).astype(np.float32), label


def randomised_draw(real: ImageSet, *, num_classes: int, deform: float = 1.0, **options: float) -> Draw:
    """Draws a real label map and makes a new :func:`randomised_image` for it (the real image is unused)."""

    def draw(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(torch.randint(len(real), (1,), generator=generator))
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        image, label = randomised_image(real.labels[index, 0].numpy(), rng, num_classes=num_classes, deform=deform,
                                        **options)
        return torch.from_numpy(image)[None], torch.as_tensor(label).long()[None]

    return draw
