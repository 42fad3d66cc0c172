"""What every results record carries about where its numbers came from."""

from __future__ import annotations

from medsynth.validation.provenance import config_hash, provenance


def test_a_record_names_code_machine_config_and_seeds():
    record = provenance(config={"train": {"steps": 10}}, seeds=[0, 1], seconds=3.5)
    assert {"commit", "date", "packages", "cpu", "cores", "torch_threads", "config_hash", "seeds"} <= set(record)
    assert record["seeds"] == [0, 1] and record["seconds"] == 3.5
    assert record["packages"]["torch"] != "not installed" and record["cores"] >= 1
    assert len(record["commit"]) >= 7  # a commit hash here (a checkout), "unknown" outside git


def test_the_config_hash_follows_values_not_key_order():
    a = {"train": {"steps": 10, "lr": 1e-3}, "model": {"channels": [8, 16]}}
    b = {"model": {"channels": [8, 16]}, "train": {"lr": 1e-3, "steps": 10}}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "train": {"steps": 11, "lr": 1e-3}})
