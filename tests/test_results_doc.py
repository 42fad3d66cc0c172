"""docs/results.md is generated from the records under benchmarks/results/: it may not drift from them."""

from __future__ import annotations

from benchmarks import results_doc


def test_results_doc_matches_the_records():
    expected = results_doc.render(results_doc.load_records(), results_doc.load_comparisons(),
                                   results_doc.load_performance())
    assert results_doc.DOC.read_text() == expected, "out of date: run python -m benchmarks.results_doc"


def test_records_carry_provenance_and_per_slice_scores():
    for record in results_doc.load_records():
        for key in ("commit", "date", "packages", "cpu", "cores", "seeds"):
            assert key in record["provenance"], (record["method"], key)
        if record["kind"] == "model":
            assert "config_hash" in record["provenance"]
        assert len(record["scores"]["psnr"]) == len(record["scores"]["ssim"]) == record["slices"]


def test_performance_figures_are_shown_only_with_their_provenance():
    training = {"steps": 8, "batch": 16, "plain_steps_per_second": [1.0, 0.9], "trainer_steps_per_second": 0.95,
                "trainer_over_plain": 0.95 / 0.95}
    block = {"commit": "0123456789abcdef+dirty", "date": "2026-12-04T10:00:00Z", "cpu": "CPU", "cores": 2,
             "packages": {"torch": "2.13.0+cpu"}}
    report = {"device": "cpu", "training": {**training, "provenance": block}, "pipeline": {"gan": {}}}
    text = "\n".join(results_doc.performance_section("quick", report))
    assert "| trainer / plain MONAI loop, steps/s | 1.00x" in text
    assert "0123456789ab+dirty" in text and "2026-12-04" in text
    assert "not shown: pipeline" in text and "--only pipeline" in text
