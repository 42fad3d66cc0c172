from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from medsynth.config import apply_overrides, from_dict, load_yaml, to_dict
from medsynth.errors import MedsynthError
from medsynth.training.experiment import load_experiment

CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                 if not p.stem.startswith("compare"))
COMPARISONS = sorted((Path(__file__).parent.parent / "configs").glob("compare*.yaml"))


@dataclass
class Inner:
    rate: float = 0.1
    sizes: tuple[int, ...] = (1, 2)

    def validate(self) -> None:
        if self.rate < 0:
            raise ValueError("rate: must be non-negative")


@dataclass
class Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_builds_nested_dataclasses_and_round_trips():
    config = from_dict(Outer, {"name": "x", "mode": "b", "inner": {"rate": 2, "sizes": [3, 4, 5]}, "maybe": 7})
    assert config.inner.rate == 2.0 and config.inner.sizes == (3, 4, 5) and config.maybe == 7
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "inner": {"rat": 1}}, "inner.rat: unknown key"),
    ({"name": "x", "mode": "c"}, "mode: 'c' is not one of"),
    ({"name": "x", "flag": "yes"}, "flag: expected true or false"),
    ({"name": 3}, "name: expected a string"),
    ({"name": "x", "inner": {"sizes": [1, "two"]}}, r"inner.sizes\[1\]: expected an integer"),
    ({"name": "x", "inner": {"rate": -1.0}}, "inner.rate: must be non-negative"),
    ({"name": "x", "maybe": 1.5}, "maybe: expected an integer"),
    ({}, "name: required key is missing"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(MedsynthError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values():
    data = apply_overrides({"train": {"steps": 5}}, ["train.steps=10", "model.channels=[8, 16]", "name=abc"])
    assert data == {"train": {"steps": 10}, "model": {"channels": [8, 16]}, "name": "abc"}
    with pytest.raises(MedsynthError, match="key=value"):
        apply_overrides({}, ["train.steps"])


def test_extends_merges_sections_and_refuses_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("a: 1\ntrain: {steps: 5, lr: 0.1}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {steps: 7}\n")
    assert load_yaml(tmp_path / "child.yaml") == {"a": 1, "train": {"steps": 7, "lr": 0.1}}
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(MedsynthError, match="cycle"):
        load_yaml(tmp_path / "loop.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_ready_made_config_is_valid(path):
    config = load_experiment(path)
    assert config.spatial_dims in (2, 3) and config.train.steps > 0


@pytest.mark.parametrize("path", COMPARISONS, ids=lambda p: p.name)
def test_every_ready_made_comparison_names_valid_experiments(path):
    from medsynth.validation.compare import _experiments, load_compare_config

    experiments = _experiments(load_compare_config(path))
    assert {e.family for e in experiments.values()} == {"diffusion", "gan"}


def test_every_job_family_and_dimension_has_a_cpu_and_a_gpu_config():
    names = {path.stem for path in CONFIGS}
    for job in ("generate", "denoise", "super_resolve"):
        for dims in (2, 3):
            for family in ("diffusion", "gan"):
                stem = f"{job}_{dims}d_{family}"
                assert {stem, f"{stem}_full"} <= names, stem
                assert load_experiment(Path(CONFIGS[0]).parent / f"{stem}.yaml").family == family


@pytest.mark.parametrize("override, message", [
    ("train.steps=-5", "train.steps: must be at least 1"),
    ("train.batch_size=0", "train.batch_size: must be at least 1"),
    ("data.patch_size=[100000, 100000]", "data.patch_size"),
    ("model.channels=[8, 12, 16]", "model.norm_num_groups"),
    ("model.sampler=euler", "model.sampler"),
    ("family=vae", "unknown model family"),
    ("job.name=segment", "job.name"),
    ("spatial_dims=3", "a 3D config needs 3 sides"),
])
def test_absurd_values_are_refused_before_any_work(override, message):
    with pytest.raises(MedsynthError, match=message):
        load_experiment(CONFIGS[0], [override])
