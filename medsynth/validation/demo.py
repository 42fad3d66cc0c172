"""``medsynth demo``: the whole pipeline on bundled real data, sized for a 2-core CPU.

Small models of both families are trained on axial slices of the MNI152 template (real data
shipped with nilearn), then ``compare`` samples, validates, runs the utility study and writes the
report. To fit a demo's time, the utility study uses :data:`DEMO_SEEDS` segmenter seeds (the
comparison config's default is 5) and the whole real training set only (one generator per
family; ``configs/compare_2d.yaml`` also trains each family on 10% of the slices). The budgets
are a demo's: the report shows what the pipeline measures, not what either family can reach.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medsynth.config import from_dict
from medsynth.validation.compare import CompareConfig, compare

log = logging.getLogger("medsynth")

_DATA = {"patch_size": [64, 64], "slice_axis": 2}
_JOB = {"name": "generate", "num_classes": 3}
#: the generate_2d configs' models at batch 8 and matched wall time: about 3 minutes each on 2 CPU cores
DEMO = {
    "description": "medsynth demo: diffusion vs GAN, label-to-image synthesis on axial MNI152 slices, "
                   "demo-sized budgets (a few CPU minutes of training per model); utility with 2 segmenter "
                   "seeds at the whole real training set only.",
    "experiments": {
        "diffusion": {
            "job": _JOB, "family": "diffusion", "spatial_dims": 2, "data": _DATA,
            "model": {"channels": [32, 64, 64], "attention_levels": [False, False, True], "num_res_blocks": 1,
                      "norm_num_groups": 16, "num_head_channels": 32, "prediction_type": "v_prediction",
                      "schedule": "scaled_linear_beta", "condition_dropout": 0.1, "guidance_scale": 1.5,
                      "sampler": "ddim", "num_inference_steps": 50},
            "train": {"steps": 650, "batch_size": 8, "lr": 5e-4, "warmup_steps": 30, "ema_decay": 0.99,
                      "sample_every": 650, "checkpoint_every": 130},
        },
        "gan": {
            "job": _JOB, "family": "gan", "spatial_dims": 2, "data": _DATA,
            "model": {"channels": [32, 64, 128], "noise_channels": 8, "l1_weight": 10.0,
                      "feature_matching_weight": 10.0, "diversity_weight": 1.0, "diversity_cap": 0.05,
                      "discriminator_lr_scale": 2.0},
            "train": {"steps": 600, "batch_size": 8, "lr": 2e-4, "warmup_steps": 30, "ema_decay": 0.99,
                      "sample_every": 600, "checkpoint_every": 100},
        },
    },
    "samples": {"per_label": 2, "diversity_conditions": 6, "augment_per_label": 1, "steps": 10},
    "features": {"steps": 150},
    "utility": {"seeds": [0, 1], "fractions": [1.0], "steps": 150},
}
DEMO_SEEDS = len(DEMO["utility"]["seeds"])


def demo(out: str | os.PathLike = "medsynth-demo", device: str = "auto", progress: bool = True) -> Path:
    """Run the demo comparison into ``out``; returns the path of ``report.html``."""
    log.info("demo: %d segmenter seeds (compare's default is 5), utility at the whole real training set only; "
             "one generator per family", DEMO_SEEDS)
    return compare(from_dict(CompareConfig, DEMO), out, device=device, progress=progress)
