"""The utility study of issue #24: does an arm of extra training pairs raise Dice over real data alone?

At each fraction of the real training pairs, the same UNet (same seeds, steps and batches) is
trained on the real subset alone (``real only``) and with a share ``ratio`` of each batch drawn
from an arm: each generator's synthetic pairs, classical augmentation of the real pairs, and
SynthSeg-style domain randomisation of the real label maps (:mod:`medsynth.validation.utility_arms`).
A generator's pairs are given per fraction (:class:`SyntheticPairs`), made by a generator trained
on no real pair outside that fraction's subset and from that subset's label maps only, so no arm
sees a real image or label map the real-only segmenter does not.

Scores are per test image (mean Dice over the foreground classes, :func:`per_image_dice`), so every
arm pairs with real only by segmenter seed and test image. A difference is significant when its
95% interval (hierarchical bootstrap over seeds, then images: ``statistics.paired_difference``)
excludes 0. The intervals cover the choice of seeds and test images, not of the test set's
anatomy or of the segmenter; several arms compared at 95% each are not corrected for multiple
comparisons; and with few seeds the bootstrap over seeds under-covers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from medsynth.progress import progress as show_progress
from medsynth.validation.realism import ImageSet
from medsynth.validation.statistics import bootstrap, paired_difference, verdict
from medsynth.validation.utility import REAL_ONLY, Draw, draw_from, per_image_dice, real_subset, train_segmenter
from medsynth.validation.utility_arms import CLASSICAL, RANDOMISED, augmented_draw, randomised_draw

#: segmenter seeds by default (issue #24: at least 5)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
NETWORK = "MONAI UNet (16, 32, 64, 128), DiceCE, Adam 2e-3, batch 8"


@dataclass(frozen=True)
class SyntheticPairs:
    """One generator's synthetic pairs for one real fraction.

    ``sources[i]`` is the index (into the real training set) of the label map pair ``i`` was made
    from; ``trained_on`` the indices of the real training pairs the generator was trained on.
    """

    pairs: ImageSet
    sources: list[int]
    trained_on: list[int]


def _key(fraction: float) -> str:
    return f"{float(fraction):g}"


def _checked(name: str, by_fraction: Mapping[float, SyntheticPairs], fraction: float,
             subset: list[int]) -> SyntheticPairs:
    """``by_fraction``'s pairs for ``fraction``, refused unless every real pair behind them is in ``subset``."""
    found = {_key(f): p for f, p in by_fraction.items()}
    if _key(fraction) not in found:
        raise ValueError(f"{name}: no synthetic pairs for fraction {_key(fraction)} (given: {', '.join(found)}); "
                         "each fraction needs a generator trained on that fraction")
    entry, allowed = found[_key(fraction)], set(subset)
    if entry.pairs.labels is None or len(entry.sources) != len(entry.pairs):
        raise ValueError(f"{name} at fraction {_key(fraction)}: need labels and one source per pair")
    for what, indices in (("was trained on", entry.trained_on), ("made pairs from", entry.sources)):
        outside = sorted(set(indices) - allowed)
        if outside:
            raise ValueError(f"{name} at fraction {_key(fraction)} {what} {len(outside)} real pairs the segmenter "
                             f"does not see (e.g. index {outside[0]}); train and sample it on "
                             f"the {len(subset)} pairs of real_subset(count, {_key(fraction)}) only")
    return entry


def summarise_arm(values: np.ndarray, real_only: np.ndarray | None, class_names: list[str], *,
                  replicates: int = 2000) -> dict:
    """One arm's record from its Dice ``values`` (seeds x test images x foreground classes).

    ``dice``: mean over images and classes with its 95% interval; ``dice_per_class``; ``per_seed``;
    ``per_image`` (seeds x images, mean over classes). Given ``real_only``'s values for the same
    seeds and images, also ``difference`` (this arm - real only, paired by seed and image) and
    ``verdict`` (``statistics.verdict``: better / worse / not distinguishable)."""
    mean = values.mean(-1)
    entry = {"dice": bootstrap(mean, replicates=replicates).as_dict(),
             "dice_per_class": {name: bootstrap(values[..., k], replicates=replicates).as_dict()
                                for k, name in enumerate(class_names[1:])},
             "per_seed": mean.mean(1).tolist(), "per_image": mean.tolist()}
    if real_only is not None:
        difference = paired_difference(mean, real_only.mean(-1), replicates=replicates)
        entry.update(difference=difference.as_dict(), verdict=verdict(difference))
    return entry


def utility_experiment(train: ImageSet, held: ImageSet, synthetic: Mapping[str, Mapping[float, SyntheticPairs]], *,
                       class_names: list[str], seeds: list[int] | tuple[int, ...] = DEFAULT_SEEDS,
                       fractions: list[float] | tuple[float, ...] = (0.1, 1.0), steps: int = 200, ratio: float = 0.5,
                       baselines: bool = True, deform: float = 1.0, device: str | torch.device = "cpu",
                       progress: bool = True, keep: Callable[[str, float, int, torch.nn.Module], None] | None = None,
                       replicates: int = 2000) -> dict:
    """Dice on ``held`` of every arm at every fraction, with 95% intervals and paired differences to real only.

    Args:
        synthetic: generator name -> fraction -> its :class:`SyntheticPairs`; a missing fraction,
            or pairs resting on real pairs outside that fraction's subset, is refused.
        baselines: add the classical-augmentation and domain-randomisation arms (``deform``: the
            strength of the label deformation of the latter, as ``augment``'s).
        keep: called with ``(arm, fraction, seed, network)`` after each training (e.g. to keep the
            real-only segmenters for :func:`medsynth.validation.mask_fidelity.label_fidelity`).

    Returns ``{"arms": {arm: {fraction: entry}}, ...}``; each entry has ``dice`` (mean over test images
    and foreground classes, ``{"value", "ci95", "seeds", "items"}``), ``dice_per_class``, ``per_seed``,
    ``per_image`` (seeds x images, what the differences pair), and, beside real only, ``difference``
    (arm - real only, paired) and ``verdict`` (better / worse / not distinguishable).
    """
    if len(class_names) < 2 or not seeds or not fractions:
        raise ValueError("need at least 2 classes, 1 seed and 1 fraction")
    for name in synthetic:
        if name in (REAL_ONLY, CLASSICAL, RANDOMISED):
            raise ValueError(f"{name!r} is the name of a built-in arm; rename the generator")
    num_classes = len(class_names)
    plans: list[tuple[str, float, ImageSet, Draw | None, dict]] = []
    for fraction in fractions:
        subset = real_subset(len(train), fraction)
        real = train.subset(subset)
        counts = {"real": len(subset)}
        plans.append((REAL_ONLY, fraction, real, None, {**counts, "synthetic": 0}))
        if baselines:
            plans.append((CLASSICAL, fraction, real, augmented_draw(real), {**counts, "synthetic": "on the fly"}))
            plans.append((RANDOMISED, fraction, real, randomised_draw(real, num_classes=num_classes, deform=deform),
                          {**counts, "synthetic": "on the fly"}))
        for name, by_fraction in synthetic.items():
            given = _checked(name, by_fraction, fraction, subset)
            counts_here = {**counts, "synthetic": len(given.pairs), "generator_trained_on": len(set(given.trained_on))}
            plans.append((name, fraction, real, draw_from(given.pairs), counts_here))
    scores: dict[tuple[str, float], list[np.ndarray]] = {}
    began = time.perf_counter()
    runs = [(plan, seed) for plan in plans for seed in seeds]
    for (arm, fraction, real, draw, _), seed in show_progress(runs, desc="segmentation utility", unit="run",
                                                              enabled=progress, leave=False):
        network = train_segmenter(real, draw, num_classes=num_classes, steps=steps, seed=seed, ratio=ratio,
                                  device=device)
        scores.setdefault((arm, fraction), []).append(per_image_dice(network, held, num_classes))
        if keep is not None:
            keep(arm, fraction, seed, network)
    arms: dict[str, dict] = {}
    for arm, fraction, _, _, counts in plans:
        baseline = None if arm == REAL_ONLY else np.stack(scores[(REAL_ONLY, fraction)])
        entry = summarise_arm(np.stack(scores[(arm, fraction)]), baseline, class_names, replicates=replicates)
        arms.setdefault(arm, {})[_key(fraction)] = {**counts, **entry}
    return {"arms": arms, "seeds": list(seeds), "fractions": [float(f) for f in fractions], "steps": steps,
            "ratio": ratio, "held_out_images": len(held), "network": NETWORK,
            "dice": "per test image, mean over foreground classes; a class absent from prediction and label scores 1",
            "interval": "95% hierarchical bootstrap over segmenter seeds, then test images; differences paired "
                        "by seed and test image",
            "seconds": round(time.perf_counter() - began, 1)}


def _interval(estimate: dict) -> str:
    low, high = estimate["ci95"]
    return f"{estimate['value']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _dice(estimate: dict) -> str:
    low, high = estimate["ci95"]
    return f"{estimate['value']:.3f} [{low:.3f}, {high:.3f}]"


def _significance(estimate: dict) -> str:
    low, high = estimate["ci95"]
    return "significant (its 95% interval excludes 0)" if low > 0 or high < 0 else \
        "not significant (its 95% interval includes 0)"


def utility_verdicts(result: dict, replicates: int = 2000) -> dict[str, str]:
    """Fraction -> plain-language verdict: which arm has the highest mean Dice, its paired difference with
    real only and with the runner-up, each with its 95% interval and whether it excludes 0, then how
    every other arm compares with real only. A "winner" whose interval includes 0 is not shown to win."""
    out = {}
    arms = result["arms"]
    for fraction in arms[REAL_ONLY]:
        entries = {arm: by_fraction[fraction] for arm, by_fraction in arms.items() if fraction in by_fraction}
        ranked = sorted(entries, key=lambda arm: entries[arm]["dice"]["value"], reverse=True)
        best = ranked[0]
        real = entries[REAL_ONLY]
        seeds = len(result["seeds"])
        words = [f"At {float(fraction):.0%} of the real training pairs ({real['real']} pairs, "
                 f"{seeds} segmenter seed{'s' * (seeds != 1)}), {best} scores the highest mean Dice, "
                 f"{_dice(entries[best]['dice'])}."]
        if best != REAL_ONLY:
            difference = entries[best]["difference"]
            words.append(f"Over real only it adds {_interval(difference)} Dice: {_significance(difference)}.")
        second = ranked[1] if len(ranked) > 1 else REAL_ONLY
        if second != REAL_ONLY:
            gap = paired_difference(entries[best]["per_image"], entries[second]["per_image"], replicates=replicates)
            words.append(f"Over the runner-up, {second}, it adds {_interval(gap.as_dict())}: "
                         f"{_significance(gap.as_dict())}.")
        others = [f"{arm} {_interval(entries[arm]['difference'])} ({entries[arm]['verdict']})"
                  for arm in ranked if arm not in (best, REAL_ONLY)]
        if others:
            words.append("Against real only: " + "; ".join(others) + ".")
        out[fraction] = " ".join(words)
    return out
