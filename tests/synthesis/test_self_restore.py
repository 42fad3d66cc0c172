"""``denoise --self`` and ``super-resolve --self``: a model trained on the scan alone, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data import thick_slices
from medsynth.data.degradations import rician_noise
from medsynth.data.noise import rician_mean
from medsynth.io import MedicalImage, find_input_images, read_nifti, write_nifti
from medsynth.synthesis.restore import _undo_rician_mean
from medsynth.synthesis.self_supervised import DEFAULT_MINUTES, SelfTraining, self_config

runner = CliRunner()


@pytest.fixture(scope="module")
def scans(mni, tmp_path_factory):
    """A thick-slice scan (4 mm slices from 1 mm in-plane voxels) and a noisy one, both small."""
    folder = tmp_path_factory.mktemp("self_scans")
    clean = mni[0].array[20:68, 30:78, 30:46].astype(np.float32)
    _, low = thick_slices(clean[None], 4, axis=-1, return_low_res=True)
    thick = MedicalImage(np.asarray(low[0]) * 900, np.diag([1.0, 1.0, 4.0, 1.0]), {"modality": "MR"})
    noisy = rician_noise(clean[None] / clean.max(), 0.05, np.random.default_rng(0))[0] * 900
    write_nifti(thick, folder / "thick.nii.gz")
    write_nifti(MedicalImage(noisy.astype(np.float32), np.eye(4), {"modality": "MR"}), folder / "noisy.nii.gz")
    return folder


def _self(command: str, scan, out, *extra: str):
    return runner.invoke(app, [command, str(scan), str(out), "--self", "--train-steps", "2", "--device", "cpu",
                               *extra])


def test_super_resolve_self_trains_on_the_scan_and_writes_the_fine_grid(scans, tmp_path):
    result = _self("super-resolve", scans / "thick.nii.gz", tmp_path / "a.nii.gz", "--keep-model",
                   str(tmp_path / "model"))
    assert result.exit_code == 0, result.stderr
    assert "factor 4" in result.stderr and "slice profile box" in result.stderr and "assumed" in result.stderr
    out = read_nifti(tmp_path / "a.nii.gz")
    assert out.array.shape == (48, 48, 16) and np.allclose(out.spacing_mm, (1.0, 1.0, 1.0))
    again = _self("super-resolve", scans / "thick.nii.gz", tmp_path / "b.nii.gz")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(read_nifti(tmp_path / "b.nii.gz").array, out.array)  # deterministic on CPU
    # the kept model, applied with --model, gives the same volume: --self is train + apply
    applied = runner.invoke(app, ["super-resolve", str(scans / "thick.nii.gz"), str(tmp_path / "c.nii.gz"),
                                  "--model", str(tmp_path / "model"), "--device", "cpu"])
    assert applied.exit_code == 0, applied.stderr
    assert np.array_equal(read_nifti(tmp_path / "c.nii.gz").array, out.array)
    config = (tmp_path / "model" / "config.yaml").read_text()
    assert "self_supervised: true" in config and "fuse_planes: true" in config


def test_denoise_self_removes_the_rician_floor(scans, tmp_path):
    result = _self("denoise", scans / "noisy.nii.gz", tmp_path / "d.nii.gz", "--family", "l1")
    assert result.exit_code == 0, result.stderr
    assert "Neighbor2Neighbor" in result.stderr and "Rician bias removed" in result.stderr
    out = read_nifti(tmp_path / "d.nii.gz")
    assert out.array.shape == (48, 48, 16) and np.isfinite(out.array).all()
    assert out.array.min() >= 0  # a magnitude image stays non-negative


def test_the_rician_mean_is_inverted_from_intensity_zero_not_from_the_range_bound():
    """Air's Rician mean maps to intensity 0 although the model's range starts above 0 (model space
    0 is intensity ``low``): the inversion is made in intensity, shifted by ``zero``."""
    rng = np.random.default_rng(0)
    signal = np.zeros((40, 40, 8))
    signal[8:32, 8:32] = np.linspace(0.5, 1.0, 24)[:, None, None]  # smooth tissue: sigma is measurable
    sigma, low, high = 0.05, 0.1, 1.1  # a range whose lower bound is not zero
    noisy = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
    expected = rician_mean(signal, sigma)  # what a Neighbor2Neighbor model learns
    to_model = lambda v: ((v - low) / (high - low)).astype(np.float32)  # noqa: E731
    zero = -low / (high - low)
    restored = _undo_rician_mean(to_model(expected), to_model(noisy), zero, "scan") * (high - low) + low
    assert np.abs(restored[signal == 0]).max() < 1e-6  # air: 0, not the range's lower bound
    assert np.abs(restored - signal)[signal > 0].mean() < 0.1 * sigma  # the tissue: its signal


def test_self_refuses_bad_requests_and_writes_nothing(scans, tmp_path):
    isotropic = MedicalImage(np.random.default_rng(0).random((40, 40, 12)).astype(np.float32), np.eye(4), {})
    write_nifti(isotropic, tmp_path / "iso.nii.gz")
    flat = MedicalImage(np.random.default_rng(0).random((40, 40)).astype(np.float32), np.eye(4), {})
    write_nifti(flat, tmp_path / "flat.nii.gz")
    write_nifti(MedicalImage(np.zeros((40, 40, 12), np.float32), np.eye(4), {}), tmp_path / "blank.nii.gz")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("taken")
    cases = [
        (["super-resolve", tmp_path / "iso.nii.gz", tmp_path / "o1.nii.gz", "--self"], "no thick axis"),
        (["denoise", tmp_path / "flat.nii.gz", tmp_path / "o2.nii.gz", "--self"], "2D image"),
        (["denoise", tmp_path / "blank.nii.gz", tmp_path / "o11.nii.gz", "--self"], "constant scan"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o3.nii.gz", "--self", "--model", tmp_path], "not both"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o4.nii.gz"], "not both or neither"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o5.nii.gz", "--self", "--family", "vae"], "unknown"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o6.nii.gz", "--self", "--minutes", "0"], "--minutes"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o7.nii.gz", "--self", "--keep-model", tmp_path / "full"],
         "new or empty"),
        (["denoise", scans, tmp_path / "o8", "--self", "--keep-model", scans / "k"], "inside the input"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o9.nii.gz", "--keep-model", tmp_path / "k"], "go with --self"),
        (["denoise", scans / "noisy.nii.gz", tmp_path / "o10", "--self", "--keep-model", tmp_path / "o10" / "m"],
         "overlap"),
    ]
    for args, problem in cases:
        quick = ["--train-steps", "1"] if "--self" in args else []  # were a check missed: no long training
        result = runner.invoke(app, [str(a) for a in args] + ["--device", "cpu", *quick])
        assert result.exit_code != 0, args
        assert problem in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.glob("o*")) and not (scans / "k").exists()


def test_a_folder_with_a_scan_self_cannot_use_is_refused_before_any_training(scans, tmp_path, monkeypatch):
    import shutil

    from medsynth.training import Trainer

    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(scans / "noisy.nii.gz", folder / "a.nii.gz")  # fine, and first in order
    write_nifti(MedicalImage(np.ones((40, 40, 12), np.float32), np.eye(4), {}), folder / "b.nii.gz")
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("training started"))
    result = _self("denoise", folder, tmp_path / "out")
    assert result.exit_code == 1 and "b: every voxel is 1; a constant scan" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("existed", [False, True])
def test_an_interrupted_self_run_keeps_no_half_trained_model_and_writes_nothing(scans, tmp_path, monkeypatch,
                                                                                 existed):
    """Ctrl-C during --self training: exit 130, a message that does not offer a --resume the command
    lacks, no output, and the --keep-model folder as it was (so the same command runs again)."""
    from medsynth.errors import Interrupted
    from medsynth.training import Trainer

    def interrupted(self):
        (self.run.path / "checkpoints").mkdir(parents=True, exist_ok=True)  # as a real run leaves it
        raise Interrupted(f"interrupted; checkpoint saved at step 1 in {self.run.path}; continue with --resume")

    keep = tmp_path / "model"
    if existed:
        keep.mkdir()
    monkeypatch.setattr(Trainer, "fit", interrupted)
    result = _self("denoise", scans / "noisy.nii.gz", tmp_path / "o.nii.gz", "--keep-model", str(keep))
    assert result.exit_code == 130
    assert "interrupted while training its --self model" in result.stderr and "--resume" not in result.stderr
    assert not (tmp_path / "o.nii.gz").exists()
    assert keep.exists() == existed and (not existed or not any(keep.iterdir()))


def test_time_limit_stops_training_early_with_a_warning(scans, tmp_path, caplog):
    from medsynth.synthesis import restore

    training = SelfTraining(family="l1", minutes=1e-4, steps=50, keep_model=tmp_path / "run")
    restore(scans / "noisy.nii.gz", tmp_path / "e.nii.gz", None, "denoise", self_training=training, progress=False,
            device="cpu")
    assert "stopped at the time limit" in caplog.text
    assert (tmp_path / "e.nii.gz").exists()


def test_the_slice_profile_comes_from_slice_thickness_and_the_cli_default_is_the_module_default(tmp_path):
    import pydicom

    from tests.conftest import SeriesSpec, write_series

    for path in write_series(tmp_path / "s", SeriesSpec(rows=40, columns=40, slices=6, pixel_spacing=(1.0, 1.0),
                                                        slice_step=4.0)):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "2.0"  # 2 mm slices every 4 mm: gaps
        ds.save_as(path)
    source = find_input_images(tmp_path / "s")[0]
    config, account = self_config(source.read(), source, "super_resolve", SelfTraining(slice_profile="gaussian"))
    assert config.job.slice_thickness == pytest.approx(0.5) and config.job.slice_profile == "gaussian"
    assert "from SliceThickness" in account and "2.00 mm thick" in account
    assert f"[default: {DEFAULT_MINUTES}]" in runner.invoke(app, ["denoise", "--help"]).stdout
