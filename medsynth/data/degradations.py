"""Image degradations that turn clean images into the conditions of denoising and super-resolution.

Each degradation is a pure function of the image and explicit parameters (plus a
``numpy.random.Generator`` when it is random), and a MONAI random dict transform that only samples
the parameters and calls the function (TorchIO's split), so a result is reproducible from its
parameters and seed. Images are channel-first, ``(C, X, Y)`` or ``(C, X, Y, Z)``, as numpy arrays,
torch tensors or MetaTensors; the output has the input's type, shape, device and meta, and a float
dtype (the input's if floating, else float32). ``axis`` arguments index *spatial* axes
(0 = X; negative values count from the last spatial axis), as MONAI's ``spatial_axis`` does.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_data_type, convert_to_dst_type
from scipy.interpolate import CubicSpline
from skimage.transform import iradon, radon

#: Linear attenuation of water at about 70 keV, per mm.
MU_WATER_PER_MM = 0.02


def _as_numpy(image: NdarrayOrTensor) -> np.ndarray:
    """The voxels of a channel-first 2D or 3D image as a float64 numpy array."""
    array = convert_data_type(image, output_type=np.ndarray)[0]
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first 2D or 3D image (C, X, Y[, Z]), got {tuple(array.shape)}")
    return array.astype(np.float64)


def _like(result: np.ndarray, image: NdarrayOrTensor) -> NdarrayOrTensor:
    """``result`` with the type, device and meta of ``image``; float dtype."""
    if isinstance(image, torch.Tensor):
        dtype = image.dtype if image.dtype.is_floating_point else torch.float32
    else:
        dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return convert_to_dst_type(result, dst=image, dtype=dtype)[0]


def _array_axis(axis: int, spatial_dims: int) -> int:
    """Array axis (channel first) of spatial axis ``axis``."""
    if not -spatial_dims <= axis < spatial_dims:
        raise ValueError(f"spatial axis {axis} out of range for a {spatial_dims}D image")
    return axis % spatial_dims + 1


def gaussian_noise(image: NdarrayOrTensor, sigma: float, rng: np.random.Generator) -> NdarrayOrTensor:
    """Additive white Gaussian noise, ``x + n`` with ``n ~ N(0, sigma^2)`` i.i.d. per voxel.

    Args:
        image: ``(C, *spatial)`` image.
        sigma: noise standard deviation in image intensity units (0.05 = 5% of a [0, 1] range).
        rng: source of the noise.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    array = _as_numpy(image)
    return _like(array + rng.normal(0.0, sigma, array.shape), image)


def rician_noise(image: NdarrayOrTensor, sigma: float, rng: np.random.Generator) -> NdarrayOrTensor:
    """Rician noise of magnitude MR images, ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)``.

    The magnitude of a complex signal with Gaussian noise in the real and imaginary channels
    (Gudbjartsson & Patz 1995, MRM 34:910). On a zero image the output has mean
    ``sigma * sqrt(pi / 2)`` (Rayleigh); on bright voxels it tends to ``x + N(0, sigma^2)``.

    Args:
        image: ``(C, *spatial)`` magnitude image (e.g. normalised to [0, 1]).
        sigma: noise standard deviation per channel, in image intensity units.
        rng: source of the noise.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    array = _as_numpy(image)
    real = array + rng.normal(0.0, sigma, array.shape)
    imag = rng.normal(0.0, sigma, array.shape)
    return _like(np.hypot(real, imag), image)


def _slice_spacing_mm(image: NdarrayOrTensor, array_axis: int, spatial_dims: int) -> float:
    """Mean in-plane pixel size (mm) of slices normal to ``array_axis``: a MetaTensor's, else 1."""
    if not isinstance(image, MetaTensor):
        return 1.0
    spacing = np.linalg.norm(image.affine.detach().cpu().double().numpy()[:3, :spatial_dims], axis=0)
    in_plane = [s for a, s in enumerate(spacing, start=1) if a != array_axis or spatial_dims == 2]
    return float(np.mean(in_plane))


def _slice_ct_noise_hu(
    slice_hu: np.ndarray, photons: float, rng: np.random.Generator, pixel_mm: float, num_views: int
) -> np.ndarray:
    """HU noise of one low-dose 2D slice: FBP of the Poisson-noisy minus the clean sinogram."""
    height, width = slice_hu.shape
    size = max(height, width)
    top, left = (size - height) // 2, (size - width) // 2
    mu = np.zeros((size, size))  # attenuation per pixel; padding is air
    mu_slice = MU_WATER_PER_MM * pixel_mm * (1.0 + slice_hu / 1000.0)
    mu[top:top + height, left:left + width] = np.clip(mu_slice, 0.0, None)
    theta = np.linspace(0.0, 180.0, num_views, endpoint=False)
    line_integrals = radon(mu, theta, circle=False)
    counts = rng.poisson(photons * np.exp(-line_integrals))
    noisy = -np.log(np.maximum(counts, 1) / photons)
    # FBP is linear, so fbp(noisy) - fbp(clean) == fbp(noisy - clean): one reconstruction.
    d_mu = iradon(noisy - line_integrals, theta, output_size=size, filter_name="ramp", circle=False)
    return 1000.0 * d_mu[top:top + height, left:left + width] / (MU_WATER_PER_MM * pixel_mm)


def low_dose_ct_noise(
    image_hu: NdarrayOrTensor,
    photons: float,
    rng: np.random.Generator,
    axis: int = -1,
    pixel_mm: float | None = None,
    num_views: int | None = None,
) -> NdarrayOrTensor:
    """Low-dose CT quantum noise simulated in the projection domain, slice by slice.

    Per 2D slice: HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (mu_water = 0.02/mm),
    parallel-beam forward projection (``skimage.transform.radon``), transmitted counts
    ``Poisson(photons * exp(-p))``, log back to line integrals, filtered back-projection with a
    ramp filter (``iradon``), back to HU. Only the noise is added, ``image + fbp(noisy) - fbp(clean)``,
    so the blur and streaks of the discrete reconstruction do not leak in. This is the
    projection-domain Poisson model of low-dose simulation (Yu et al. 2012, J. Comput. Assist.
    Tomogr. 36:477; Zeng et al. 2015, IEEE Trans. Nucl. Sci. 62:2226), here for parallel-beam
    geometry and without electronic noise or beam hardening.

    The noise variance scales as ``1 / (photons * num_views)``. Cost: one radon and one iradon
    per slice, about 20 ms for a 64x64 slice with the default 101 views (a 64^3 volume ~1.3 s
    on one CPU core).

    Args:
        image_hu: ``(C, *spatial)`` image in Hounsfield units (apply before normalisation).
        photons: incident photons per detector element and view (full dose ~1e5-1e6; lower is noisier).
        rng: source of the Poisson counts.
        axis: spatial axis normal to the slices of a 3D image (default the last, axial for RAS);
            ignored for 2D images, whose channels are the slices.
        pixel_mm: in-plane pixel size in mm; default from a MetaTensor's affine, else 1.
        num_views: projection angles over 180 degrees; default ``ceil(pi / 2 * max(slice shape))``.
    """
    if photons <= 0:
        raise ValueError(f"photons must be positive, got {photons}")
    array = _as_numpy(image_hu)
    spatial_dims = array.ndim - 1
    array_axis = _array_axis(axis, spatial_dims) if spatial_dims == 3 else 0
    if pixel_mm is None:
        pixel_mm = _slice_spacing_mm(image_hu, array_axis, spatial_dims)
    slices = np.moveaxis(array, array_axis, 0)  # (S, ..., H, W): every leading index is one slice
    flat = slices.reshape(-1, *slices.shape[-2:])
    views = num_views or math.ceil(math.pi / 2 * max(flat.shape[-2:]))
    noise = np.stack([_slice_ct_noise_hu(s, photons, rng, pixel_mm, views) for s in flat])
    noisy = slices + noise.reshape(slices.shape)
    return _like(np.moveaxis(noisy, 0, array_axis), image_hu)


def _slab_centres(length: int, factor: int) -> np.ndarray:
    """Centres of the ``ceil(length / factor)`` slabs of ``factor`` slices (a last slab may be shorter)."""
    starts = np.arange(0, length, factor)
    return (starts + np.minimum(starts + factor, length) - 1) / 2.0


def slab_interpolation(length: int, factor: int, kind: str = "linear") -> np.ndarray:
    """``(length, M)`` matrix that puts ``M = ceil(length / factor)`` thick-slice values, each at its
    slab's centre, onto ``length`` fine slices; constant beyond the first and last centre.

    ``kind`` is "linear" or "cubic" (a not-a-knot cubic spline; linear below four slabs).
    """
    if kind not in ("linear", "cubic"):
        raise ValueError(f"kind must be 'linear' or 'cubic', got {kind!r}")
    centres = _slab_centres(length, factor)
    positions = np.clip(np.arange(length, dtype=np.float64), centres[0], centres[-1])
    if kind == "cubic" and len(centres) >= 4:
        return CubicSpline(centres, np.eye(len(centres)), axis=0)(positions)
    return np.stack([np.interp(positions, centres, unit) for unit in np.eye(len(centres))], axis=1)


def interpolate_slabs(low: np.ndarray, factor: int, length: int, axis: int = -1, kind: str = "linear") -> np.ndarray:
    """Thick-slice values ``low`` (``ceil(length / factor)`` along ``axis``) interpolated from their slab
    centres onto ``length`` fine slices (:func:`slab_interpolation`), float32.

    This is how a thick-slice volume is put on the fine grid everywhere: the super-resolution
    condition in training and at inference, and the interpolation baseline of the benchmarks.
    """
    axis = axis % low.ndim
    return _along_axis(slab_interpolation(length, factor, kind), low, axis).astype(np.float32)


def _slab_average(length: int, factor: int) -> np.ndarray:
    """``(M, length)`` matrix: the mean of each slab of ``factor`` slices."""
    starts = np.arange(0, length, factor)
    average = np.zeros((len(starts), length))
    for k, start in enumerate(starts):
        stop = min(start + factor, length)
        average[k, start:stop] = 1.0 / (stop - start)
    return average


def slab_profile(length: int, factor: int, profile: str = "box", thickness: float = 1.0) -> np.ndarray:
    """``(M, length)`` matrix: each thick slice as a weighted mean of the fine slices around its slab centre.

    ``profile`` is the slice sensitivity profile: "box" (a flat slab) or "gaussian" (FWHM equal to the
    width); the width is ``thickness * factor`` fine slices (``thickness``: slice thickness over slice
    spacing, 1 for contiguous slices, below 1 with gaps, above 1 with overlap). Weights beyond the
    volume are dropped and each row renormalised. A box of thickness 1 is exactly the slab average.
    """
    if profile not in ("box", "gaussian"):
        raise ValueError(f"profile must be 'box' or 'gaussian', got {profile!r}")
    if not thickness > 0:
        raise ValueError(f"thickness must be positive, got {thickness}")
    if profile == "box" and thickness == 1.0:
        return _slab_average(length, factor)
    width = thickness * factor
    fine = np.arange(length, dtype=np.float64)
    rows = []
    for centre in _slab_centres(length, factor):
        if profile == "box":  # overlap of each fine slice [j - 1/2, j + 1/2] with the slab
            weights = np.clip(np.minimum(fine + 0.5, centre + width / 2) - np.maximum(fine - 0.5, centre - width / 2),
                              0.0, None)
        else:
            sd = width / (2.0 * np.sqrt(2.0 * np.log(2.0)))
            weights = np.exp(-0.5 * ((fine - centre) / sd) ** 2)
        if weights.sum() <= 0:  # a slab thinner than one fine slice between two of them: the nearest
            weights = (np.abs(fine - centre) == np.abs(fine - centre).min()).astype(np.float64)
        rows.append(weights / weights.sum())
    return np.stack(rows)


def _along_axis(matrix: np.ndarray, array: np.ndarray, array_axis: int) -> np.ndarray:
    """Apply ``matrix`` (rows: new positions) to ``array`` along ``array_axis``."""
    return np.moveaxis(np.tensordot(matrix, np.moveaxis(array, array_axis, 0), axes=1), 0, array_axis)


def thick_slices(
    image: NdarrayOrTensor, factor: int, axis: int = -1, return_low_res: bool = False, interpolation: str = "linear",
    profile: str = "box", thickness: float = 1.0,
) -> NdarrayOrTensor | tuple[NdarrayOrTensor, NdarrayOrTensor]:
    """Simulate a thick-slice acquisition along ``axis`` and resample it back to the original grid.

    Every run of ``factor`` consecutive slices is averaged (by default a box slice profile of width
    ``factor`` slices; ``profile`` and ``thickness`` as in :func:`slab_profile`), one slice per run
    is kept, and the result is interpolated (``interpolation``:
    "linear" or "cubic", :func:`interpolate_slabs`) back at the original slice positions
    (constant beyond the first and last slab centres), so the
    condition of super-resolution lies on the target grid (the degradation model of e.g. SMORE,
    Zhao et al. 2021, IEEE TMI 40:805). A last, incomplete run is averaged over the slices it has.

    Args:
        image: ``(C, *spatial)`` image.
        factor: slices per thick slice (1 returns the image unchanged).
        axis: spatial axis of the slices (default the last).
        return_low_res: also return the thick-slice image, ``ceil(N / factor)`` slices along ``axis``.
            For a MetaTensor its affine puts slice ``k`` at the centre of slab ``k`` (voxel
            ``k * factor + (factor - 1) / 2`` of the input), exact for every complete slab.

    Returns:
        The degraded image on the input grid, or ``(degraded, low_res)``.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    array = _as_numpy(image)
    array_axis = _array_axis(axis, array.ndim - 1)
    length = array.shape[array_axis]
    low_res = _along_axis(slab_profile(length, int(factor), profile, thickness), array, array_axis)
    degraded = _like(_along_axis(slab_interpolation(length, int(factor), interpolation), low_res, array_axis), image)
    if not return_low_res:
        return degraded
    low = _like(low_res, image)
    if isinstance(low, MetaTensor):
        step = np.eye(4)
        step[array_axis - 1, array_axis - 1] = factor
        step[array_axis - 1, 3] = (factor - 1) / 2.0
        affine = image.affine.detach().cpu().double().numpy() @ step
        low.affine = torch.as_tensor(affine, dtype=low.affine.dtype)
    return degraded, low


def _kspace_weights(length: int, factor: float) -> np.ndarray:
    """Hermitian-symmetric low-pass keeping the central ``length / factor`` frequencies, FFT order."""
    keep = max(1, round(length / factor))
    if keep >= length:
        return np.ones(length)
    k = np.abs(np.fft.fftfreq(length, d=1.0 / length))
    return (k < keep / 2).astype(np.float64) + 0.5 * (k == keep / 2)


def kspace_truncation(
    image: NdarrayOrTensor, factor: float, axes: int | Sequence[int] | None = None, magnitude: bool = False
) -> NdarrayOrTensor:
    """Low resolution by k-space truncation: keep the central ``1/factor`` of k-space, same grid.

    FFT over ``axes``, zero all but the central ``round(N / factor)`` frequencies along each (an
    even count keeps the two edge frequencies at half weight so the filter stays Hermitian and the
    result real), inverse FFT. Reproduces the blur and Gibbs ringing of a lower-resolution MR
    acquisition zero-filled to the full matrix (as in Chen et al. 2018, ISBI, DCSRN). The mean (DC)
    is kept exactly.

    Args:
        image: ``(C, *spatial)`` image.
        factor: truncation factor >= 1 (1 returns the image, to float precision).
        axes: spatial axes to truncate; default all.
        magnitude: return ``|ifft|`` (an MR magnitude image) instead of the real part.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    array = _as_numpy(image)
    spatial_dims = array.ndim - 1
    spatial_axes = range(spatial_dims) if axes is None else [axes] if isinstance(axes, int) else axes
    array_axes = sorted({_array_axis(a, spatial_dims) for a in spatial_axes})
    kspace = np.fft.fftn(array, axes=array_axes)
    for a in array_axes:
        shape = [1] * array.ndim
        shape[a] = array.shape[a]
        kspace *= _kspace_weights(array.shape[a], factor).reshape(shape)
    result = np.fft.ifftn(kspace, axes=array_axes)
    return _like(np.abs(result) if magnitude else result.real, image)


class _RandDegradationd(RandomizableTransform, MapTransform):
    """Samples degradation parameters once per call and applies them to every key.

    Random keys get independent noise from one ``numpy.random.Generator`` seeded from the
    transform's random state, so ``set_random_state(seed)`` makes a sequence of calls reproducible.
    """

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.params: dict[str, Any] = {}
        self._seed = 0

    @abstractmethod
    def sample_params(self) -> dict[str, Any]:
        """Draw this call's parameters from ``self.R``."""

    @abstractmethod
    def degrade(self, image: NdarrayOrTensor, rng: np.random.Generator) -> NdarrayOrTensor:
        """Apply the degradation with ``self.params`` to one image."""

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.params = self.sample_params()
            self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        rng = np.random.default_rng(self._seed)
        for key in self.key_iterator(d):
            d[key] = self.degrade(d[key], rng)
        return d


def _check_range(name: str, value_range: Sequence[float], minimum: float) -> tuple[float, float]:
    low, high = (float(v) for v in value_range)
    if not minimum <= low <= high:
        raise ValueError(f"{name} must be (low, high) with {minimum} <= low <= high, got {value_range}")
    return low, high


class RandImageNoised(_RandDegradationd):
    """Add Rician (MR magnitude) or Gaussian noise with ``sigma`` drawn uniformly from ``sigma_range``.

    Args:
        keys: keys of the images to degrade.
        kind: "rician" (:func:`rician_noise`) or "gaussian" (:func:`gaussian_noise`).
        sigma_range: ``(low, high)`` noise standard deviation in image intensity units.
        prob: probability of degrading a sample.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        kind: str = "rician",
        sigma_range: Sequence[float] = (0.01, 0.1),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        noise = {"rician": rician_noise, "gaussian": gaussian_noise}
        if kind not in noise:
            raise ValueError(f"unknown noise kind {kind!r}; choose one of {sorted(noise)}")
        self.kind = kind
        self.noise = noise[kind]
        self.sigma_range = _check_range("sigma_range", sigma_range, 0.0)

    def sample_params(self) -> dict[str, Any]:
        return {"sigma": float(self.R.uniform(*self.sigma_range))}

    def degrade(self, image: NdarrayOrTensor, rng: np.random.Generator) -> NdarrayOrTensor:
        return self.noise(image, self.params["sigma"], rng)


class RandLowDoseCTd(_RandDegradationd):
    """Low-dose CT noise (:func:`low_dose_ct_noise`), ``photons`` drawn log-uniformly from ``photons_range``.

    Args:
        keys: keys of the images to degrade, in HU.
        photons_range: ``(low, high)`` incident photons per detector element and view.
        axis, pixel_mm, num_views: see :func:`low_dose_ct_noise`.
        prob: probability of degrading a sample.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        photons_range: Sequence[float] = (1e4, 1e5),
        axis: int = -1,
        pixel_mm: float | None = None,
        num_views: int | None = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.photons_range = _check_range("photons_range", photons_range, 1e-12)
        self.axis = axis
        self.pixel_mm = pixel_mm
        self.num_views = num_views

    def sample_params(self) -> dict[str, Any]:
        log_low, log_high = np.log(self.photons_range)
        return {"photons": float(np.exp(self.R.uniform(log_low, log_high)))}

    def degrade(self, image: NdarrayOrTensor, rng: np.random.Generator) -> NdarrayOrTensor:
        return low_dose_ct_noise(image, self.params["photons"], rng, self.axis, self.pixel_mm, self.num_views)


class RandThickSlicesd(_RandDegradationd):
    """Thick slices (:func:`thick_slices`) with an integer ``factor`` drawn uniformly from ``factor_range``.

    Args:
        keys: keys of the images to degrade.
        factor_range: ``(low, high)`` inclusive integer range of slices per thick slice.
        axis: spatial axis of the slices (default the last).
        interpolation: "linear" or "cubic": how the thick slices are put back on the grid.
        profile, thickness: the slice profile (:func:`slab_profile`).
        prob: probability of degrading a sample.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        factor_range: Sequence[int] = (2, 4),
        axis: int = -1,
        interpolation: str = "linear",
        profile: str = "box",
        thickness: float = 1.0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        low, high = _check_range("factor_range", factor_range, 1.0)
        if low != int(low) or high != int(high):
            raise ValueError(f"factor_range must hold integers, got {tuple(factor_range)}")
        self.factor_range = (int(low), int(high))
        self.axis = axis
        slab_interpolation(1, 1, interpolation)  # fail early on an unknown kind
        self.interpolation = interpolation
        slab_profile(1, 1, profile, thickness)  # fail early on an unknown profile
        self.profile, self.thickness = profile, float(thickness)

    def sample_params(self) -> dict[str, Any]:
        return {"factor": int(self.R.randint(self.factor_range[0], self.factor_range[1] + 1))}

    def degrade(self, image: NdarrayOrTensor, rng: np.random.Generator) -> NdarrayOrTensor:
        return thick_slices(image, self.params["factor"], self.axis, interpolation=self.interpolation,
                            profile=self.profile, thickness=self.thickness)


class RandKSpaceTruncationd(_RandDegradationd):
    """K-space truncation (:func:`kspace_truncation`) with ``factor`` drawn uniformly from ``factor_range``.

    Args:
        keys: keys of the images to degrade.
        factor_range: ``(low, high)`` truncation factors, >= 1.
        axes: spatial axes to truncate; default all.
        magnitude: return the magnitude instead of the real part.
        prob: probability of degrading a sample.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        factor_range: Sequence[float] = (2.0, 4.0),
        axes: int | Sequence[int] | None = None,
        magnitude: bool = False,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.factor_range = _check_range("factor_range", factor_range, 1.0)
        self.axes = axes
        self.magnitude = magnitude

    def sample_params(self) -> dict[str, Any]:
        return {"factor": float(self.R.uniform(*self.factor_range))}

    def degrade(self, image: NdarrayOrTensor, rng: np.random.Generator) -> NdarrayOrTensor:
        return kspace_truncation(image, self.params["factor"], self.axes, self.magnitude)
