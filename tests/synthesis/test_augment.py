"""``augment`` end to end with tiny trained models: DICOM in, a MONAI-loadable dataset out."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, read_image, read_nifti, write_dicom_series, write_nifti
from medsynth.synthesis import augment
from medsynth.synthesis.labels import deform_label
from tests.training.test_trainer import TINY_GAN, TINY_MODEL, TINY_TRAIN

runner = CliRunner()


def train_tiny(folder, job="generate", family="diffusion", dims=2, **job_options):
    from medsynth.training import Trainer, load_experiment

    config = {"job": {"name": job, **job_options}, "spatial_dims": dims, "family": family,
              "data": {"patch_size": [16] * dims},
              "model": TINY_GAN if family == "gan" else TINY_MODEL, "train": {**TINY_TRAIN, "steps": 2}}
    path = folder / f"{job}_{family}_{dims}d.yaml"
    path.write_text(yaml.safe_dump(config))
    run = folder / f"run_{job}_{family}_{dims}d"
    Trainer(load_experiment(path), run, device="cpu", progress=False).fit()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return {"diffusion": train_tiny(folder), "gan": train_tiny(folder, family="gan"),
            "denoise": train_tiny(folder, "denoise")}


@pytest.fixture(scope="module")
def dicom_with_labels(tmp_path_factory, mni):
    """Two oblique-free real DICOM series (crops of MNI152, one nested) and their label maps as NIfTI."""
    root = tmp_path_factory.mktemp("real")
    image, label = mni
    for name, z, where in (("caseA", 40, "series/a"), ("caseB", 50, "nested/deeper/b")):
        crop = (slice(30, 62), slice(40, 72), slice(z, z + 6))
        affine = image.affine.copy()
        affine[:3, 3] = (image.affine @ [30, 40, z, 1])[:3]
        volume = MedicalImage(image.array[crop] * 1000, affine, {"modality": "MR"})
        write_dicom_series(volume, root / "images" / where, series_description=name, uid_seed=name)
        written = read_image(root / "images" / where)
        write_nifti(MedicalImage(label.array[crop].astype(np.uint8), written.affine), root / "labels" /
                    f"{written.name}.nii.gz")
    return root


def manifest_rows(folder):
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_augment_dicom_with_labels_gives_a_monai_dataset_on_the_source_grid(tmp_path, runs, dicom_with_labels):
    out = tmp_path / "out"
    result = runner.invoke(app, ["augment", str(dicom_with_labels / "images"), str(out), "--model",
                                 str(runs["diffusion"]), "--labels", str(dicom_with_labels / "labels"),
                                 "--per-image", "2", "--seed", "7", "--steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    datalist = load_decathlon_datalist(out / "dataset.json", data_list_key="training", base_dir=out)
    assert len(datalist) == 4
    from medsynth.io.monai_reader import MedsynthReader

    loaded = LoadImaged(["image", "label"], reader=MedsynthReader(), image_only=True)(datalist[0])
    assert loaded["image"].shape == loaded["label"].shape == (32, 32, 6)
    rows = manifest_rows(out)
    assert sorted(r["output"] for r in rows) == sorted(p.relative_to(out).as_posix() for p in out.glob("images/*"))
    assert {r["family"] for r in rows} == {"diffusion"} and {r["steps"] for r in rows} == {"2"}
    for row in rows:
        source = read_image(row["source"])
        synthetic, label = read_nifti(out / row["output"]), read_nifti(out / row["label"])
        assert np.allclose(synthetic.affine, source.affine, atol=1e-5)  # overlays the source exactly
        assert np.array_equal(label.affine, synthetic.affine)
        assert set(np.unique(label.array)) <= {0, 1, 2}
        assert np.isfinite(synthetic.array).all() and synthetic.array.std() > 0
    assert not any(p.suffix == ".csv" for p in dicom_with_labels.rglob("*"))  # input untouched


def test_dicom_output_writes_labels_as_dicom_seg_that_medsynth_and_highdicom_read_back(tmp_path, dicom_with_labels):
    import subprocess

    import highdicom

    from tests.conftest import require_tool

    model = train_tiny(tmp_path, family="gan", class_names=["background", "gray_matter", "white_matter"])
    out = tmp_path / "out"
    result = runner.invoke(app, ["augment", str(dicom_with_labels / "images"), str(out), "--model", str(model),
                                 "--labels", str(dicom_with_labels / "labels"), "--format", "dicom", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    rows = manifest_rows(out)
    assert len(rows) == 2 and all(r["label"].startswith("labels/") and r["label"].endswith(".dcm") for r in rows)
    tool = require_tool("dciodvfy")
    for row in rows:
        seg_path, series = out / row["label"], read_image(out / row["output"])
        label = read_image(seg_path)  # the SEG read back as a label map, on its image's grid
        assert np.allclose(label.affine, series.affine, atol=1e-4) and label.array.shape == series.array.shape
        assert set(np.unique(label.array)) <= {0, 1, 2} and label.array.any()
        seg = highdicom.seg.segread(seg_path)
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["gray_matter", "white_matter"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom_uid(out / row["output"])
        check = subprocess.run([tool, str(seg_path)], capture_output=True, text=True)
        assert not [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    from medsynth.training.dataset import load_volumes
    from medsynth.training.experiment import DataConfig

    # the loader of train and validate: SEG label folders pair too
    volumes = load_volumes(DataConfig(images=str(out / "images"), labels=str(out / "labels")), 2, split=False)
    assert len(volumes) == 2 and all(v.label is not None and int(v.label.max()) >= 1 for v in volumes)
    converted = runner.invoke(app, ["convert", str(out / "images"), str(tmp_path / "back"), "--labels",
                                    str(out / "labels")])  # SEGs pair with their series by reference
    assert converted.exit_code == 0, converted.stderr
    as_dicom = runner.invoke(app, ["convert", str(out / "images"), str(tmp_path / "dcm"), "--labels",
                                   str(out / "labels"), "--format", "dicom"])
    assert as_dicom.exit_code == 0, as_dicom.stderr
    nifti = json.loads((tmp_path / "back" / "dataset.json").read_text())["training"]
    dicom = json.loads((tmp_path / "dcm" / "dataset.json").read_text())["training"]
    for a, b in zip(nifti, dicom, strict=True):  # the same label maps, once as NIfTI, once as DICOM SEG
        assert b["label"].endswith(".dcm")
        np.testing.assert_array_equal(read_nifti(tmp_path / "back" / a["label"]).array,
                                      read_image(tmp_path / "dcm" / b["label"]).array)


def pydicom_uid(series_folder):
    import pydicom

    return pydicom.dcmread(next(iter(sorted(series_folder.iterdir()))), stop_before_pixels=True).SeriesInstanceUID


def test_nnunet_layout_is_a_raw_nnunet_v2_dataset_with_the_class_names(tmp_path, dicom_with_labels):
    model = train_tiny(tmp_path, family="gan", class_names=["background", "gray_matter", "white_matter"])
    out = tmp_path / "Dataset501_Synthetic"
    result = runner.invoke(app, ["augment", str(dicom_with_labels / "images"), str(out), "--model", str(model),
                                 "--labels", str(dicom_with_labels / "labels"), "--per-image", "2", "--layout",
                                 "nnunet", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    images = sorted(p.name for p in (out / "imagesTr").iterdir())
    labels = sorted(p.name for p in (out / "labelsTr").iterdir())
    assert len(images) == 4 and all(name.endswith("_0000.nii.gz") for name in images)
    assert [name.replace("_0000.nii.gz", ".nii.gz") for name in images] == labels  # one label per case
    dataset = json.loads((out / "dataset.json").read_text())
    # nnU-Net v2's dataset.json (documentation/dataset_format.md): exactly these keys for a NIfTI dataset
    assert dataset == {"channel_names": {"0": "MRI"}, "numTraining": 4, "file_ending": ".nii.gz",
                       "labels": {"background": 0, "gray_matter": 1, "white_matter": 2}}
    for name in labels:
        image, label = read_nifti(out / "imagesTr" / name.replace(".nii.gz", "_0000.nii.gz")), read_nifti(
            out / "labelsTr" / name)
        assert np.array_equal(image.affine, label.affine) and image.array.shape == label.array.shape
        assert set(np.unique(label.array)) <= set(dataset["labels"].values())
    assert {r["output"].split("/")[0] for r in manifest_rows(out)} == {"imagesTr"}


def test_convert_writes_real_pairs_in_the_nnunet_layout(tmp_path, dicom_with_labels):
    out = tmp_path / "Dataset502_Real"
    result = runner.invoke(app, ["convert", str(dicom_with_labels / "images"), str(out), "--labels",
                                 str(dicom_with_labels / "labels"), "--layout", "nnunet"])
    assert result.exit_code == 0, result.stderr
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (out / "labelsTr").iterdir())
    assert len(cases) == 2
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{case}_0000.nii.gz" for case in cases]
    assert json.loads((out / "dataset.json").read_text()) == {
        "channel_names": {"0": "MRI"}, "numTraining": 2, "file_ending": ".nii.gz",
        "labels": {"background": 0, "class_1": 1, "class_2": 2}}
    refused = runner.invoke(app, ["convert", str(dicom_with_labels / "images"), str(tmp_path / "x"), "--layout",
                                  "nnunet"])
    assert refused.exit_code == 1 and "give --labels" in refused.stderr and not (tmp_path / "x").exists()


@pytest.mark.parametrize("case, message", [("dicom", "nnU-Net reads NIfTI"),
                                           ("unconditional", "not a label-conditioned model")])
def test_nnunet_layout_refuses_what_nnunet_cannot_train_on(tmp_path, runs, dicom_with_labels, case, message):
    if case == "dicom":
        options = ["--model", str(runs["gan"]), "--labels", str(dicom_with_labels / "labels"), "--format", "dicom"]
    else:
        options = ["--model", str(train_tiny(tmp_path, family="gan", num_classes=0))]
    result = runner.invoke(app, ["augment", str(dicom_with_labels / "images"), str(tmp_path / "out"), *options,
                                 "--layout", "nnunet", "--device", "cpu"])
    assert result.exit_code == 1 and message in result.stderr and not (tmp_path / "out").exists()


def test_the_monai_datalist_names_the_classes(tmp_path, runs, dicom_with_labels):
    out = tmp_path / "out"
    result = runner.invoke(app, ["augment", str(dicom_with_labels / "images"), str(out), "--model", str(runs["gan"]),
                                 "--labels", str(dicom_with_labels / "labels"), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"0": "class_0", "1": "class_1",
                                                                        "2": "class_2"}


def test_same_seed_same_files_and_resume_redoes_only_what_is_missing(tmp_path, runs, dicom_with_labels):
    args = dict(labels=dicom_with_labels / "labels", per_image=2, seed=3, device="cpu", progress=False)
    first, second = tmp_path / "first", tmp_path / "second"
    augment(dicom_with_labels / "images", first, runs["gan"], **args)
    augment(dicom_with_labels / "images", second, runs["gan"], **args)
    for path in sorted(first.glob("*/*.nii.gz")):
        assert np.array_equal(read_nifti(path).array, read_nifti(second / path.relative_to(first)).array)
    # an interrupted run: one output lost, the manifest still listing it
    victim = sorted(second.glob("images/*.nii.gz"))[0]
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in second.glob("images/*.nii.gz")}
    augment(dicom_with_labels / "images", second, runs["gan"], **args)
    assert victim.exists() and np.array_equal(read_nifti(victim).array,
                                              read_nifti(first / victim.relative_to(second)).array)
    assert all(second.joinpath("images", name).stat().st_mtime_ns == t for name, t in before.items())
    rows = manifest_rows(second)
    assert len(rows) == 4 == len({r["output"] for r in rows})
    assert json.loads((second / "dataset.json").read_text())["numTraining"] == 4


def test_other_settings_into_the_same_folder_are_refused(tmp_path, runs, dicom_with_labels):
    args = dict(labels=dicom_with_labels / "labels", device="cpu", progress=False)
    augment(dicom_with_labels / "images", tmp_path / "o", runs["gan"], seed=1, **args)
    with pytest.raises(MedsynthError, match="other settings \\(seed\\)"):
        augment(dicom_with_labels / "images", tmp_path / "o", runs["gan"], seed=2, **args)


def test_dicom_output_is_synthetic_and_keeps_the_geometry(tmp_path, runs, dicom_with_labels):
    out = tmp_path / "dcm"
    augment(dicom_with_labels / "images", out, runs["gan"], labels=dicom_with_labels / "labels", output_format="dicom",
            device="cpu", progress=False)
    import pydicom

    rows = manifest_rows(out)
    series = out / rows[0]["output"]
    first = pydicom.dcmread(sorted(series.iterdir())[0])
    assert "DERIVED" in first.ImageType and "synthetic" in first.SeriesDescription
    assert np.allclose(read_image(series).affine, read_image(rows[0]["source"]).affine, atol=1e-4)


def test_variations_keep_the_real_label(tmp_path, runs, dicom_with_labels):
    out = tmp_path / "var"
    augment(dicom_with_labels / "images", out, runs["diffusion"], labels=dicom_with_labels / "labels", strength=0.5,
            device="cpu", progress=False)
    for row in manifest_rows(out):
        real_label = read_nifti(dicom_with_labels / "labels" / f"{read_image(row['source']).name}.nii.gz")
        assert np.array_equal(read_nifti(out / row["label"]).array, real_label.array)
        assert row["steps"] == "2"  # network evaluations: the tiny model's 2 DDIM steps over half the schedule


@pytest.mark.parametrize("case, message", [
    ("wrong_job", "trained for denoise, not generate"),
    ("no_labels", "give them with --labels"),
    ("inside_input", "inside the input"),
    ("gan_variations", "need a diffusion model"),
    ("label_values", "outside the 3 classes"),
    ("missing_model", "no such folder"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, runs, dicom_with_labels, case, message):
    images, labels, model = dicom_with_labels / "images", dicom_with_labels / "labels", runs["diffusion"]
    out, options = tmp_path / "out", {}
    if case == "wrong_job":
        model = runs["denoise"]
    elif case == "missing_model":
        model = tmp_path / "no-such-run"
    elif case == "inside_input":
        images = tmp_path / "copy"
        shutil.copytree(dicom_with_labels / "images", images)
        out = images / "out"
    elif case == "gan_variations":
        model, options = runs["gan"], {"strength": 0.5}
    elif case == "label_values":
        labels = tmp_path / "labels"
        shutil.copytree(dicom_with_labels / "labels", labels)
        path = sorted(labels.glob("*.nii.gz"))[0]
        bad = read_nifti(path)
        write_nifti(bad.with_array(np.where(bad.array > 0, 5, 0).astype(np.uint8)), path)
    args = ["augment", str(images), str(out), "--model", str(model), "--device", "cpu"]
    if case != "no_labels":
        args += ["--labels", str(labels)]
    if "strength" in options:
        args += ["--strength", str(options["strength"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not list(out.glob("images/*"))


def test_deformed_labels_keep_their_values_and_vary_with_the_seed(mni):
    label = mni[1].array
    a, b, c = deform_label(label, 1), deform_label(label, 1), deform_label(label, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert set(np.unique(a)) == {0, 1, 2} and a.shape == label.shape
    changed = float(np.mean(a != label))
    assert 0.01 < changed < 0.3  # a plausible deformation: not nothing, not a scramble
    fractions = [np.mean(a == k) / np.mean(label == k) for k in (1, 2)]
    assert all(0.8 < f < 1.25 for f in fractions)


def test_torchrun_ranks_split_the_inputs_and_rank0_merges(tmp_path, runs, dicom_with_labels):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
               "-m", "medsynth", "augment", str(dicom_with_labels / "images"), str(out), "--model", str(runs["gan"]),
               "--labels", str(dicom_with_labels / "labels"), "--per-image", "3", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = manifest_rows(out)
    assert len(rows) == 6 == len(list(out.glob("images/*.nii.gz"))) == len(list(out.glob("labels/*.nii.gz")))
    assert not list(out.glob(".manifest.*"))
    single = tmp_path / "single"
    augment(dicom_with_labels / "images", single, runs["gan"], labels=dicom_with_labels / "labels", per_image=3,
            device="cpu", progress=False)
    for path in sorted(single.glob("images/*.nii.gz")):  # the same images as one process makes (torchrun
        # runs one thread per rank: float sums in another order, so equal to rounding, not bitwise)
        assert np.allclose(read_nifti(path).array, read_nifti(out / path.relative_to(single)).array, rtol=1e-5)


def test_mixing_dataset_gives_loadimaged_items_at_the_ratio(tmp_path, runs, dicom_with_labels):
    from monai.data import DataLoader
    from monai.transforms import Compose, EnsureChannelFirstd, ResizeWithPadOrCropd

    from medsynth.synthesis import OnTheFlySynthesis, SyntheticMixDataset

    convert = runner.invoke(app, ["convert", str(dicom_with_labels / "images"), str(tmp_path / "real"), "--labels",
                                  str(dicom_with_labels / "labels")])
    assert convert.exit_code == 0, convert.stderr
    real = load_decathlon_datalist(tmp_path / "real" / "dataset.json", data_list_key="training")
    augment(dicom_with_labels / "images", tmp_path / "syn", runs["gan"], labels=dicom_with_labels / "labels",
            device="cpu", progress=False)
    from_folder = load_decathlon_datalist(tmp_path / "syn" / "dataset.json", data_list_key="training")
    on_the_fly = OnTheFlySynthesis(runs["gan"], real, seed=5)
    keys = ["image", "label"]
    transform = Compose([EnsureChannelFirstd(keys), ResizeWithPadOrCropd(keys, (32, 32, 8))])
    for synthetic in (from_folder, on_the_fly):
        dataset = SyntheticMixDataset(real, synthetic, ratio=0.5, transform=transform)
        assert len(dataset) == 4
        flags = [dataset[i]["image"].meta["synthetic"] for i in range(len(dataset))]
        assert flags == [False, False, True, True]
        real_item, fake_item = dataset[0], dataset[3]
        assert set(real_item) == set(fake_item) == {"image", "label"}
        assert real_item["image"].shape == fake_item["image"].shape == (1, 32, 32, 8)
        batch = next(iter(DataLoader(dataset, batch_size=4)))
        assert batch["image"].shape == (4, 1, 32, 32, 8) and batch["label"].shape == (4, 1, 32, 32, 8)
    assert torch_equal(on_the_fly[7]["image"], on_the_fly[7]["image"])  # item k is always the same sample
    assert not torch_equal(on_the_fly[0]["image"], on_the_fly[2]["image"])  # same real pair, another deformation
    plain = LoadImaged(["image", "label"], reader=__import__("medsynth").io.monai_reader.MedsynthReader(),
                       image_only=True)(real[0])
    mixed = SyntheticMixDataset(real, from_folder, ratio=0.0)[0]
    assert torch_equal(plain["image"], mixed["image"]) and np.allclose(plain["image"].affine, mixed["image"].affine)


def torch_equal(a, b):
    import torch

    return bool(torch.equal(a.as_tensor(), b.as_tensor()))
