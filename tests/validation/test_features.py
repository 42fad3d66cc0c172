"""The feature network medsynth trains itself, and user-supplied TorchScript extractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.validation.features import load_feature_extractor, train_feature_network


def blobs(count: int, dims: int = 2, size: int = 24, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Images with a bright disc (label 1) and a dimmer ring (label 2), at random places."""
    generator = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * dims, indexing="ij"))
    images, labels = [], []
    for _ in range(count):
        centre = generator.uniform(8, size - 8, dims).reshape(dims, *[1] * dims)
        radius = np.sqrt(((grid - centre) ** 2).sum(0))
        label = np.where(radius < 4, 1, np.where(radius < 7, 2, 0))
        image = np.choose(label, [0.0, 0.9, 0.5]) + generator.normal(0, 0.02, label.shape)
        images.append(torch.as_tensor(image, dtype=torch.float32)[None])
        labels.append(torch.as_tensor(label)[None])
    return images, labels


@pytest.mark.parametrize("dims, with_labels", [(2, True), (2, False), (3, True)])
def test_trained_network_gives_finite_features_and_learns(dims, with_labels):
    images, labels = blobs(6, dims, size=24 if dims == 2 else 16)
    extractor = train_feature_network(images, labels if with_labels else None, num_classes=3, steps=15,
                                      batch_size=4, progress=False)
    features = extractor.extract(torch.stack(images))
    assert features.shape == (6, 16 + 32 + 64 + 128) and np.isfinite(features).all()
    assert extractor.config["final_loss"] < 1.5 if with_labels else extractor.config["final_loss"] < 0.3
    objective = "segmentation" if with_labels else "masked-block reconstruction"
    assert objective in extractor.description and "not a pretrained network" in extractor.description


def test_saved_network_reloads_with_the_same_features(tmp_path):
    images, labels = blobs(4)
    extractor = train_feature_network(images, labels, num_classes=3, steps=3, batch_size=2, progress=False)
    folder = extractor.save(tmp_path / "features")
    again = load_feature_extractor(folder)
    batch = torch.stack(images)
    np.testing.assert_allclose(again.extract(batch), extractor.extract(batch), rtol=1e-6)
    assert again.description == extractor.description


class PooledConv(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # feature maps: medsynth averages them over space
        return torch.cat([x, x**2], dim=1)


def test_user_extractors_are_used_as_given(tmp_path):
    images = torch.rand(3, 1, 20, 20)
    torch.jit.trace(PooledConv(), images).save(str(tmp_path / "net.pt"))
    torch.export.save(torch.export.export(PooledConv(), (images,)), str(tmp_path / "net.pt2"))
    for name in ("net.pt", "net.pt2"):
        extractor = load_feature_extractor(tmp_path / name)
        features = extractor.extract(images)
        expected = torch.stack([images.mean((1, 2, 3)), (images**2).mean((1, 2, 3))], 1).double().numpy()
        np.testing.assert_allclose(features, expected, rtol=1e-5)
        assert "user-supplied" in extractor.description


def test_bad_feature_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(MedsynthError, match="junk.pt: cannot load as a TorchScript"):
        load_feature_extractor(tmp_path / "junk.pt")
    with pytest.raises(MedsynthError, match="missing.pt: no such feature network"):
        load_feature_extractor(tmp_path / "missing.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(MedsynthError, match="folder: not a medsynth feature network"):
        load_feature_extractor(tmp_path / "folder")
    with pytest.raises(MedsynthError, match="no real training images"):
        train_feature_network([])
