"""``medsynth compare`` and ``medsynth demo`` end to end with tiny models on the bundled MNI152 slices.

One tiny run exercises every metric path of issue #24: unpaired KID/FID in three feature spaces and
their agreement, diversity and the collapse flag, calibrated memorization in two spaces, label
fidelity, the utility study with generators per real fraction and both baseline arms, the costs,
the headline records and the verdicts.
"""

from __future__ import annotations

import json

import pytest
import yaml

from medsynth.config import from_dict
from medsynth.errors import MedsynthError
from medsynth.training import RunDirectory
from medsynth.validation.compare import CompareConfig, _experiments, compare
from medsynth.validation.compare_measure import budget
from medsynth.validation.demo import DEMO, DEMO_SEEDS
from tests.cli.test_cli import error_line, run
from tests.training.test_trainer import TINY_GAN, TINY_MODEL, TINY_TRAIN

TINY = {"samples": {"per_label": 2, "batch_size": 32, "diversity_conditions": 3}, "features": {"steps": 2},
        "utility": {"seeds": [0], "fractions": [0.1, 1.0], "steps": 1}}
ARMS = {"real only", "classical augmentation", "domain randomisation", "diffusion", "gan"}


def experiment(family: str) -> dict:
    return {"job": {"name": "generate", "num_classes": 3}, "family": family, "spatial_dims": 2,
            "data": {"patch_size": [32, 32]},
            "model": ({**TINY_GAN} if family == "gan" else {**TINY_MODEL, "guidance_scale": 1.5,
                                                            "condition_dropout": 0.1}),
            "train": {**TINY_TRAIN, "steps": 2}}


def interval(record: dict) -> bool:
    low, high = record["ci95"]
    return set(record) >= {"value", "ci95"} and low <= record["value"] <= high


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    (root / "gan.yaml").write_text(yaml.safe_dump(experiment("gan")))
    config = {"description": "tiny", "experiments": {"diffusion": experiment("diffusion"), "gan": "gan.yaml"}, **TINY}
    (root / "compare.yaml").write_text(yaml.safe_dump(config))
    result = run("compare", root / "compare.yaml", "--out", root / "report", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return root


def test_compare_trains_a_generator_per_fraction_on_the_segmenters_slices(compared):
    report_dir = compared / "report"
    report = json.loads((report_dir / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    data = report["data"]
    assert list(report["models"]) == ["diffusion", "gan"] and data["slice_shape"] == [99, 117]
    assert data["held_out_slices"] >= 10 and data["fractions"] == {"0.1": 3, "1": data["train_slices"]}
    for name in ("diffusion", "gan"):
        for run_name, count in ((name, data["train_slices"]), (f"{name}@0.1", 3)):
            saved = RunDirectory(report_dir / "runs" / run_name).read_config()
            assert len(saved.data.train_slices) == count  # trained on exactly the segmenter's slices
        assert report["models"][name]["runs"]["0.1"]["trained_on_exact_subset"]
    utility = report["utility"]
    assert set(utility["arms"]) == ARMS and set(utility["arms"]["gan"]) == {"0.1", "1"}
    gan = utility["arms"]["gan"]["0.1"]
    assert gan["synthetic"] == 3 and gan["generator_trained_on"] == 3
    assert set(utility["verdicts"]) == {"0.1", "1"}
    block = report["provenance"]  # what every results record carries
    assert block["seeds"] == report["config"]["utility"]["seeds"] and len(block["config_hash"]) == 16
    assert block["cores"] >= 1 and block["packages"]["torch"] and block["seconds"] == report["seconds"]


def test_compare_reports_every_question_with_intervals(compared):
    report = json.loads((compared / "report" / "metrics.json").read_text())
    realism = report["realism"]
    assert set(realism["spaces"]) == {"trained", "random", "handcrafted"} and "agree" in realism["agreement"]
    for entry in realism["spaces"].values():
        assert entry["families"]["gan"]["fid"]["valid"] is False  # 13 held-out slices < feature dimension
        assert interval(entry["reference"]["kid"])
    models = report["models"]
    assert models["diffusion"]["network_evaluations"] == 2 * 2  # 2 DDIM steps, guidance 1.5: 2 calls a step
    assert models["gan"]["network_evaluations"] == 1
    assert models["gan"]["n_synthetic"] == report["data"]["train_slices"]  # one pair per training label map
    for model in models.values():
        assert {"features", "residuals", "flagged_by"} <= set(model["memorization"])
        assert model["diversity"]["conditions"] == 3 and isinstance(model["diversity"]["collapse"], bool)
    assert report["budget"]["ratio"] >= 1 and isinstance(report["budget"]["statement"], str)
    headline = report["headline"]
    assert set(headline) == ARMS | {"real training slices"}
    for name in ("diffusion", "gan"):
        h = headline[name]
        records = [*h["realism_kid"].values(), h["diversity_within_ms_ssim"], h["label_fidelity_dice"],
                   *h["memorization_share"].values(), h["utility"]["0.1"]["dice"],
                   h["utility"]["0.1"]["difference_vs_real_only"]]
        assert all(interval(r) for r in records)
    for arm in ("classical augmentation", "domain randomisation"):
        assert interval(headline[arm]["utility"]["1"]["difference_vs_real_only"])
    assert interval(headline["real only"]["label_fidelity_dice"])
    assert set(report["verdicts"]) == {"realism", "diversity", "memorization", "label fidelity", "utility", "costs"}
    assert "1 segmenter seed." in report["verdicts"]["utility"]


def test_compare_writes_the_report(compared):
    report_dir = compared / "report"
    figures = ("samples", "diversity", "histograms", "kid", "dice", "nearest_pairs", "loss_curves")
    for figure in figures:
        assert (report_dir / "figures" / f"{figure}.png").stat().st_size > 5000
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures) and "not either family's ceiling" in page
    for text in ("Verdicts", "Realism", "Diversity", "Memorization", "Utility", "Label fidelity",
                 "network evaluations", "grey_matter"):
        assert text in page


def test_compare_takes_finished_runs_and_checks_them(compared, tmp_path):
    runs = compared / "report" / "runs"
    config = compared / "compare.yaml"
    result = run("compare", config, "--out", tmp_path / "again", "--runs", f"diffusion={runs / 'diffusion'}",
                 "--runs", f"gan={runs / 'gan'}", "--set", "utility.fractions=[1.0]", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "again" / "runs").exists()  # nothing retrained
    report = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert report["models"]["gan"]["trained_on_exact_subset"]  # the given run lists the same slices
    result = run("compare", config, "--out", tmp_path / "x", "--runs", f"unet={runs / 'gan'}")
    assert result.exit_code == 1 and "unet is not an experiment" in error_line(result)
    result = run("compare", config, "--out", tmp_path / "x", "--runs", "gan")
    assert result.exit_code == 1 and "expected NAME=RUN_DIR" in error_line(result)
    result = run("compare", config, "--out", tmp_path / "x", "--runs", f"gan={runs / 'gan'}",
                 "--set", 'overrides=["data.test=[0.7, 0.8]"]')
    assert result.exit_code == 1 and "another held-out split" in error_line(result)


def test_a_comparison_never_reuses_a_run_of_another_config(compared, tmp_path):
    import shutil

    shutil.copytree(compared / "report", tmp_path / "report")
    result = run("compare", compared / "compare.yaml", "--out", tmp_path / "report", "--device", "cpu",
                 "--set", 'overrides=["train.lr=0.5"]')
    assert result.exit_code == 1 and "differs from the run's in train.lr" in error_line(result)


def test_compare_rejects_what_it_cannot_measure(tmp_path):
    denoise = {**experiment("gan"), "job": {"name": "denoise"}}
    with pytest.raises(MedsynthError, match="experiments.gan: compare measures label-conditioned 2D generate"):
        compare(from_dict(CompareConfig, {"experiments": {"gan": denoise}}), tmp_path / "out")
    other_split = {**experiment("gan"), "data": {"patch_size": [32, 32], "test": [0.7, 0.8]}}
    with pytest.raises(MedsynthError, match="every model must be trained and measured on the same split"):
        compare(from_dict(CompareConfig, {"experiments": {"a": experiment("gan"), "b": other_split}}), tmp_path / "o")
    chosen = {**experiment("gan"), "data": {"patch_size": [32, 32], "train_slices": [1, 2]}}
    with pytest.raises(MedsynthError, match="compare chooses each generator's training slices"):
        compare(from_dict(CompareConfig, {"experiments": {"gan": chosen}}), tmp_path / "c")
    with pytest.raises(MedsynthError, match="per_label"):
        from_dict(CompareConfig, {"samples": {"per_label": 1}})
    assert not any((tmp_path / name).exists() for name in ("out", "o", "c"))


def test_budget_states_the_ratio_outside_ten_percent():
    assert budget({"diffusion": 100.0, "gan": 105.0}).matched is True
    unmatched = budget({"diffusion": 952.0, "gan": 657.0})
    assert unmatched.matched is False and "1.45x" in unmatched.statement and unmatched.slowest == "diffusion"
    unknown = budget({"diffusion": None, "gan": 5.0})
    assert unknown.ratio is None and unknown.as_dict() == {"seconds": {"diffusion": None, "gan": 5.0}, "ratio": None,
                                                           "matched": None, "statement": unknown.statement}


def test_demo_config_is_valid_and_sized_for_a_cpu():
    experiments = _experiments(from_dict(CompareConfig, DEMO))
    assert {e.family for e in experiments.values()} == {"diffusion", "gan"}
    assert all(e.train.steps <= 650 and e.train.batch_size == 8 for e in experiments.values())
    assert DEMO["experiments"]["diffusion"]["train"]["steps"] == 650  # not mutated by overrides elsewhere
    assert DEMO_SEEDS == len(DEMO["utility"]["seeds"]) and DEMO["utility"]["fractions"] == [1.0]


def test_compare_defaults_use_five_segmenter_seeds():
    from medsynth.validation.compare_config import UtilityConfig, load_compare_config

    assert len(UtilityConfig().seeds) >= 5
    assert len(load_compare_config("configs/compare_2d.yaml").utility.seeds) >= 5


def test_a_compare_record_renders_into_the_results_page(compared):
    from benchmarks import results_doc

    report = json.loads((compared / "report" / "metrics.json").read_text())
    section = "\n".join(results_doc.comparison_section("compare_tiny", report))
    assert "`configs/compare_tiny.yaml`" in section and "KID, trained features" in section
    assert all(text in section for text in report["verdicts"].values())
    assert report["budget"]["statement"][1:] in section  # in the costs verdict, capitalised
    report.pop("provenance")
    assert "no figure is shown" in "\n".join(results_doc.comparison_section("compare_tiny", report))
