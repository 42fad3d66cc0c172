"""``medsynth compare`` and ``medsynth demo`` end to end with tiny models on the bundled MNI152 slices."""

from __future__ import annotations

import json

import pytest
import yaml

from medsynth.config import from_dict
from medsynth.errors import MedsynthError
from medsynth.validation.compare import CompareConfig, _experiments, compare
from medsynth.validation.demo import DEMO
from tests.cli.test_cli import error_line, run
from tests.training.test_trainer import TINY_GAN, TINY_MODEL, TINY_TRAIN

TINY = {"samples": {"per_label": 2, "batch_size": 32}, "features": {"steps": 2},
        "utility": {"seeds": [0], "fractions": [0.1, 1.0], "steps": 1}}


def experiment(family: str) -> dict:
    return {"job": {"name": "generate", "num_classes": 3}, "family": family, "spatial_dims": 2,
            "data": {"patch_size": [32, 32]},
            "model": TINY_GAN if family == "gan" else TINY_MODEL, "train": {**TINY_TRAIN, "steps": 2}}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    (root / "gan.yaml").write_text(yaml.safe_dump(experiment("gan")))
    config = {"description": "tiny", "experiments": {"diffusion": experiment("diffusion"), "gan": "gan.yaml"}, **TINY}
    (root / "compare.yaml").write_text(yaml.safe_dump(config))
    result = run("compare", root / "compare.yaml", "--out", root / "report", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return root


def test_compare_trains_both_families_and_writes_the_report(compared):
    report_dir = compared / "report"
    report = json.loads((report_dir / "metrics.json").read_text())
    assert list(report["models"]) == ["diffusion", "gan"]
    assert report["data"]["held_out_slices"] >= 10 and report["data"]["slice_shape"] == [99, 117]
    for name, metrics in report["models"].items():
        assert metrics["n_synthetic"] == 2 * report["data"]["held_out_slices"]
        assert metrics["train_steps"] == 2 and metrics["images_per_second"] > 0
        assert 0 <= metrics["ms_ssim_within_condition"] <= 1
        assert metrics["memorization"]["n_synthetic"] == report["data"]["train_slices"]
        assert (report_dir / "runs" / name / "checkpoints" / "latest").exists()
    utility = report["utility"]["conditions"]
    assert set(utility) == {"real only", "diffusion", "gan"} and set(utility["gan"]) == {"0.1", "1"}
    assert utility["gan"]["1"]["synthetic"] == report["data"]["train_slices"]
    for figure in ("samples", "metrics_table", "dice", "loss_curves", "nearest_pairs"):
        assert (report_dir / "figures" / f"{figure}.png").stat().st_size > 5000
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "not either family's ceiling" in page
    assert "trained locally" in page and "Memorization" in page


def test_compare_takes_finished_runs_and_checks_them(compared, tmp_path):
    runs = compared / "report" / "runs"
    config = compared / "compare.yaml"
    result = run("compare", config, "--out", tmp_path / "again", "--runs", f"diffusion={runs / 'diffusion'}",
                 "--runs", f"gan={runs / 'gan'}", "--set", "utility.fractions=[1.0]", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "again" / "runs").exists()  # nothing retrained
    result = run("compare", config, "--out", tmp_path / "x", "--runs", f"unet={runs / 'gan'}")
    assert result.exit_code == 1 and "unet is not an experiment" in error_line(result)
    result = run("compare", config, "--out", tmp_path / "x", "--runs", "gan")
    assert result.exit_code == 1 and "expected NAME=RUN_DIR" in error_line(result)
    result = run("compare", config, "--out", tmp_path / "x", "--runs", f"gan={runs / 'gan'}",
                 "--set", 'overrides=["data.test=[0.7, 0.8]"]')
    assert result.exit_code == 1 and "another held-out split" in error_line(result)


def test_compare_rejects_what_it_cannot_measure(tmp_path):
    denoise = {**experiment("gan"), "job": {"name": "denoise"}}
    with pytest.raises(MedsynthError, match="experiments.gan: compare measures label-conditioned 2D generate"):
        compare(from_dict(CompareConfig, {"experiments": {"gan": denoise}}), tmp_path / "out")
    other_split = {**experiment("gan"), "data": {"patch_size": [32, 32], "test": [0.7, 0.8]}}
    with pytest.raises(MedsynthError, match="every model must be trained and measured on the same split"):
        compare(from_dict(CompareConfig, {"experiments": {"a": experiment("gan"), "b": other_split}}), tmp_path / "o")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_demo_config_is_valid_and_sized_for_a_cpu():
    experiments = _experiments(from_dict(CompareConfig, DEMO))
    assert {e.family for e in experiments.values()} == {"diffusion", "gan"}
    assert all(e.train.steps <= 650 and e.train.batch_size == 8 for e in experiments.values())
    assert DEMO["experiments"]["diffusion"]["train"]["steps"] == 650  # not mutated by overrides elsewhere
