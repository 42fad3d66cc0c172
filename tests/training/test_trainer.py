"""The shared trainer with tiny diffusion models: run directory, resume, data checks, CT and 3D."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from monai.data.synthetic import create_test_image_3d
from safetensors.torch import load_file

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, write_nifti
from medsynth.training import RunDirectory, Trainer, load_experiment
from medsynth.training.inference import load_trained

TINY_MODEL = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
              "num_head_channels": 8, "num_train_timesteps": 20, "num_inference_steps": 2}
TINY_GAN = {"channels": [8, 16], "noise_channels": 2, "spade_hidden": 8, "discriminator_channels": 8,
            "discriminator_layers": 2, "r1_weight": 1.0, "r1_every": 2}
TINY_TRAIN = {"steps": 6, "batch_size": 2, "log_every": 2, "checkpoint_every": 3, "sample_every": 6,
              "sample_steps": 2, "warmup_steps": 2}


def tiny_config(tmp_path, job_name="denoise", dims=2, family="diffusion", **sections):
    config = {"job": {"name": job_name}, "spatial_dims": dims, "family": family,
              "data": {"patch_size": [16] * dims},
              "model": TINY_GAN if family == "gan" else TINY_MODEL, "train": TINY_TRAIN}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{job_name}_{dims}d.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(run):
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("job, dims", [("denoise", 2), ("super_resolve", 2), ("generate", 2), ("generate", 3),
                                       ("super_resolve", 3)])
def test_run_directory_for_every_job(tmp_path, job, dims):
    path = tiny_config(tmp_path, job, dims, job={"name": job, "degrade_axis": -1})
    summary = Trainer(load_experiment(path), tmp_path / "run", progress=False).fit()
    run = tmp_path / "run"
    assert summary["steps"] == 6 and summary["peak_memory_mb"] > 0
    assert (run / "config.yaml").exists() and (run / "summary.json").exists()
    assert (run / "samples" / "step_0000006.png").stat().st_size > 1000
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000006"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000003", "step_0000006"]
    assert [int(r["step"]) for r in read_log(run)] == [2, 4, 6]
    model, config, _ = load_trained(run)
    assert config.job.name == job and not model.training
    saved = load_experiment(run / "config.yaml")
    assert saved.model["channels"] == [8, 16]  # resolved config written with every model option
    assert "prediction_type" in saved.model


@pytest.mark.parametrize("job, dims", [("generate", 2), ("super_resolve", 3)])
def test_gan_runs_on_the_same_trainer_and_logs_stability_signals(tmp_path, job, dims):
    path = tiny_config(tmp_path, job, dims, family="gan", job={"name": job, "degrade_axis": -1},
                       model={"residual": job != "generate", "diversity_weight": float(job == "generate")})
    Trainer(load_experiment(path), tmp_path / "run", progress=False).fit()
    run = tmp_path / "run"
    rows = read_log(run)
    assert {"loss_d", "loss_g", "d_real_accuracy", "d_fake_accuracy", "grad_norm_d", "grad_norm_g", "diversity",
            "r1", "lr"} <= set(rows[0])
    assert (run / "samples" / "step_0000006.png").stat().st_size > 1000
    weights = load_file(run / "checkpoints" / "step_0000006" / "ema.safetensors")
    assert weights and all(k.startswith("generator.") for k in weights)  # EMA of the generator only
    model, config, _ = load_trained(run)
    assert model.family == "gan" and config.job.name == job


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_resume_is_bit_for_bit(tmp_path, family):
    path = tiny_config(tmp_path, family=family)
    Trainer(load_experiment(path), tmp_path / "straight", progress=False).fit()
    Trainer(load_experiment(path), tmp_path / "killed", progress=False).fit()
    # make it look killed after the step-3 checkpoint: latest points there, a stale log row past it
    checkpoints = tmp_path / "killed" / "checkpoints"
    (checkpoints / "latest").write_text("step_0000003\n")
    shutil.rmtree(checkpoints / "step_0000006")
    with open(tmp_path / "killed" / "log.csv", "a") as handle:
        handle.write("8,9.9,9.9,0.1,1.0\n")
    Trainer(load_experiment(path), tmp_path / "killed", resume=True, progress=False).fit()
    straight = load_file(tmp_path / "straight" / "checkpoints" / "step_0000006" / "model.safetensors")
    resumed = load_file(checkpoints / "step_0000006" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    straight_log, resumed_log = read_log(tmp_path / "straight"), read_log(tmp_path / "killed")
    assert [r["step"] for r in resumed_log] == ["2", "4", "6"]
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in straight_log]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed_log]


def test_existing_run_is_not_overwritten_and_resume_needs_the_same_config(tmp_path):
    path = tiny_config(tmp_path)
    Trainer(load_experiment(path), tmp_path / "run", progress=False).fit()
    with pytest.raises(MedsynthError, match="exists"):
        Trainer(load_experiment(path), tmp_path / "run", progress=False)
    with pytest.raises(MedsynthError, match="train.lr"):
        Trainer(load_experiment(path, ["train.lr=0.5"]), tmp_path / "run", resume=True, progress=False)
    summary = Trainer(load_experiment(path, ["train.steps=8"]), tmp_path / "run", resume=True, progress=False).fit()
    assert summary["steps"] == 8 and summary["steps_this_session"] == 2


def _phantom_folder(tmp_path, with_labels=True, label_value=1):
    folder = tmp_path / "data"
    image, label = create_test_image_3d(24, 24, 20, num_objs=4, rad_max=6, noise_max=0.0,
                                       random_state=np.random.RandomState(0))
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    write_nifti(MedicalImage((image * 300 - 50).astype(np.float32), affine, {"modality": "CT"}),
                folder / "images" / "case1.nii.gz")
    if with_labels:
        write_nifti(MedicalImage((label > 0).astype(np.float32) * label_value, affine),
                    folder / "labels" / "case1.nii.gz")
    return folder


def test_ct_low_dose_denoising_on_a_phantom(tmp_path):
    folder = _phantom_folder(tmp_path)
    path = tiny_config(tmp_path, job={"name": "denoise", "noise": "low_dose_ct", "photons": [1e4, 1e5]},
                       data={"images": str(folder / "images"), "modality": "CT", "ct_window": "soft_tissue",
                             "validation": [0.0, 0.0], "test": [0.0, 0.0], "min_foreground": 0.0})
    Trainer(load_experiment(path), tmp_path / "run", progress=False).fit()
    assert len(read_log(tmp_path / "run")) == 3


def test_real_ct_slice_from_pydicom(tmp_path, pydicom_file):
    path = tiny_config(tmp_path, data={"images": str(pydicom_file("CT_small.dcm")), "modality": "CT",
                                       "validation": [0.0, 0.0], "test": [0.0, 0.0], "patch_size": [32, 32]},
                       job={"name": "denoise", "noise": "gaussian"})
    Trainer(load_experiment(path), tmp_path / "run", progress=False).fit()
    assert (tmp_path / "run" / "samples" / "step_0000006.png").exists()


@pytest.mark.parametrize("setup, overrides, message", [
    ("labels_too_high", [], "outside job.num_classes=3"),
    ("no_labels", [], "needs a label map"),
    ("two_d_data", ["spatial_dims=3", "data.patch_size=[8, 8, 8]"], "2D image, but the config is 3D"),
    ("empty", [], "folder is empty"),
    ("label_off_grid", [], "label affine differs"),
])
def test_bad_training_data(tmp_path, setup, overrides, message):
    data = {"validation": [0.0, 0.0], "test": [0.0, 0.0], "min_foreground": 0.0}
    if setup == "two_d_data":
        write_nifti(MedicalImage(np.random.rand(20, 20).astype(np.float32), np.eye(4)), tmp_path / "d2" / "a.nii.gz")
        data["images"] = str(tmp_path / "d2")
    elif setup == "empty":
        (tmp_path / "empty").mkdir()
        data["images"] = str(tmp_path / "empty")
    else:
        folder = _phantom_folder(tmp_path, with_labels=setup != "no_labels", label_value=7)
        if setup == "label_off_grid":
            write_nifti(MedicalImage(np.zeros((24, 24, 20), np.float32), np.diag([1.0, 1.0, 1.0, 1.0])),
                        folder / "labels" / "case1.nii.gz")
        data["images"] = str(folder / "images")
        if setup != "no_labels":
            data["labels"] = str(folder / "labels")
    path = tiny_config(tmp_path, "generate", data=data)
    with pytest.raises(MedsynthError, match=message):
        Trainer(load_experiment(path, overrides), tmp_path / "run", progress=False).fit()


def test_run_directory_refuses_a_missing_checkpoint(tmp_path):
    run = RunDirectory(tmp_path / "r")
    with pytest.raises(MedsynthError, match="no such folder"):
        run.read_config()
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    with pytest.raises(MedsynthError, match="not a medsynth run directory"):
        run.read_config()
    (tmp_path / "r" / "checkpoints" / "latest").write_text("step_0000009\n")
    with pytest.raises(MedsynthError, match="missing checkpoint"):
        run.load_checkpoint()


def test_patch_augmentation_flips_and_changes_contrast_reproducibly():
    from medsynth.training.dataset import PatchSampler, Volume
    from medsynth.training.experiment import DataConfig

    image = torch.linspace(0.01, 1, 16 * 16 * 4).reshape(1, 16, 16, 4)
    volume = Volume(image, (image > 0.5).long(), "ramp", {})
    plain = PatchSampler([volume], DataConfig(patch_size=(16, 16), min_foreground=0.0), 2)
    augmented = PatchSampler([volume], DataConfig(patch_size=(16, 16), min_foreground=0.0, augment=True), 2)
    a, label_a = augmented.sample(8, torch.Generator().manual_seed(0))
    b, _ = augmented.sample(8, torch.Generator().manual_seed(0))
    p, _ = plain.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, p)
    rows_rising = [bool(x[0, 1, 0] > x[0, 0, 0]) for x in a]
    assert any(rows_rising) and not all(rows_rising)  # some patches flipped along x, some not
    for x, label in zip(a, label_a, strict=True):  # labels followed the flips: label 1 on the brighter voxels
        if label.any() and not label.all():
            assert x[label > 0].min() > x[label == 0].max()


@pytest.mark.parametrize("job", ["denoise", "generate"])
def test_torchrun_two_processes_follow_the_one_process_trajectory(tmp_path, job):
    """DDP on CPU (gloo): 2 ranks x batch 2 take the steps 1 process x batch 4 takes, and resume."""
    path = tiny_config(tmp_path, job, train={"batch_size": 2, "steps": 4, "log_every": 1, "checkpoint_every": 2,
                                             "warmup_steps": 0, "lr_schedule": "constant"})
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m",
              "medsynth", "train", str(path), "--device", "cpu", "--out", str(tmp_path / "ddp")]
    done = subprocess.run([*launch, "--set", "train.steps=2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([*launch, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    Trainer(load_experiment(path, ["train.batch_size=4"]), tmp_path / "single", device="cpu", progress=False).fit()
    ddp, single = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["step"] for r in ddp] == ["1", "2", "3", "4"]
    for key in ("loss", "grad_norm"):  # float sums in another order: equal to rounding, not bitwise
        assert np.allclose([float(r[key]) for r in ddp], [float(r[key]) for r in single], rtol=1e-4), key
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["processes"] == 2
    a = load_file(tmp_path / "ddp" / "checkpoints" / "step_0000004" / "model.safetensors")
    b = load_file(tmp_path / "single" / "checkpoints" / "step_0000004" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4  # Adam moves weights by up to ~8e-4 here


