from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medsynth.data.intensity import (
    CT_WINDOWS,
    ModalityNormalize,
    ModalityNormalized,
    denormalize,
    intensity_scaling,
    window_bounds,
)

SHAPES = {2: (1, 10, 11), 3: (1, 7, 11, 13)}


def _ramp(spatial_dims: int) -> np.ndarray:
    """Values 0, 1, ..., N-1 in a channel-first image, shuffled so order does not matter."""
    shape = SHAPES[spatial_dims]
    values = np.random.default_rng(0).permutation(int(np.prod(shape))).astype(np.float32)
    return values.reshape(shape)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("as_type", [np.asarray, torch.as_tensor, MetaTensor])
def test_percentiles_map_to_zero_and_one(spatial_dims, as_type):
    array = _ramp(spatial_dims)
    low, high = np.percentile(array, [2.0, 98.0])
    out = ModalityNormalize(lower=2.0, upper=98.0)(as_type(array))
    assert type(out) is type(as_type(array))
    assert out.shape == array.shape and out.dtype in (np.float32, torch.float32)
    out = np.asarray(out)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[array <= low] == 0.0) and np.all(out[array >= high] == 1.0)
    inside = (array > low) & (array < high)
    np.testing.assert_allclose(out[inside], (array[inside] - low) / (high - low), atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_denormalize_inverts_inside_the_range(spatial_dims):
    image = MetaTensor(torch.as_tensor(_ramp(spatial_dims) * 3.7 - 50.0), meta={"modality": "MR"})
    out = ModalityNormalize()(image)
    scaling = out.meta["intensity_scaling"]
    assert scaling["kind"] == "percentile"
    back = denormalize(out, scaling)
    inside = (image >= scaling["low"]) & (image <= scaling["high"])
    assert inside.float().mean() > 0.95
    torch.testing.assert_close(back[inside].as_tensor(), image[inside].as_tensor(), atol=1e-3, rtol=1e-5)
    below = back[image < scaling["low"]].as_tensor()
    assert below.numel() > 0
    torch.testing.assert_close(below, torch.full_like(below, scaling["low"]))


def test_ct_window_from_meta_and_mr_rule_otherwise():
    hu = torch.linspace(-1000.0, 1000.0, 201).reshape(1, 201, 1).repeat(1, 1, 3)
    ct = ModalityNormalize(window="brain")(MetaTensor(hu, meta={"modality": "CT"}))
    assert ct.meta["intensity_scaling"] == {"kind": "ct_window", "low": 0.0, "high": 80.0}
    at = {float(h): float(v) for h, v in zip(hu[0, :, 0], ct[0, :, 0], strict=True)}
    assert at[0.0] == 0.0 and at[40.0] == pytest.approx(0.5) and at[80.0] == 1.0
    assert at[-1000.0] == 0.0 and at[1000.0] == 1.0
    mr = ModalityNormalize(window="brain")(MetaTensor(hu, meta={"modality": "MR"}))
    assert mr.meta["intensity_scaling"]["kind"] == "percentile"
    assert mr.meta["intensity_scaling"]["low"] == pytest.approx(-990.0)
    forced = ModalityNormalize(modality="CT", window=(100.0, 200.0))(MetaTensor(hu, meta={"modality": "MR"}))
    assert forced.meta["intensity_scaling"] == {"kind": "ct_window", "low": 0.0, "high": 200.0}


def test_plain_arrays_use_the_mr_rule_unless_told():
    hu = np.linspace(-1000.0, 1000.0, 201, dtype=np.float32).reshape(1, 201, 1)
    assert intensity_scaling(hu, None)["kind"] == "percentile"
    assert intensity_scaling(hu, "ct")["low"] == window_bounds("soft_tissue")[0] == -160.0
    np.testing.assert_allclose(ModalityNormalize(modality="CT")(hu), np.clip((hu + 160.0) / 400.0, 0, 1), atol=1e-6)


def test_window_presets_and_errors():
    assert window_bounds("soft_tissue") == (-160.0, 240.0)
    for name in ("brain", "subdural", "bone", "lung"):
        low, high = window_bounds(name)
        assert high - low == CT_WINDOWS[name][1]
    with pytest.raises(ValueError, match="unknown CT window 'liverish'"):
        ModalityNormalize(window="liverish")
    with pytest.raises(ValueError, match="width"):
        window_bounds((40.0, 0.0))
    with pytest.raises(ValueError, match="percentiles"):
        ModalityNormalize(lower=60.0, upper=40.0)


def test_nonzero_percentiles_ignore_background():
    image = np.zeros((1, 20, 20), np.float32)
    image[0, :10] = np.linspace(100.0, 200.0, 200).reshape(10, 20)
    everywhere = intensity_scaling(image, "MR", lower=1.0, upper=99.0)
    foreground = intensity_scaling(image, "MR", lower=1.0, upper=99.0, nonzero=True)
    assert everywhere["low"] == 0.0
    assert foreground["low"] == pytest.approx(np.percentile(image[image > 0], 1.0), rel=1e-5)
    assert foreground["high"] == pytest.approx(np.percentile(image[image > 0], 99.0), rel=1e-5)


def test_constant_image_gives_zeros_without_warning():
    image = MetaTensor(torch.full((1, 4, 4, 4), 7.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ModalityNormalize()(image)
    assert torch.all(out == 0.0)
    assert torch.all(denormalize(out, out.meta["intensity_scaling"]) == 7.0)


def test_dict_version_normalises_listed_keys_and_leaves_input_meta_alone():
    image = MetaTensor(torch.linspace(-500.0, 500.0, 64).reshape(1, 4, 4, 4), meta={"modality": "CT"})
    label = MetaTensor(torch.randint(0, 3, (1, 4, 4, 4)).float())
    out = ModalityNormalized(["image"], window="lung")({"image": image, "label": label})
    assert out["label"] is label
    assert out["image"].meta["intensity_scaling"]["kind"] == "ct_window"
    assert "intensity_scaling" not in image.meta
    assert float(out["image"].min()) == pytest.approx((-500.0 + 1350.0) / 1500.0)
    assert float(out["image"].max()) == 1.0
