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
    ("train.steps=-5", "--set train.steps=-5: must be at least 1"),
    ("train.batch_size=0", "--set train.batch_size=0: must be at least 1"),
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


@pytest.mark.parametrize("text, value", [
    ("5e-4", 5e-4), ("1e23", 1e23), ("-3E+2", -300.0), ("1.5e3", 1500.0), (".5e-2", 0.005), ("2.0e+1", 20.0),
    ("1_000e-3", 1.0), ("e5", "e5"), ("1e", "1e"), ("5e-4x", "5e-4x"), ("0x1e", 30), ("'5e-4'", "5e-4"),
])
def test_numbers_with_an_exponent_are_numbers(tmp_path, text, value):
    """YAML 1.1 reads 5e-4 as a string; --set values and config files read it as YAML 1.2 does."""
    assert apply_overrides({}, [f"x={text}"]) == {"x": value}
    (tmp_path / "c.yaml").write_text(f"x: {text}\n")
    assert load_yaml(tmp_path / "c.yaml") == {"x": value}


def test_set_learning_rate_in_exponent_form():
    assert load_experiment(CONFIGS[0], ["train.lr=5e-4"]).train.lr == 5e-4


def test_errors_blame_the_set_that_gave_the_key(tmp_path):
    with pytest.raises(MedsynthError, match=r"^--set train.step=5: unknown key \(known: steps,"):
        load_experiment(CONFIGS[0], ["train.step=5"])
    with pytest.raises(MedsynthError, match=r"^--set trian.steps=5: trian: unknown key"):
        load_experiment(CONFIGS[0], ["trian.steps=5"])
    with pytest.raises(MedsynthError, match=r"^--set train=\{step: 5\}: train.step: unknown key"):
        load_experiment(CONFIGS[0], ["train={step: 5}"])
    with pytest.raises(MedsynthError, match=r"^--set family=vae: unknown model family 'vae'"):
        load_experiment(CONFIGS[0], ["family=vae"])
    (tmp_path / "typo.yaml").write_text(f"extends: {CONFIGS[0]}\ntrain: {{step: 5}}\n")
    with pytest.raises(MedsynthError, match=r"typo.yaml: train.step: unknown key"):  # the file's own typo
        load_experiment(tmp_path / "typo.yaml", ["train.steps=3"])


@dataclass
class Numbers:
    rate: float = 0.5
    count: int = 1
    value: int | list[int] = 0
    dims: Literal[2, 3] = 2


@pytest.mark.parametrize("data, message", [
    ({"rate": float("nan")}, "rate: must be a finite number, got nan"),
    ({"rate": float("-inf")}, "rate: must be a finite number, got -inf"),
    ({"rate": 10**400}, "rate: must be a finite number"),
    ({"count": 2**63}, "count: 9223372036854775808 does not fit in 64 bits"),
    ({"dims": 2.0}, "dims: 2.0 is not one of 2, 3"),
    ({"dims": True}, "dims: True is not one of 2, 3"),
    ({"dims": [2]}, r"dims: \[2\] is not one of 2, 3"),
    ({"rate": "x" * 10_000}, r"rate: expected a number, got 'x+\.\.\.x+'$"),
    ({"value": "y" * 10_000}, r"value: 'y+\.\.\.y+' fits none of int \| list\[int\]$"),
    ({"count": [[1] * 1000] * 1000}, r"count: expected an integer, got \[\[1, 1, 1, 1, 1, 1, \.\.\.\], "),
    ({1: 2}, "config: keys must be names, got 1"),
])
def test_numbers_must_be_finite_and_echoed_values_are_short(data, message):
    with pytest.raises(MedsynthError, match=message) as caught:
        from_dict(Numbers, data)
    assert len(str(caught.value)) < 160 and "\n" not in str(caught.value)


def test_check_range_messages():
    from medsynth.config import check_range

    numbers = Numbers(rate=-1.0, count=0)
    for args, kwargs, message in [(("rate", 0.0), {}, "rate: must be non-negative, got -1.0"),
                                  (("rate", 0.0), {"above": True}, "rate: must be positive, got -1.0"),
                                  (("count", 1, 10), {}, "count: must be at least 1, got 0"),
                                  (("count", -5, -1), {}, "count: must be at most -1, got 0"),
                                  (("count", -5, 0), {"below": True}, "count: must be less than 0, got 0")]:
        with pytest.raises(ValueError, match=message):
            check_range(numbers, *args, **kwargs)
    check_range(numbers, "count", 0, 0)
    with pytest.raises(ValueError, match=r"value: every entry must be at most 3, got \[1, 5\]"):
        check_range(Numbers(value=[1, 5]), "value", 0, 3)
