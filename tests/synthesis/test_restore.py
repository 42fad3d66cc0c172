"""``denoise`` and ``super-resolve``: file or folder in, same structure out, geometry kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data import thick_slices
from medsynth.io import MedicalImage, read_image, read_nifti, write_dicom_series, write_nifti
from medsynth.models import SampleOptions
from medsynth.synthesis.apply import TrainedModel, from_ras, run_on_volume, to_model_space, to_ras
from medsynth.synthesis.inferers import restoration_window
from medsynth.synthesis.restore import fine_affine, thick_to_fine
from medsynth.training import RunDirectory
from tests.synthesis.test_augment import train_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def restore_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("restore_runs")
    return {"denoise": train_tiny(folder, "denoise", family="gan"),
            "super_resolve": train_tiny(folder, "super_resolve", dims=3, degrade_axis=2),
            "generate": train_tiny(folder, "generate", family="gan")}


@pytest.fixture(scope="module")
def volume(mni):
    image = mni[0]
    return MedicalImage(image.array[20:60, 30:66, 30:42] * 800, image.affine, {"modality": "MR"})


def test_denoise_a_file_and_a_mixed_folder_keeps_layout_and_geometry(tmp_path, restore_runs, volume):
    source = tmp_path / "in" / "sub" / "t1.nii.gz"
    write_nifti(volume, source)
    write_dicom_series(volume, tmp_path / "in" / "dicom" / "s1", uid_seed="s1")
    result = runner.invoke(app, ["denoise", str(source), str(tmp_path / "one.nii.gz"), "--model",
                                 str(restore_runs["denoise"]), "--steps", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "--steps: not an option of this gan model" in result.stderr  # a GAN ignores it, with a note
    out = read_nifti(tmp_path / "one.nii.gz")
    assert out.array.shape == volume.array.shape and np.allclose(out.affine, volume.affine)
    _, space = to_model_space(volume, RunDirectory(restore_runs["denoise"]).read_config())
    low, high = space.scaling["low"], space.scaling["high"]
    beyond = volume.array - np.clip(volume.array, low, high)  # outside the model's range: passed through
    bright = beyond > 0
    # on top of the model's output, which is within the range: the output keeps the excess
    assert bright.any() and np.all(out.array[bright] - beyond[bright] <= high + 1e-4 * (high - low))
    assert np.all(out.array[bright] - beyond[bright] >= low - 1e-4 * (high - low))
    assert not np.allclose(out.array[bright], volume.array[bright])  # denoised too, not kept as they came
    assert not np.allclose(out.array, volume.array)
    flipped = runner.invoke(app, ["denoise", str(source), str(tmp_path / "flipped.nii.gz"), "--model",
                                  str(restore_runs["denoise"]), "--flips", "--device", "cpu"])
    assert flipped.exit_code == 0, flipped.stderr  # the flip ensemble: same grid, other (averaged) values
    averaged = read_nifti(tmp_path / "flipped.nii.gz").array
    assert averaged.shape == out.array.shape and not np.allclose(averaged, out.array)
    folder = runner.invoke(app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                                 str(restore_runs["denoise"]), "--device", "cpu"])
    assert folder.exit_code == 0, folder.stderr
    assert (tmp_path / "out" / "sub" / "t1.nii.gz").exists()
    series = [p for p in (tmp_path / "out" / "dicom" / "s1").iterdir()]
    assert len(series) == 1 and series[0].is_dir()  # a DICOM series in, a DICOM series out, same place
    denoised = read_image(series[0])
    assert np.allclose(denoised.affine, read_image(tmp_path / "in" / "dicom" / "s1").affine, atol=1e-4)


def test_keep_study_writes_a_derived_series_in_the_source_study(tmp_path, restore_runs):
    import subprocess

    import pydicom

    from tests.conftest import SeriesSpec, require_tool, write_series

    source = write_series(tmp_path / "in" / "t1", SeriesSpec(rows=32, columns=32, slices=4))
    result = runner.invoke(app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                                 str(restore_runs["denoise"]), "--keep-study", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    original = [pydicom.dcmread(p) for p in source]
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").rglob("*.dcm"))]
    assert len(written) == 4
    for ds in written:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                        "FrameOfReferenceUID"):
            assert ds.get(keyword) == original[0].get(keyword), keyword
        assert ds.SeriesInstanceUID != original[0].SeriesInstanceUID
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and "PatientIdentityRemoved" not in ds
        assert ds.DerivationDescription.startswith("medsynth denoise with a gan model")
        reference = ds.ReferencedSeriesSequence[0]
        assert reference.SeriesInstanceUID == original[0].SeriesInstanceUID
        assert {i.ReferencedSOPInstanceUID for i in reference.ReferencedInstanceSequence} == {
            o.SOPInstanceUID for o in original}
        at = {o.SOPInstanceUID: [float(v) for v in o.ImagePositionPatient] for o in original}
        np.testing.assert_allclose(at[ds.SourceImageSequence[0].ReferencedSOPInstanceUID],  # the same slice
                                   [float(v) for v in ds.ImagePositionPatient], atol=1e-3)
    tool = require_tool("dciodvfy")
    check = subprocess.run([tool, str(sorted((tmp_path / "out").rglob("*.dcm"))[0])], capture_output=True, text=True)
    assert not [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    nifti = tmp_path / "nifti" / "a.nii.gz"
    write_nifti(read_image(tmp_path / "in" / "t1"), nifti)
    refused = runner.invoke(app, ["denoise", str(nifti), str(tmp_path / "b.nii.gz"), "--model",
                                  str(restore_runs["denoise"]), "--keep-study", "--device", "cpu"])
    assert refused.exit_code == 1 and "no DICOM series" in refused.stderr and not (tmp_path / "b.nii.gz").exists()


def test_super_resolve_writes_the_finer_grid_into_the_affine(tmp_path, restore_runs, volume):
    thick_affine = volume.affine @ np.diag([1, 1, 2, 1]) @ _shift_z(0.25)  # slab k centred between slices 2k, 2k+1
    thick = MedicalImage(volume.array.reshape(40, 36, 6, 2).mean(-1), thick_affine, {"modality": "MR"})
    thick.array[20, 18, 3] = 5 * thick.array.max()  # a bright vessel beyond the model's intensity range
    write_nifti(thick, tmp_path / "thick.nii.gz")
    result = runner.invoke(app, ["super-resolve", str(tmp_path / "thick.nii.gz"), str(tmp_path / "fine.nii.gz"),
                                 "--model", str(restore_runs["super_resolve"]), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    fine = read_nifti(tmp_path / "fine.nii.gz")
    assert fine.array.shape == (40, 36, 12)
    assert np.allclose(fine.spacing_mm, volume.spacing_mm)
    assert np.allclose(fine.affine, volume.affine, atol=1e-6)  # the thin slices sit where the originals were
    _, space = to_model_space(thick, RunDirectory(restore_runs["super_resolve"]).read_config())
    excess = thick.array[20, 18, 3] - space.scaling["high"]
    # its excess passes through onto the fine slices of its slab (linearly: 3/4 at a quarter slab off centre)
    assert np.all(fine.array[20, 18, 6:8] >= space.scaling["low"] + 0.75 * excess - 1e-3 * excess)


def _shift_z(voxels):
    shift = np.eye(4)
    shift[2, 3] = voxels
    return shift


def test_thick_to_fine_tiles_each_slab_and_keeps_constant_ends():
    thick = np.array([0.0, 2.0, 4.0])[None, None]
    fine = thick_to_fine(thick, axis=2, factor=2)
    assert fine[0, 0].tolist() == [0.0, 0.5, 1.5, 2.5, 3.5, 4.0]
    affine = fine_affine(np.diag([1.0, 1.0, 4.0, 1.0]), axis=2, factor=2)
    assert affine[2, 2] == 2.0 and affine[2, 3] == -1.0  # fine slices 0, 1 centred inside thick slice 0


@pytest.mark.parametrize("kind", ["linear", "cubic"])
def test_inference_condition_is_the_training_condition(kind):
    """A thick-slice acquisition put on the fine grid at inference is what the model was trained on."""
    fine = np.random.default_rng(0).uniform(size=(1, 3, 4, 24))
    degraded, low = thick_slices(fine, 3, axis=-1, return_low_res=True, interpolation=kind)
    np.testing.assert_allclose(thick_to_fine(low, axis=3, factor=3, kind=kind), degraded, atol=1e-6)


def test_the_wrong_job_and_the_wrong_thick_axis_are_refused(tmp_path, restore_runs, volume):
    write_nifti(volume, tmp_path / "t1.nii.gz")
    wrong = runner.invoke(app, ["super-resolve", str(tmp_path / "t1.nii.gz"), str(tmp_path / "x.nii.gz"), "--model",
                                str(restore_runs["denoise"])])
    assert wrong.exit_code == 1 and "trained for denoise, not super_resolve" in wrong.stderr
    augment_model = runner.invoke(app, ["denoise", str(tmp_path / "t1.nii.gz"), str(tmp_path / "x.nii.gz"),
                                        "--model", str(restore_runs["generate"])])
    assert augment_model.exit_code == 1 and "trained for generate, not denoise" in augment_model.stderr
    no_samples = runner.invoke(app, ["denoise", str(tmp_path / "t1.nii.gz"), str(tmp_path / "x.nii.gz"), "--model",
                                     str(restore_runs["denoise"]), "--ensemble", "0"])
    assert no_samples.exit_code == 1 and "--ensemble" in no_samples.stderr and not (tmp_path / "x.nii.gz").exists()
    sagittal_thick = MedicalImage(volume.array[::2], volume.affine @ np.diag([2, 1, 1, 1]), {"modality": "MR"})
    write_nifti(sagittal_thick, tmp_path / "sag.nii.gz")
    axis = runner.invoke(app, ["super-resolve", str(tmp_path / "sag.nii.gz"), str(tmp_path / "y.nii.gz"), "--model",
                               str(restore_runs["super_resolve"])])
    assert axis.exit_code == 1 and "the thick axis is R" in axis.stderr
    inside = runner.invoke(app, ["denoise", str(tmp_path), str(tmp_path / "o"), "--model",
                                 str(restore_runs["denoise"])])
    assert inside.exit_code == 1 and "never writes into its input" in inside.stderr
    nan = volume.with_array(np.where(volume.array > 400, np.nan, volume.array))
    write_nifti(nan, tmp_path / "nan" / "n.nii.gz")
    bad = runner.invoke(app, ["denoise", str(tmp_path / "nan"), str(tmp_path / "p"), "--model",
                              str(restore_runs["denoise"])])
    assert bad.exit_code == 1 and "NaN" in bad.stderr and not list((tmp_path / "p").rglob("*.nii.gz"))


def test_orientation_round_trip_is_exact(volume):
    lps = MedicalImage(volume.array[::-1, ::-1].copy(), volume.affine @ _flip_xy(volume.array.shape), volume.meta)
    ras, orientation = to_ras(lps)
    assert np.array_equal(ras, volume.array)
    assert np.array_equal(from_ras(ras, orientation), lps.array)


def _flip_xy(shape):
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    return flip


def test_patch_wise_3d_restoration_tiles_and_blends_exactly(restore_runs, volume, monkeypatch):
    """Windows of two training patches cover the volume and their Gaussian blend is exact: a
    voxel-wise model gives the same volume patch-wise as in one pass; a real one is reproducible."""
    trained = TrainedModel.load(restore_runs["super_resolve"], "cpu")
    x = (volume.array / volume.array.max()).astype(np.float32)[None]
    assert restoration_window(trained.config, x.shape[1:]) == (32, 32, 12)  # 2 x 16^3 patches, cut to the volume
    windows = run_on_volume(trained, x, seed=0, options=SampleOptions(steps=1))  # patch-wise by default
    assert windows.shape == x.shape[1:] and np.isfinite(windows).all()
    assert np.array_equal(windows, run_on_volume(trained, x, seed=0, options=SampleOptions(steps=1)))
    monkeypatch.setattr(trained.model, "sample", lambda condition, seed, **options: condition.clamp(0, 1) ** 2)
    whole = run_on_volume(trained, x, seed=0, patch_wise=False)
    assert np.allclose(run_on_volume(trained, x, seed=0), whole, atol=1e-5)


def test_flip_ensemble_averages_the_flipped_passes_and_clips_once(restore_runs, volume, monkeypatch):
    """A flip-equivariant model is unchanged by the ensemble; one that is not (it adds a ramp along
    x, antisymmetric under the flip) is averaged over both orientations of every axis, in 3D windows
    and 2D slices alike, and the mean is clipped, not each pass: air (0) stays exactly 0."""
    trained = TrainedModel.load(restore_runs["super_resolve"], "cpu")
    x = (volume.array / volume.array.max()).astype(np.float32)[None]
    x[..., :3] = 0  # air
    flips = SampleOptions(flips=True)
    # the family's part of sampling (one flip's unclipped mean) replaced by a voxel-wise function
    monkeypatch.setattr(trained.model, "_sample_mean", lambda condition, shape, seed, options: condition ** 2)
    assert np.allclose(run_on_volume(trained, x, seed=0, options=flips), run_on_volume(trained, x, seed=0), atol=1e-5)

    def ramped(condition, shape, seed, options):
        n = condition.shape[2]
        return condition + 0.01 * (torch.arange(n, dtype=torch.float32) - (n - 1) / 2).view(
            1, 1, -1, *[1] * (condition.dim() - 3))
    monkeypatch.setattr(trained.model, "_sample_mean", ramped)
    whole = run_on_volume(trained, x, seed=0, patch_wise=False, options=flips)
    assert np.allclose(whole, x[0], atol=1e-5)  # the ramp's mean is 0, everywhere
    assert not trained.config.job.flip_ensemble  # off unless the config asks
    ramp = 0.01 * (np.arange(x.shape[1]) - (x.shape[1] - 1) / 2)[:, None, None]
    assert np.allclose(run_on_volume(trained, x, seed=0, patch_wise=False), np.clip(x[0] + ramp, 0, 1), atol=1e-6)
    assert np.allclose(run_on_volume(trained, x, seed=0, options=flips), x[0], atol=1e-5)  # windows and flips
    denoiser = TrainedModel.load(restore_runs["denoise"], "cpu")  # 2D: flips of each slice's two axes
    monkeypatch.setattr(denoiser.model, "_sample_mean", ramped)
    monkeypatch.setattr(denoiser.config.job, "flip_ensemble", True)
    assert np.allclose(run_on_volume(denoiser, x, seed=0), x[0], atol=1e-5)
