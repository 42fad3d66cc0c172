"""``medsynth validate`` on folders of NIfTI files: report, reuse of the feature network, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsynth.io import MedicalImage, write_nifti
from medsynth.validation.realism import ImageSet
from medsynth.validation.validate import paired_fidelity
from tests.cli.test_cli import error_line, run
from tests.validation.test_features import blobs


def write_folder(root, count: int, seed: int, dims: int = 3) -> tuple:
    images, labels = blobs(count, dims=dims, size=16, seed=seed)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_nifti(MedicalImage(image[0].numpy(), np.eye(4), {"modality": "MR"}), root / "images" / f"c{k}.nii.gz")
        write_nifti(MedicalImage(label[0].numpy(), np.eye(4)), root / "labels" / f"c{k}.nii.gz", dtype=np.uint8)
    return root / "images", root / "labels"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    real = write_folder(root / "real", 4, seed=0)
    synthetic = write_folder(root / "synthetic", 3, seed=1)
    return root, real, synthetic


def test_validate_writes_report_and_reuses_its_feature_network(folders):
    root, (real, real_labels), (synthetic, synthetic_labels) = folders
    before = sorted(p.name for p in real.iterdir())
    result = run("validate", real, synthetic, "--out", root / "report", "--labels", real_labels,
                 "--synth-labels", synthetic_labels, "--feature-steps", 2, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads((root / "report" / "metrics.json").read_text())
    metrics = report["metrics"]
    assert set(metrics["intensity_wasserstein"]) == {"all", "background", "label_1", "label_2"}
    assert metrics["n_real"] > 4 and set(metrics["realism"]["spaces"]) == {"trained", "random", "handcrafted"}
    kid = metrics["realism"]["spaces"]["trained"]["families"]["synthetic"]["kid"]
    assert kid["ci95"][0] <= kid["value"] <= kid["ci95"][1]
    assert metrics["memorization"]["measured"] is False and "--train" in metrics["memorization"]["reason"]
    assert "trained locally" in report["feature_network"]["description"]
    page = (root / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "pass --train" in page
    assert sorted(p.name for p in real.iterdir()) == before  # input untouched
    again = run("validate", real, synthetic, "--out", root / "again", "--features", root / "report" / "feature_network",
                "--labels", real_labels, "--synth-labels", synthetic_labels, "--device", "cpu")
    assert again.exit_code == 0, again.stderr
    kid_again = json.loads((root / "again" / "metrics.json").read_text())["metrics"]["realism"]["spaces"]["trained"]
    assert kid_again["families"]["synthetic"]["kid"]["value"] == pytest.approx(kid["value"])
    assert not (root / "again" / "feature_network").exists()  # reused, not retrained
    too_few = run("validate", real, synthetic, "--out", root / "volumes", "--dims", 3, "--feature-steps", 1)
    assert too_few.exit_code == 1 and "4 usable volumes" in error_line(too_few) and "at least 5" in error_line(too_few)
    more_real, _ = write_folder(root / "more_real", 6, seed=4)
    more_synthetic, _ = write_folder(root / "more_synthetic", 5, seed=5)
    volumes = run("validate", more_real, more_synthetic, "--out", root / "volumes", "--dims", 3, "--feature-steps", 1)
    assert volumes.exit_code == 0, volumes.stderr
    report = json.loads((root / "volumes" / "metrics.json").read_text())
    assert report["metrics"]["n_real"] == 6 and report["shape"] == [16, 16, 16]
    wrong = run("validate", more_real, more_synthetic, "--out", root / "wrong", "--dims", 3, "--features",
                root / "report" / "feature_network")
    assert wrong.exit_code == 1 and "trained on 2D images, given 3D" in error_line(wrong)


def test_validate_with_train_flags_a_planted_copy_of_a_training_scan(folders):
    root, (real, real_labels), _ = folders
    train, train_labels = write_folder(root / "train", 4, seed=2)
    synthetic, synthetic_labels = write_folder(root / "honest", 3, seed=3)
    for folder, source in ((synthetic, train), (synthetic_labels, train_labels)):
        (folder / "copied.nii.gz").write_bytes((source / "c0.nii.gz").read_bytes())
    result = run("validate", real, synthetic, "--out", root / "copies", "--labels", real_labels, "--synth-labels",
                 synthetic_labels, "--train", train, "--train-labels", train_labels, "--feature-steps", 5,
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads((root / "copies" / "metrics.json").read_text())
    memorization = report["metrics"]["memorization"]
    closest = memorization["features"]["closest"][0]
    assert "copied.nii.gz" in closest["synthetic"] and closest["distance"] == pytest.approx(0.0, abs=1e-6)
    assert memorization["features"]["flagged"] >= 1 and "residuals" in memorization
    assert memorization["features"]["held_out_in_training"] == 0
    spaces = report["metrics"]["realism"]["spaces"]
    assert "reference" in spaces["trained"]  # the real training images' own KID against REAL_DIR
    assert (root / "copies" / "figures" / "nearest.png").exists()


def test_validate_bad_input_is_a_one_line_error(folders, tmp_path):
    root, (real, _), (synthetic, _) = folders
    (tmp_path / "empty").mkdir()
    result = run("validate", real, tmp_path / "empty", "--out", tmp_path / "out", "--feature-steps", 1)
    assert result.exit_code == 1 and "empty" in error_line(result) and not (tmp_path / "out").exists()
    result = run("validate", real, synthetic, "--out", real / "report", "--feature-steps", 1)
    assert result.exit_code == 1 and "inside the input" in error_line(result) and not (real / "report").exists()
    result = run("validate", real, synthetic, "--out", tmp_path / "out", "--features", tmp_path / "nothing.pt")
    assert result.exit_code == 1 and "nothing.pt: no such feature network" in error_line(result)
    result = run("validate", real, synthetic, "--out", tmp_path / "out", "--train", real)
    assert result.exit_code == 1 and "the same folder as REAL_DIR" in error_line(result)
    result = run("validate", real, synthetic, "--out", tmp_path / "out", "--dims", 4)
    assert result.exit_code == 1 and "--dims 4" in error_line(result)


def test_restored_copies_get_paired_fidelity():


    images = torch.rand(3, 1, 16, 16)
    real = ImageSet(images, None, ["a", "b", "c"])
    assert paired_fidelity(real, ImageSet(images.clone(), None, ["x", "y", "z"])) is None
    same = paired_fidelity(real, ImageSet(images[:2].clone(), None, ["a", "b"]))
    assert same["pairs"] == 2 and same["ssim"] == pytest.approx(1.0) and same["psnr"] > 100
    noisy = paired_fidelity(real, ImageSet((images + 0.1).clamp(0, 1), None, ["a", "b", "c"]))
    assert 15 < noisy["psnr"] < 25 and noisy["ssim"] < 0.99


def test_3d_images_are_shown_as_three_orthogonal_views():
    from medsynth.validation.report import _view

    volume = np.zeros((4, 6, 8))
    volume[2, :, :] = 1.0  # the sagittal middle slice, all ones
    view = _view(volume)
    assert view.shape == (3 * 8, 8)  # three views side by side, each padded to the largest side
    assert view[:6, :8].sum() == 6 * 8 and view[16:].sum() == volume[:, :, 4].sum()  # sagittal, ..., axial
    assert _view(np.ones((5, 7))).shape == (5, 7)
