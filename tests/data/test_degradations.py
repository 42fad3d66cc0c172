from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medsynth.data.degradations import (
    RandImageNoised,
    RandKSpaceTruncationd,
    RandLowDoseCTd,
    RandThickSlicesd,
    gaussian_noise,
    interpolate_slabs,
    kspace_truncation,
    low_dose_ct_noise,
    rician_noise,
    slab_profile,
    thick_slices,
)

SHAPES = {2: (1, 12, 10), 3: (2, 8, 6, 10)}


def _image(spatial_dims: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, SHAPES[spatial_dims]).astype(np.float32)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _water_disk_hu(size: int = 48, radius: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """A (1, size, size) water cylinder in air (HU) and a mask of its inner part."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    r = np.hypot(x, y)
    return np.where(r < radius, 0.0, -1000.0)[None], r < radius - 6


FUNCTIONS = {
    "rician": lambda image, rng: rician_noise(image, 0.05, rng),
    "gaussian": lambda image, rng: gaussian_noise(image, 0.05, rng),
    "low_dose_ct": lambda image, rng: low_dose_ct_noise(image * 1000.0 - 500.0, 1e4, rng, num_views=12),
    "thick_slices": lambda image, rng: thick_slices(image, 3),
    "kspace": lambda image, rng: kspace_truncation(image, 2.0),
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("as_type", ["numpy", "tensor", "meta"])
def test_type_shape_dtype_and_meta_are_kept(name, spatial_dims, as_type):
    array = _image(spatial_dims)
    affine = torch.diag(torch.tensor([0.7, 0.8, 2.5, 1.0], dtype=torch.float64))
    image = {"numpy": array, "tensor": torch.as_tensor(array),
             "meta": MetaTensor(torch.as_tensor(array), affine=affine, meta={"modality": "MR"})}[as_type]
    out = FUNCTIONS[name](image, _rng())
    assert type(out) is type(image)
    assert tuple(out.shape) == array.shape
    assert out.dtype in (np.float32, torch.float32)
    if as_type == "meta":
        assert torch.equal(out.affine, affine) and out.meta["modality"] == "MR"
    assert not np.allclose(np.asarray(out), array)


@pytest.mark.parametrize("name", ["rician", "gaussian", "low_dose_ct"])
def test_noise_functions_are_deterministic_given_the_generator(name):
    image = _image(3)
    first, again, other = (FUNCTIONS[name](image, _rng(seed)) for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_integer_input_gives_float32_output():
    out = gaussian_noise(np.zeros((1, 4, 4), np.int16), 0.1, _rng())
    assert out.dtype == np.float32 and out.std() > 0.05


def test_bad_shapes_and_parameters_are_refused():
    with pytest.raises(ValueError, match="channel-first"):
        rician_noise(np.zeros((4, 4)), 0.1, _rng())
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(np.zeros((1, 4, 4)), -0.1, _rng())
    with pytest.raises(ValueError, match="factor"):
        thick_slices(np.zeros((1, 4, 4)), 1.5)
    with pytest.raises(ValueError, match="spatial axis 3"):
        thick_slices(np.zeros((1, 4, 4, 4)), 2, axis=3)
    with pytest.raises(ValueError, match="kind"):
        RandImageNoised("image", kind="speckle")
    with pytest.raises(ValueError, match="factor_range"):
        RandThickSlicesd("image", factor_range=(2, 3.5))


def test_rician_noise_bias_on_zero_and_std_on_bright_image():
    sigma = 0.05
    zero = rician_noise(np.zeros((1, 64, 64, 16)), sigma, _rng())
    assert zero.min() >= 0.0
    assert zero.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    bright = rician_noise(np.ones((1, 64, 64, 16)), sigma, _rng())
    assert bright.std() == pytest.approx(sigma, rel=0.03)
    assert bright.mean() == pytest.approx(1.0 + sigma**2 / 2, abs=0.003)


def test_gaussian_noise_has_the_requested_std_and_no_bias():
    out = gaussian_noise(np.full((1, 64, 64, 16), 0.5), 0.1, _rng())
    assert out.std() == pytest.approx(0.1, rel=0.03)
    assert out.mean() == pytest.approx(0.5, abs=0.003)


def test_low_dose_noise_grows_as_photons_fall_and_keeps_the_mean():
    hu, inner = _water_disk_hu()
    stds = {}
    for photons in (1e3, 1e4, 1e5):
        out = low_dose_ct_noise(hu, photons, _rng())
        stds[photons] = float(out[0][inner].std())
        assert abs(float(out[0][inner].mean())) < 5.0
    assert stds[1e3] > stds[1e4] > stds[1e5] > 1.0
    # quantum noise: std ~ 1 / sqrt(photons)
    assert stds[1e3] / stds[1e5] == pytest.approx(10.0, rel=0.25)


def test_low_dose_adds_only_noise_not_reconstruction_blur():
    hu, _ = _water_disk_hu(size=32, radius=12.0)
    hu[0, 10:14, 10:20] = 1000.0  # a sharp bone insert
    out = low_dose_ct_noise(hu, 1e13, _rng())
    np.testing.assert_allclose(out, hu, atol=0.5)


def test_low_dose_3d_works_per_slice_along_the_axis():
    hu, inner = _water_disk_hu(size=24, radius=10.0)
    volume = np.repeat(hu[..., None], 3, axis=-1)  # (1, 24, 24, 3): a short cylinder along z
    out = low_dose_ct_noise(volume, 1e3, _rng(), axis=-1, num_views=24)
    assert out.shape == volume.shape
    slices = [out[0, :, :, k][inner] for k in range(3)]
    assert all(abs(s.mean()) < 30.0 and s.std() > 5.0 for s in slices)
    assert not np.allclose(slices[0], slices[1])  # independent noise per slice


def test_low_dose_pixel_size_comes_from_the_affine():
    hu, inner = _water_disk_hu(size=32, radius=12.0)
    small = MetaTensor(torch.as_tensor(hu), affine=torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0])))
    large = MetaTensor(torch.as_tensor(hu), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    std_small = float(low_dose_ct_noise(small, 1e4, _rng())[0][torch.as_tensor(inner)].std())
    std_large = float(low_dose_ct_noise(large, 1e4, _rng())[0][torch.as_tensor(inner)].std())
    # larger pixels: more attenuation per ray but a 4x smaller HU conversion; net less noise in HU
    assert std_large < std_small


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_thick_slices_identity_constant_and_smoothing(spatial_dims):
    image = _image(spatial_dims)
    np.testing.assert_array_equal(thick_slices(image, 1), image)
    constant = np.full(SHAPES[spatial_dims], 0.3, np.float32)
    np.testing.assert_allclose(thick_slices(constant, 3), constant, atol=1e-6)
    alternating = np.zeros(SHAPES[spatial_dims], np.float32)
    index = [slice(None)] * (spatial_dims + 1)
    index[-1] = slice(None, None, 2)
    alternating[tuple(index)] = 1.0
    np.testing.assert_allclose(thick_slices(alternating, 2), 0.5, atol=1e-6)
    smoothed = thick_slices(alternating, 3)
    assert smoothed.std() < 0.5 * alternating.std()
    # only the chosen axis is degraded: the pattern is constant along axis 0, so nothing changes
    np.testing.assert_allclose(thick_slices(alternating, 2, axis=0), alternating, atol=1e-6)


def test_slab_interpolation_reproduces_what_its_kind_can_and_is_constant_beyond_the_ends():
    centres = np.arange(8) * 3 + 1.0  # factor 3 on 24 slices
    cubic = lambda z: 0.01 * (z - 9) ** 3 - 0.2 * z  # noqa: E731
    inside = slice(1, 23)  # between the first and last centre
    exact = interpolate_slabs(cubic(centres), 3, 24, kind="cubic")
    np.testing.assert_allclose(exact[inside], cubic(np.arange(24.0))[inside], atol=1e-4)
    assert np.abs(interpolate_slabs(cubic(centres), 3, 24)[inside] - cubic(np.arange(24.0))[inside]).max() > 0.05
    assert exact[0] == exact[1] and exact[-1] == exact[-2]  # constant beyond the end centres
    with pytest.raises(ValueError, match="kind"):
        interpolate_slabs(cubic(centres), 3, 24, kind="quadratic")


def test_thick_slices_values_and_low_res_geometry():
    profile = np.arange(7, dtype=np.float64)  # slabs [0,1,2] [3,4,5] [6], centres 1, 4, 6
    image = MetaTensor(torch.as_tensor(np.broadcast_to(profile, (1, 2, 3, 7)).copy()),
                       affine=torch.tensor([[0, 0, 3.0, 10], [2.0, 0, 0, -4], [0, 1.0, 0, 7], [0, 0, 0, 1]]))
    degraded, low = thick_slices(image, 3, axis=2, return_low_res=True)
    np.testing.assert_allclose(low[0, 0, 0].numpy(), [1.0, 4.0, 6.0])
    np.testing.assert_allclose(degraded[0, 0, 0].numpy(), [1, 1, 2, 3, 4, 5, 6], atol=1e-12)
    assert low.shape == (1, 2, 3, 3)
    for k, slab in enumerate([(0, 1, 2), (3, 4, 5)]):
        centre = np.mean([image.affine.numpy() @ [1, 1, s, 1] for s in slab], axis=0)
        np.testing.assert_allclose(low.affine.numpy() @ [1, 1, k, 1], centre)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_kspace_truncation_identity_checkerboard_and_mean(spatial_dims):
    image = _image(spatial_dims)
    np.testing.assert_allclose(kspace_truncation(image, 1.0), image, atol=1e-6)
    degraded = kspace_truncation(image, 3.0)
    assert not np.allclose(degraded, image, atol=1e-2)
    np.testing.assert_allclose(degraded.mean(axis=tuple(range(1, spatial_dims + 1))),
                               image.mean(axis=tuple(range(1, spatial_dims + 1))), atol=1e-6)
    checkerboard = (np.indices(SHAPES[spatial_dims][1:]).sum(axis=0) % 2)[None].astype(np.float32)
    np.testing.assert_allclose(kspace_truncation(checkerboard, 2.0), checkerboard.mean(), atol=1e-6)
    # truncating one axis leaves a pattern that varies along the others only
    stripes = (np.indices(SHAPES[spatial_dims][1:])[0] % 2)[None].astype(np.float32)
    np.testing.assert_allclose(kspace_truncation(stripes, 2.0, axes=1), stripes, atol=1e-6)
    assert np.allclose(kspace_truncation(stripes, 2.0, axes=0), 0.5, atol=1e-6)


def test_kspace_truncation_rings_and_magnitude_is_non_negative():
    edge = np.zeros((1, 64, 4), np.float32)
    edge[0, 16:48] = 1.0
    real = kspace_truncation(edge, 4.0, axes=0)
    assert real.min() < -0.05 and real.max() > 1.05  # Gibbs over- and undershoot
    magnitude = kspace_truncation(edge, 4.0, axes=0, magnitude=True)
    assert magnitude.min() >= 0.0
    np.testing.assert_allclose(magnitude, np.abs(real), atol=1e-6)


def _dict_transforms():
    return {
        "rician": lambda: RandImageNoised(["image", "other"], kind="rician", sigma_range=(0.01, 0.1)),
        "gaussian": lambda: RandImageNoised(["image", "other"], kind="gaussian", sigma_range=(0.01, 0.1)),
        "low_dose_ct": lambda: RandLowDoseCTd(["image", "other"], photons_range=(1e3, 1e5), num_views=8),
        "thick_slices": lambda: RandThickSlicesd(["image", "other"], factor_range=(2, 4), axis=-1),
        "kspace": lambda: RandKSpaceTruncationd(["image", "other"], factor_range=(1.5, 4.0)),
    }


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(_dict_transforms()))
def test_dict_transforms_are_reproducible_from_the_seed(name, spatial_dims):
    data = {"image": MetaTensor(torch.as_tensor(_image(spatial_dims, 1))),
            "other": torch.as_tensor(_image(spatial_dims, 2)), "label": "kept"}

    def run(seed):
        transform = _dict_transforms()[name]().set_random_state(seed)
        return [transform(data) for _ in range(4)]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"].as_tensor(), b["image"].as_tensor()) and torch.equal(a["other"], b["other"])
        assert a["label"] == "kept" and isinstance(a["image"], MetaTensor)
        assert a["image"].shape == data["image"].shape
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True))
    assert not torch.equal(first[0]["image"], data["image"])


def test_dict_transforms_honour_prob_and_sample_in_range():
    data = {"image": torch.rand(1, 6, 6, 12)}
    never = RandThickSlicesd("image", prob=0.0).set_random_state(0)
    assert never(data)["image"] is data["image"]
    thick = RandThickSlicesd("image", factor_range=(2, 3)).set_random_state(0)
    factors = set()
    for _ in range(20):
        thick(data)
        factors.add(thick.params["factor"])
    assert factors == {2, 3}
    noise = RandImageNoised("image", kind="gaussian", sigma_range=(0.2, 0.3)).set_random_state(0)
    sigmas = []
    for _ in range(10):
        out = noise(data)
        sigmas.append(noise.params["sigma"])
        assert float((out["image"] - data["image"]).std()) == pytest.approx(sigmas[-1], rel=0.25)
    assert all(0.2 <= s <= 0.3 for s in sigmas) and len(set(sigmas)) == 10
    dose = RandLowDoseCTd("image", photons_range=(1e3, 1e5))
    photons = [dose.sample_params()["photons"] for _ in range(200)]
    assert 1e3 <= min(photons) and max(photons) <= 1e5
    assert 0.25 < np.mean(np.array(photons) < 1e4) < 0.75  # log-uniform: half the draws below 1e4


def test_slice_profiles_weigh_the_slab_as_their_shape_says():
    assert np.array_equal(slab_profile(10, 4), slab_profile(10, 4, "box", 1.0))  # the slab average, exactly
    assert np.allclose(slab_profile(10, 4)[0], [0.25] * 4 + [0] * 6)
    assert np.allclose(slab_profile(10, 4)[-1], [0] * 8 + [0.5, 0.5])  # a last, short slab: what it has
    gaps = slab_profile(8, 4, "box", 0.5)  # 2-slice-thick slices every 4: the two central slices
    assert np.allclose(gaps, [[0, 0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0.5, 0.5, 0]])
    gaussian = slab_profile(16, 4, "gaussian", 1.0)
    assert np.allclose(gaussian.sum(axis=1), 1.0)
    assert np.allclose(gaussian[1, 2:6], gaussian[1, 6:10][::-1])  # symmetric about its centre, 5.5
    assert gaussian[1, 4:8].sum() < 1.0 and gaussian[1, 3] > 0  # wider than the box: reaches the next slab
    with pytest.raises(ValueError, match="profile"):
        slab_profile(8, 4, "triangle")
    with pytest.raises(ValueError, match="thickness"):
        slab_profile(8, 4, "box", 0.0)
    with pytest.raises(ValueError, match="profile"):
        RandThickSlicesd("image", profile="lorentzian")
    image = np.random.default_rng(0).random((1, 8, 16)).astype(np.float32)
    _, low = thick_slices(image, 4, axis=-1, return_low_res=True, profile="box", thickness=0.5)
    assert np.allclose(low[0, :, 0], image[0, :, 1:3].mean(axis=-1))
