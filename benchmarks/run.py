"""medsynth's performance suite: every ratio is measured side by side in one run, so a busy machine
slows both sides of a comparison alike and cannot fake a ratio.

Sections (``--only`` picks some), one module each under ``benchmarks/performance/``, registered in
``SECTIONS``:

- ``peak``: the machine's measured limits, a 3x3 convolution (channels_last) and a square matmul, fp32.
- ``network``: FLOPs of one sampling step of each family's default 2D network (counted with
  ``torch.utils.flop_counter``), its time, achieved FLOP/s and the fraction of the conv peak.
- ``families``: images/s of the diffusion and GAN families at their default sampling settings,
  same job, image size, batch and device (untrained weights: speed does not depend on them).
- ``training``: steps/s of medsynth's ``Trainer`` vs. a plain MONAI-tutorial loop (CacheDataset +
  DataLoader + the same network, schedule, batch, optimizer and noise) on the same MNI152 slices.
- ``pipeline``: ``augment`` end to end (read, orient, normalise, sample, denormalise, write NIfTI,
  manifest) vs. the same network calls alone, for a GAN and a diffusion model.
- ``sampling``: the diffusion family's speed/quality curve on the validation slab for denoise
  and super-resolve: DDPM-1000, DDIM-50/20/10, DPM-Solver++(2M)-10/5, the configs' default
  (DDIM-5, mean of 4), against the NLM / cubic baselines; a PNG of the curve.
- ``memory``: peak RSS (CPU) or peak allocated memory (CUDA) of 3D training and sampling at
  32^3, 64^3, 128^3 (each in its own process), and full-volume restoration of a 256x256x160
  volume in overlapping windows with Gaussian blending, with a seam check (error at window
  borders vs. window centres).

``--quick`` (about a quarter of an hour on 2 CPU cores) uses short runs, few held-out slices and trains the
sampling models briefly (quality figures are then indicative; ratios of speed are not affected).
Full mode trains the ready-made CPU configs (or reuses them in ``--runs``) and takes about an hour
and a half. Results: ``benchmarks/results/performance_{quick,full}.json`` and
``sampling_curve_{quick,full}.png``.

Usage: python -m benchmarks.run [--quick] [--only peak network ...] [--runs runs/bench] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.performance import families, memory, network, peak, pipeline, sampling, training
from benchmarks.performance.common import RESULTS, Section
from benchmarks.results_doc import performance_rows
from medsynth.validation.provenance import provenance

#: every section by name, in the order a full run takes them
SECTIONS: dict[str, Section] = {
    "peak": peak.measure,
    "network": network.measure,
    "families": families.measure,
    "training": training.measure,
    "pipeline": pipeline.measure,
    "sampling": sampling.measure,
    "memory": memory.measure,
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a quarter of an hour on 2 CPU cores)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"),
                        help="full mode: where the sampling section trains (or finds) its models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sampling-jobs", nargs="+", choices=["denoise", "super_resolve"],
                        default=["denoise", "super_resolve"], help="jobs of the sampling section")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.device = torch.device(args.device)
    out = RESULTS / f"performance_{'quick' if args.quick else 'full'}.json"
    report = json.loads(out.read_text()) if out.exists() else {}  # sections run earlier are kept
    report["device"] = str(args.device)
    began = time.perf_counter()
    for section in args.only:
        start = time.perf_counter()
        report[section] = SECTIONS[section](args, report)
        report[section]["provenance"] = provenance(seconds=round(time.perf_counter() - start, 1),
                                                   load_average=round(os.getloadavg()[0], 2))
        print(f"{section}: {time.perf_counter() - start:.0f} s", flush=True)
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every section: a stopped run keeps its results
    print(f"\nperformance suite ({'quick' if args.quick else 'full'}, {report['device']}, "
          f"{time.perf_counter() - began:.0f} s); {out}; docs/results.md: python -m benchmarks.results_doc")
    rows = [row for section in args.only for row in performance_rows(section, report[section])]
    width = max(len(r[0]) for r in rows)
    for measure, value, target in rows:
        print(f"{measure:<{width}}  {value:<40} {target}")


if __name__ == "__main__":
    main()
