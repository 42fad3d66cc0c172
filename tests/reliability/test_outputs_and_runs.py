"""Nothing a command writes can reach its input, two processes cannot share a run, and no log or manifest
is left half-written (the data-loss and run-directory cases of the second reliability pass)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, write_nifti
from medsynth.io.files import folder_lock, strict_json, write_datalist, write_json
from medsynth.synthesis import outputs
from medsynth.training import RunDirectory, load_experiment
from medsynth.training.experiment import experiment_to_dict
from tests.cli.test_cli import error_line, run
from tests.reliability import write_axial_slices
from tests.reliability.test_disk_full import one_error_line, run_limited
from tests.synthesis.test_augment import train_tiny
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN

MEDSYNTH = [sys.executable, "-m", "medsynth"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"denoise": train_tiny(folder, "denoise", family="gan"), "generate": train_tiny(folder, family="gan")}


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (symlinks not followed) with the SHA-256 of its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def small_volume(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_nifti(MedicalImage((rng.random((20, 20, 6)) * 500).astype(np.float32), np.eye(4), {"modality": "MR"}), path)
    return path


# data loss -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["denoise", "augment", "convert", "validate", "train"])
def test_an_output_that_contains_the_input_is_refused_and_the_input_is_untouched(tmp_path, models, mni, command):
    images, labels = write_axial_slices(tmp_path / "ovl", mni, [40, 45, 50])
    before = fingerprint(tmp_path / "ovl")
    out = tmp_path / "ovl"
    args = {
        "denoise": ["denoise", images, out, "--model", models["denoise"], "--device", "cpu"],
        "augment": ["augment", images, out, "--model", models["generate"], "--labels", labels, "--device", "cpu"],
        "convert": ["convert", images, out],
        "validate": ["validate", images, images, "--out", out, "--feature-steps", "1", "--device", "cpu"],
        "train": ["train", Path(__file__).parents[2] / "configs" / "denoise_2d_gan.yaml", "--data", images, "--out",
                  out, "--device", "cpu"],
    }[command]
    result = run(*args)
    assert result.exit_code == 1
    assert "contains the input" in error_line(result) or "inside the input" in error_line(result)
    assert fingerprint(tmp_path / "ovl") == before


def test_an_output_inside_the_input_is_refused(tmp_path, models, mni):
    images, _ = write_axial_slices(tmp_path, mni, [40, 45])
    before = fingerprint(images)
    result = run("denoise", images, images / "den", "--model", models["denoise"], "--device", "cpu")
    assert result.exit_code == 1 and "inside the input" in error_line(result)
    assert fingerprint(images) == before and not (images / "den").exists()


def test_a_symlink_in_the_output_is_never_written_through(tmp_path, models):
    small_volume(tmp_path / "in2" / "sub" / "x.nii.gz")
    before = fingerprint(tmp_path / "in2")
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "sub").symlink_to(tmp_path / "in2" / "sub")
    result = run("denoise", tmp_path / "in2", tmp_path / "out2", "--model", models["denoise"], "--device", "cpu")
    assert result.exit_code == 1 and "a symlink out of" in error_line(result)
    assert fingerprint(tmp_path / "in2") == before


def test_a_symlinked_images_folder_in_an_augment_output_is_not_followed(tmp_path, models, mni):
    images, labels = write_axial_slices(tmp_path, mni, [40, 45])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "aug").mkdir()
    (tmp_path / "aug" / "images").symlink_to(elsewhere)
    result = run("augment", images, tmp_path / "aug", "--model", models["generate"], "--labels", labels,
                 "--device", "cpu")
    assert result.exit_code == 1 and "a symlink out of" in error_line(result)
    assert not list(elsewhere.iterdir())


def test_inputs_sharing_a_name_get_distinct_outputs(tmp_path, models):
    small_volume(tmp_path / "in" / "scan.nii", seed=1)
    small_volume(tmp_path / "in" / "scan.nii.gz", seed=2)
    result = run("denoise", tmp_path / "in", tmp_path / "out", "--model", models["denoise"], "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["scan.nii.gz", "scan_2.nii.gz"] and "same output name" in result.stderr
    assert result.stdout.count("wrote") == 2


def test_a_nifti_output_name_for_a_folder_input_is_refused(tmp_path, models):
    small_volume(tmp_path / "in" / "a.nii.gz")
    result = run("denoise", tmp_path / "in", tmp_path / "den.nii.gz", "--model", models["denoise"], "--device", "cpu")
    assert result.exit_code == 1 and "give an output folder" in error_line(result)
    assert not (tmp_path / "den.nii.gz").exists()


def test_labels_kept_inside_the_images_folder_are_not_read_as_images(tmp_path, models, mni):
    images, _ = write_axial_slices(tmp_path / "sample", mni, [40, 45])
    (tmp_path / "sample" / "lab").rename(images / "labels")
    result = run("augment", images, tmp_path / "aug", "--model", models["generate"], "--labels", images / "labels",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "aug" / "images").iterdir()) == ["s0_syn000.nii.gz", "s1_syn000.nii.gz"]
    converted = run("convert", images, tmp_path / "conv", "--labels", images / "labels")
    assert converted.exit_code == 0, converted.stderr
    assert sorted(p.name for p in (tmp_path / "conv" / "images").iterdir()) == ["s0.nii.gz", "s1.nii.gz"]



@pytest.mark.parametrize("command", ["convert", "denoise", "augment", "train"])
def test_a_labels_folder_inside_the_input_is_never_read_as_images(tmp_path, models, command):
    data = tmp_path / "sample"  # the layout of `medsynth sample-data`: images/ and labels/ side by side
    small_volume(data / "images" / "a.nii.gz")
    write_nifti(MedicalImage(np.ones((20, 20, 6), np.uint8), np.eye(4), {}), data / "labels" / "a.nii.gz")
    before = fingerprint(data)
    out = tmp_path / "out"
    options = {"convert": [], "denoise": ["--model", models["denoise"]], "augment": ["--model", models["generate"]],
               "train": []}[command]
    if command == "train":
        result = run("train", tiny_config(tmp_path, 1), "--data", data, "--out", out, "--device", "cpu")
    else:
        result = run(command, data, out, *options, "--device", "cpu") if command != "convert" else \
            run("convert", data, out)
    line = error_line(result)
    assert result.exit_code == 1 and str(data / "labels") in line and "--labels" in line
    assert not out.exists() and fingerprint(data) == before

# run directories ----------------------------------------------------------------------------------

def tiny_config(tmp_path: Path, steps: int, **train) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "data": {"patch_size": [16, 16]}, "model": TINY_MODEL,
                                    "train": {**TINY_TRAIN, "steps": steps, **train}}))
    return path


def test_two_trainings_into_one_run_directory_at_once_leave_one_clean_run(tmp_path):
    config = tiny_config(tmp_path, 12, log_every=1, checkpoint_every=4)
    command = MEDSYNTH + ["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "Traceback" not in refused and ("in use" in refused or "not empty" in refused)
    steps = [row["step"] for row in RunDirectory(tmp_path / "run").read_log()]
    assert steps == list(range(1, 13))
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)  # the run is whole: resume works
    assert resumed.returncode == 0, resumed.stderr


def test_a_held_run_directory_is_refused_and_released_by_sigkill(tmp_path):
    config = tiny_config(tmp_path, 2)
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from medsynth.io.files import folder_lock\n"
        f"with folder_lock({str(run_dir)!r}, 'run directory'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    refused = run("train", config, "--out", run_dir, "--device", "cpu")
    assert refused.exit_code == 1 and "is in use by process" in error_line(refused)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    trained = run("train", config, "--out", run_dir, "--device", "cpu")  # the kernel dropped the dead holder's lock
    assert trained.exit_code == 0, trained.stderr


def test_a_held_augment_output_is_refused(tmp_path, models, mni):
    images, labels = write_axial_slices(tmp_path, mni, [40])
    with folder_lock(tmp_path / "aug", "output folder"):
        result = run("augment", images, tmp_path / "aug", "--model", models["generate"], "--labels", labels,
                     "--device", "cpu")
    assert result.exit_code == 1 and "in use" in error_line(result)


def test_a_full_disk_while_logging_is_one_error_line_and_resume_repeats_no_step(tmp_path):
    config = tiny_config(tmp_path, 40, log_every=1, checkpoint_every=1000, sample_every=1000)
    resolved = yaml.safe_dump(experiment_to_dict(load_experiment(config)), sort_keys=False)
    command = MEDSYNTH + ["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]
    full = run_limited(command, len(resolved.encode()) + 600)  # the config fits, the log outgrows it
    assert full.returncode == 1
    assert "cannot append to the log" in one_error_line(full.stderr) and "File too large" in full.stderr
    text = (tmp_path / "run" / "log.csv").read_text()
    assert text.endswith("\n")  # no half row
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["step"] for row in RunDirectory(tmp_path / "run").read_log()] == list(range(1, 41))


def test_resume_trims_the_log_to_the_checkpoint_and_drops_a_cut_row(tmp_path):
    run_dir = RunDirectory(tmp_path / "r")
    run_dir.path.mkdir()
    lines = ["step,loss,lr,seconds"] + [f"{k},0.5,0.001,{k}" for k in range(1, 9)] + ["step,loss,lr,seconds", "9,0.4"]
    run_dir.log_path.write_text("\n".join(lines))
    run_dir.truncate_log(5)
    assert [row["step"] for row in run_dir.read_log()] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("pointer, message", [
    (b"\xff\xfe\x00bad", "does not name a checkpoint"),
    (b"../../other_run/checkpoints/step_0000002\n", "does not name a checkpoint"),
    (b"step_0000002/../../../other", "does not name a checkpoint"),
    (b"step_0000009\n", "missing checkpoint"),
])
def test_a_tampered_latest_pointer_is_refused(tmp_path, models, pointer, message):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    (tmp_path / "other_run").mkdir()
    shutil.copytree(models["denoise"] / "checkpoints", tmp_path / "other_run" / "checkpoints")
    (run_dir / "checkpoints" / "latest").write_bytes(pointer)
    small_volume(tmp_path / "in" / "a.nii.gz")
    result = run("denoise", tmp_path / "in", tmp_path / "out", "--model", run_dir, "--device", "cpu")
    assert result.exit_code == 1 and message in error_line(result)


def test_a_checkpoint_folder_that_is_a_symlink_is_refused(tmp_path, models):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    latest = RunDirectory(run_dir).latest_checkpoint()
    shutil.move(latest, tmp_path / "moved")
    latest.symlink_to(tmp_path / "moved")
    with pytest.raises(MedsynthError, match="missing checkpoint"):
        RunDirectory(run_dir).latest_checkpoint()


@pytest.mark.parametrize("edit", ["job", "family", "garbage", "not_a_mapping"])
def test_an_edited_run_config_is_a_clear_error(tmp_path, models, edit):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    if edit == "job":
        data["job"]["name"] = "generate"
    elif edit == "family":
        data["family"] = "diffusion"
    elif edit == "garbage":
        data["model"]["channels"] = "lots"
    text = "[1, 2]" if edit == "not_a_mapping" else yaml.safe_dump(data)
    (run_dir / "config.yaml").write_text(text)
    small_volume(tmp_path / "in" / "a.nii.gz")
    result = run("denoise", tmp_path / "in", tmp_path / "out", "--model", run_dir, "--device", "cpu")
    assert result.exit_code == 1 and str(run_dir) in error_line(result)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))


# command-line numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("command, option, value", [
    ("denoise", "--batch-size", "0"), ("denoise", "--batch-size", "-1"), ("denoise", "--steps", "-3"),
    ("super-resolve", "--factor", "0"), ("super-resolve", "--factor", "-2"), ("super-resolve", "--factor", "100000"),
    ("augment", "--per-image", "1000000000"), ("augment", "--batch-size", "0"), ("augment", "--count", "-1"),
    ("augment", "--copy-threshold", "nan"), ("augment", "--copy-threshold", "inf"),
])
def test_absurd_command_line_numbers_are_refused(tmp_path, models, mni, command, option, value):
    images, labels = write_axial_slices(tmp_path, mni, [40])
    model = models["generate" if command == "augment" else "denoise"]
    args = [command, images, tmp_path / "out", "--model", model, "--device", "cpu", option, value]
    if command == "augment":
        args += ["--labels", labels] + (["--reject-copies"] if option == "--copy-threshold" else [])
    started = time.perf_counter()
    result = run(*args)
    assert result.exit_code == 1 and option in error_line(result)
    assert time.perf_counter() - started < 30 and not list(tmp_path.glob("out/**/*.nii.gz"))


def test_count_with_a_label_conditioned_model_is_refused(tmp_path, models, mni):
    images, labels = write_axial_slices(tmp_path, mni, [40])
    result = run("augment", images, tmp_path / "out", "--model", models["generate"], "--labels", labels, "--count",
                 "3", "--device", "cpu")
    assert result.exit_code == 1 and "--count applies to unconditional models" in error_line(result)


# file names and the manifest ----------------------------------------------------------------------

def test_file_names_that_are_not_utf8_work_end_to_end(tmp_path, models, mni):
    images, labels = write_axial_slices(tmp_path, mni, [40, 45])
    for folder in (images, labels):
        os.rename(os.fsencode(folder / "s0.nii"), os.fsencode(folder) + b"/caf\xe9.nii")
    command = MEDSYNTH + ["augment", str(images), str(tmp_path / "aug"), "--model", str(models["generate"]),
                          "--labels", str(labels), "--device", "cpu"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    rows = outputs.read_csv_rows(tmp_path / "aug" / "manifest.csv")
    assert len(rows) == 2 and any("caf\ufffd.nii" in row["source"] for row in rows)
    assert len(json.loads((tmp_path / "aug" / "dataset.json").read_text())["training"]) == 2
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "2 of 2 outputs already done" in again.stderr
    denoised = subprocess.run(MEDSYNTH + ["denoise", str(images), str(tmp_path / "den"), "--model",
                                          str(models["denoise"]), "--device", "cpu"], capture_output=True, text=True)
    assert denoised.returncode == 0 and denoised.stdout.count("wrote") == 2, denoised.stderr


def test_the_manifest_is_appended_not_rewritten_per_output(tmp_path, monkeypatch):
    record = outputs.OutputRecord(tmp_path, {"seed": 0}, lambda entries: write_datalist(tmp_path, entries, "test"))
    rewrites = []
    original = outputs.atomic_path
    monkeypatch.setattr(outputs, "atomic_path", lambda path: rewrites.append(path) or original(path))
    (tmp_path / "images").mkdir()
    for k in range(300):
        (tmp_path / "images" / f"x{k:03d}.nii.gz").write_bytes(b"")
        record.add({"output": f"images/x{k:03d}.nii.gz", "seed": k})
    assert rewrites == []  # each output costs one appended line, whatever the count
    record.finish()
    assert len(outputs.read_csv_rows(tmp_path / "manifest.csv")) == 300
    assert len(json.loads((tmp_path / "dataset.json").read_text())["training"]) == 300


def test_a_manifest_cut_mid_row_is_read_without_the_cut_row(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.nii.gz").write_bytes(b"")
    header = ",".join(outputs.COLUMNS)
    (tmp_path / "manifest.csv").write_text(f"{header}\nimages/a.nii.gz,,src,m,gan,generate,1,gan,1,0.1\nimages/b.ni")
    record = outputs.OutputRecord(tmp_path, {"seed": 0}, lambda entries: write_datalist(tmp_path, entries, "test"))
    assert record.done("images/a.nii.gz") and not record.done("images/b.nii.gz")


def test_finishing_deletes_the_temporaries_of_a_killed_run_and_nothing_else(tmp_path):
    (tmp_path / "images").mkdir()
    leftover = tmp_path / "images" / ".s1_syn000.nii.gz.tmp-ov4pp3xa.nii.gz"  # a kill between write and rename
    leftover.write_bytes(b"half")
    kept = [tmp_path / "images" / "a.nii.gz", tmp_path / "images" / ".hidden", tmp_path / "notes.tmp-1"]
    for path in kept:
        path.write_bytes(b"")
    record = outputs.OutputRecord(tmp_path, {"seed": 0}, lambda entries: write_datalist(tmp_path, entries, "test"))
    record.add({"output": "images/a.nii.gz", "seed": 0})
    record.finish()
    assert not leftover.exists() and all(p.exists() for p in kept)


def test_metrics_json_is_strict(tmp_path):
    write_json(tmp_path / "m.json", {"fid": math.nan, "kid": [math.inf, 1.0], "n": 3})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "fid": None, "kid": [None, 1.0], "n": 3}
    assert strict_json({"a": (1.0, -math.inf)}) == {"a": [1.0, None]}



# found by the red-team pass of this change ---------------------------------------------------------

def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path, models, mni):
    images, labels = write_axial_slices(tmp_path, mni, [40])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "aug").mkdir()
    (tmp_path / "aug" / ".medsynth.lock").symlink_to(victim)
    result = run("augment", images, tmp_path / "aug", "--model", models["generate"], "--labels", labels,
                 "--device", "cpu")
    assert result.exit_code == 1 and ".medsynth.lock" in error_line(result)
    assert victim.read_text() == "precious"


def test_a_symlink_loop_as_output_is_one_error_line(tmp_path, models):
    small_volume(tmp_path / "in" / "a.nii.gz")
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    for args in (["convert", tmp_path / "in", tmp_path / "loopA"], ["convert", tmp_path / "loopA", tmp_path / "o"],
                 ["denoise", tmp_path / "in", tmp_path / "loopA", "--model", models["denoise"], "--device", "cpu"]):
        result = run(*args)
        assert result.exit_code == 1 and "loopA" in error_line(result), result.stderr


@pytest.mark.parametrize("planted", ["checkpoints", "samples"])
def test_a_run_directory_whose_folders_lead_elsewhere_is_refused(tmp_path, models, planted):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    outside = tmp_path / "outside"
    shutil.move(run_dir / planted, outside)
    (run_dir / planted).symlink_to(outside)
    before = fingerprint(outside)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(config))
    result = run("train", tmp_path / "same.yaml", "--out", run_dir, "--resume", "--device", "cpu", "--set",
                 f"train.steps={config['train']['steps'] + 1}")
    assert result.exit_code == 1 and "a symlink out of" in error_line(result)
    assert fingerprint(outside) == before  # nothing written there, no old checkpoint pruned there


def test_a_fifo_planted_as_the_log_is_refused_without_blocking(tmp_path, models):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    (run_dir / "log.csv").unlink()
    os.mkfifo(run_dir / "log.csv")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(config))
    command = MEDSYNTH + ["train", str(tmp_path / "same.yaml"), "--out", str(run_dir), "--resume", "--device", "cpu",
                          "--set", f"train.steps={config['train']['steps'] + 1}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "log.csv: not a regular file (a FIFO)" in one_error_line(result.stderr)


def test_resume_to_fewer_steps_than_the_checkpoint_is_refused(tmp_path, models):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(models["denoise"], run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(config))
    result = run("train", tmp_path / "same.yaml", "--out", run_dir, "--resume", "--device", "cpu", "--set",
                 "train.steps=1")
    assert result.exit_code == 1 and "would go back" in error_line(result)


def test_two_restorations_into_one_folder_are_refused(tmp_path, models):
    small_volume(tmp_path / "in" / "a.nii.gz")
    with folder_lock(tmp_path / "out", "output folder"):
        result = run("denoise", tmp_path / "in", tmp_path / "out", "--model", models["denoise"], "--device", "cpu")
    assert result.exit_code == 1 and "in use" in error_line(result)


def test_sample_data_into_a_folder_linking_elsewhere_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images").symlink_to(tmp_path / "elsewhere")
    result = run("sample-data", tmp_path / "out")
    assert result.exit_code == 1 and "a symlink out of" in error_line(result)
    assert not list((tmp_path / "elsewhere").iterdir())


def test_error_lines_stay_one_line_whatever_the_file_name():
    from medsynth.cli.common import one_line

    assert one_line("bad/in\nx: caf" + os.fsdecode(b"\xe9")) == "bad/in\\nx: caf\ufffd"
