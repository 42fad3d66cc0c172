"""The rules of benchmarks/restoration.py that keep test numbers honest: choices come from
validation records only, test refuses a config that runs other settings than validation chose, a
score is never taken twice, and sampling settings do not force a retrain."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from benchmarks import restoration
from medsynth.errors import MedsynthError
from medsynth.training import RunDirectory, load_experiment
from medsynth.training.experiment import experiment_to_dict
from medsynth.validation.provenance import config_hash

CONFIG = restoration.CONFIGS / "denoise_2d_diffusion.yaml"


def _record(folder, method, seed, psnr, kind="model", **extra):
    record = {"job": "denoise", "dims": 2, "part": "validation", "seed": seed, "method": method,
              "condition": "sigma_0.05", "kind": kind, "scores": {"psnr": psnr, "ssim": [0.9] * len(psnr)},
              "provenance": {"config_hash": "x"}, **extra}
    return restoration.write_record(record, folder)


def test_sampling_settings_do_not_change_what_a_run_learns(tmp_path):
    base = load_experiment(CONFIG)
    run = RunDirectory(tmp_path / "run")
    run.write_config(base)
    resampled = load_experiment(CONFIG, ["model.num_inference_steps=10", "model.ensemble=1", "job.flip_ensemble=true",
                                         "description=reworded"])
    reused = run.continued_config(resampled, may_differ=restoration.NOT_LEARNT)
    assert experiment_to_dict(reused) == experiment_to_dict(base)  # the run's own config is what it trains
    with pytest.raises(MedsynthError, match="model.num_inference_steps"):  # a plain resume refuses them
        run.continued_config(resampled)
    with pytest.raises(MedsynthError, match="in train.lr;"):
        run.continued_config(load_experiment(CONFIG, ["train.lr=0.5"]), may_differ=restoration.NOT_LEARNT)
    # ... but a record names the settings it ran with
    assert config_hash(restoration._resolved(resampled)) != config_hash(restoration._resolved(base))


def test_choices_are_the_best_mean_psnr_among_settings_scored_on_every_seed(tmp_path):
    for seed in (0, 1):
        _record(tmp_path, "diffusion[ddim-2x4]", seed, [30.0, 30.0], options={"num_inference_steps": 2})
        _record(tmp_path, "diffusion[ddim-10x4]", seed, [29.0, 29.5], options={"num_inference_steps": 10})
        _record(tmp_path, "nlm[h=0.8]", seed, [28.0], kind="baseline", params={"h": 0.8})
        _record(tmp_path, "nlm[h=1.0]", seed, [28.5], kind="baseline", params={"h": 1.0})
    _record(tmp_path, "diffusion[ddim-5x1]", 1, [35.0], options={"num_inference_steps": 5})  # one seed only
    _record(tmp_path, "diffusion", 0, [40.0])  # the config's default is not a candidate: it has no name
    baseline, sampling = restoration.choose("denoise", 2, tmp_path)
    assert baseline == {"nlm": {"h": 1.0}}
    assert sampling == {"diffusion": {"setting": "ddim-2x4", "options": {"num_inference_steps": 2}}}
    saved = restoration.choices("denoise", 2, tmp_path, "sampling")
    assert saved["diffusion"]["setting"] == "ddim-2x4" and "rule" in saved


def test_test_part_refuses_settings_other_than_the_chosen_ones():
    config = load_experiment(CONFIG)
    shipped = restoration.shipped_options(config)
    agreeing = {"diffusion": {"setting": "s", "options": {"num_inference_steps": shipped["num_inference_steps"]}}}
    restoration.check_chosen(config, "diffusion", agreeing, CONFIG.name)
    other = {"diffusion": {"setting": "s", "options": {"num_inference_steps": shipped["num_inference_steps"] + 1}}}
    with pytest.raises(SystemExit, match="validation chose"):
        restoration.check_chosen(config, "diffusion", other, CONFIG.name)
    with pytest.raises(SystemExit, match="no sampling settings chosen"):
        restoration.check_chosen(config, "diffusion", {}, CONFIG.name)


def test_a_score_is_kept_unless_its_config_changed(tmp_path):
    path = _record(tmp_path, "gan", 0, [30.0])
    assert restoration.scored(path) and restoration.scored(path, "x")
    assert not restoration.scored(path, "another config")
    assert not restoration.scored(tmp_path / "validation" / "missing.json")
    assert json.loads(path.read_text())["method"] == "gan"


def test_example_pictures_are_saved_and_shown_in_method_order(tmp_path):
    from benchmarks import results_doc

    volume = np.random.default_rng(0).random((20, 24, 30)).astype(np.float32)
    for method in ("gan", "clean", "nlm", "noisy", "diffusion"):
        path = restoration.save_example(volume, slice(10, 20), "denoise", 2, "sigma_0.05", method, tmp_path)
        assert path.stat().st_size > 0
    section = restoration.save_example(volume, slice(10, 20), "super_resolve", 2, "x2", "cubic", tmp_path)
    assert plt.imread(section).shape[:2] == (30, 20)  # coronal: 10 slab slices, stretched 3x, by X
    row = results_doc.example_row("denoise", 2, "sigma_0.05", folder=tmp_path)
    assert row[1] == "| clean | noisy | nlm | diffusion | gan |"


def test_validation_compares_the_configs_own_sampling_setting_by_name():
    own = {"sampler": "ddim", "num_inference_steps": 5, "ensemble": 8, "flips": False}
    names = [name for name, _ in restoration.sweep_settings("diffusion", 2, own)]
    assert "ddim-5x8" in names and "ddim-2x4" in names and len(names) == len(set(names))
    already = {**own, "ensemble": 4}  # in the grid: not twice
    assert [name for name, _ in restoration.sweep_settings("diffusion", 3, already)].count("ddim-5x4") == 1
    assert [name for name, _ in restoration.sweep_settings("gan", 2, {"flips": True})] == ["flips-on", "flips-off"]


def test_choices_pool_every_condition(tmp_path):
    for condition, (a, b) in {"x2": (30.0, 29.0), "x4": (20.0, 20.5)}.items():  # mean: a 25.0, b 24.75
        for method, psnr in (("gan[flips-on]", a), ("gan[flips-off]", b)):
            path = _record(tmp_path, method, 0, [psnr], options={"flips": "on" in method})
            record = json.loads(path.read_text())
            restoration.write_record({**record, "condition": condition}, tmp_path)
            path.unlink()
    assert restoration.choose("denoise", 2, tmp_path)[1]["gan"]["setting"] == "flips-on"
