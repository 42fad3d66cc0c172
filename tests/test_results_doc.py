"""docs/results.md is generated from the records under benchmarks/results/: it may not drift from them."""

from __future__ import annotations

from benchmarks import results_doc


def test_results_doc_matches_the_records():
    expected = results_doc.render(results_doc.load_records(), results_doc.load_comparisons())
    assert results_doc.DOC.read_text() == expected, "out of date: run python benchmarks/results_doc.py"


def test_records_carry_provenance_and_per_slice_scores():
    for record in results_doc.load_records():
        for key in ("commit", "date", "packages", "cpu", "cores", "seeds"):
            assert key in record["provenance"], (record["method"], key)
        if record["kind"] == "model":
            assert "config_hash" in record["provenance"]
        assert len(record["scores"]["psnr"]) == len(record["scores"]["ssim"]) == record["slices"]
