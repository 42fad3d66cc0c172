"""benchmarks/ is a package: every script imports as ``benchmarks.<name>`` and runs as ``python -m``,
the performance suite's registry is its CLI, and a section runs for real."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import benchmarks
import benchmarks.performance
from benchmarks import run
from benchmarks.performance.pipeline import TimedSampling

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(info.name for info in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."))
SECTION_MODULES = {name for _, name, _ in pkgutil.iter_modules(benchmarks.performance.__path__)} - {"common"}


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports_without_editing_sys_path(name):
    path = list(sys.path)
    module = importlib.import_module(name)
    assert sys.path == path
    assert "sys.path" not in Path(module.__file__).read_text(), f"{name} edits sys.path"


def test_the_registry_is_the_clis_choice_of_sections_and_every_section_module_is_in_it():
    only = next(action for action in run.parser()._actions if action.dest == "only")
    assert list(only.choices) == list(run.SECTIONS) == only.default
    assert set(run.SECTIONS) == SECTION_MODULES
    for name, measure in run.SECTIONS.items():
        assert measure is importlib.import_module(f"benchmarks.performance.{name}").measure


def test_the_peak_section_runs_and_records_its_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "RESULTS", tmp_path)  # never the committed records
    run.main(["--quick", "--only", "peak", "--device", "cpu"])
    report = json.loads((tmp_path / "performance_quick.json").read_text())
    assert report["device"] == "cpu" and set(report) == {"device", "peak"}
    assert report["peak"]["conv3x3_gflops"] > 0 and report["peak"]["matmul_gflops"] > 0
    assert {"commit", "date", "seconds"} <= set(report["peak"]["provenance"])
    assert "measured peak, 3x3 conv / matmul" in capsys.readouterr().out


class _Model:
    family = "fake"

    def __init__(self) -> None:
        self.calls = []

    def sample(self, condition, *, seed, **options):
        self.calls.append((seed, options))
        return condition * 2


def test_timed_sampling_times_each_sample_call_and_passes_everything_else_through():
    model = _Model()
    timed = TimedSampling(model, torch.device("cpu"))
    out = timed.sample(torch.ones(2), seed=3, num_inference_steps=2)
    assert torch.equal(out, torch.full((2,), 2.0)) and model.calls == [(3, {"num_inference_steps": 2})]
    assert len(timed.seconds) == 1 and timed.seconds[0] >= 0
    assert timed.family == "fake" and timed.calls is model.calls
    with pytest.raises(AttributeError):
        timed.missing  # noqa: B018


def test_the_performance_suite_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--help"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "--only" in done.stdout and "peak" in done.stdout
