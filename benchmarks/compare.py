"""The diffusion-vs-GAN comparison as a results record (docs/results.md is generated from it).

    python -m benchmarks.compare                              # configs/compare_2d.yaml, the whole study
    python -m benchmarks.compare --config configs/compare_2d.yaml --out /tmp/compare_2d

Runs ``medsynth compare`` (training every generator per real fraction, the utility study with its
segmenter seeds, every measure) into ``--out`` (kept: report.html, figures, runs; an interrupted
study resumes its training runs there), then copies its ``metrics.json``, which carries the
provenance block, to ``benchmarks/results/<config name>.json`` (its samples figure beside it, as
``<config name>_samples.png``), and regenerates docs/results.md.
Nothing here tunes anything: the comparison config is scored as shipped.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from benchmarks import results_doc
from medsynth.cli.common import setup_logging
from medsynth.validation import compare

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "compare_2d.yaml")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: /tmp/medsynth_<config>)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out = args.out or Path("/tmp") / f"medsynth_{args.config.stem}"
    setup_logging()  # the study's progress lines, as the CLI prints them
    began = time.perf_counter()
    report = compare(args.config, out, device=args.device)
    record = ROOT / "benchmarks" / "results" / f"{args.config.stem}.json"
    shutil.copyfile(report.parent / "metrics.json", record)
    shutil.copyfile(report.parent / "figures" / "samples.png", record.with_name(f"{args.config.stem}_samples.png"))
    print(f"{report} ({(time.perf_counter() - began) / 60:.1f} min); record: {record}")
    results_doc.main([])


if __name__ == "__main__":
    main()
