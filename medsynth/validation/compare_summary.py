"""The comparison's headline figures (``{"value", "ci95"}`` records) and its plain-language verdicts.

Both are read off the :class:`~medsynth.validation.compare_results.CompareReport` ``compare``
builds; nothing here measures. A verdict
calls one set better than another only where the two 95% intervals do not overlap (realism,
label fidelity) or the paired difference's interval excludes 0 (utility).
"""

from __future__ import annotations

from medsynth.validation.compare_measure import REAL_TRAINING
from medsynth.validation.compare_results import Budget, CompareReport, FamilyResult, Realism
from medsynth.validation.unpaired import as_ci95, format_ci95
from medsynth.validation.utility import REAL_ONLY


def _pct(entry: object) -> str:
    record = as_ci95(entry)
    low, high = record["ci95"]
    return f"{record['value']:.0%} [{low:.0%}, {high:.0%}]"


def _overlap(a: dict, b: dict) -> bool:
    return a["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= a["ci95"][1]


def headline(report: CompareReport) -> dict:
    """Name -> headline figures, each ``{"value", "ci95"}``: every family, both baseline arms, real only
    (utility and the label-fidelity reference) and the real training slices (the realism reference)."""
    spaces = report.realism.spaces
    utility = report.utility["arms"]
    out: dict[str, dict] = {}
    for name, model in report.models.items():
        out[name] = {
            "realism_kid": {space: as_ci95(entry.families[name].kid) for space, entry in spaces.items()},
            "diversity_within_ms_ssim": as_ci95(model.diversity.within),
            "label_fidelity_dice": as_ci95(report.label_fidelity["synthetic"][name]["dice"]),
            "memorization_share": {space: as_ci95(model.memorization.shares[space])
                                   for space in ("features", "residuals")},
        }
    for arm, by_fraction in utility.items():
        entry = out.setdefault(arm, {})
        entry["utility"] = {fraction: {"dice": as_ci95(e["dice"]),
                                       **({"difference_vs_real_only": as_ci95(e["difference"])}
                                          if "difference" in e else {})}
                            for fraction, e in by_fraction.items()}
    out[REAL_ONLY]["label_fidelity_dice"] = as_ci95(report.label_fidelity["reference"]["dice"])
    out[REAL_TRAINING] = {"realism_kid": {space: as_ci95(entry.reference.kid) for space, entry in spaces.items()}}
    return out


def realism_verdict(realism: Realism) -> str:
    words = []
    for space, entry in realism.spaces.items():
        families = entry.families
        ranked = sorted(families, key=lambda f: families[f].kid.value)
        listed = "; ".join(f"{f} {format_ci95(families[f].kid)}" for f in ranked)
        invalid = [f for f in ranked if not families[f].fid["valid"]]
        words.append(f"{space} features: KID {listed} (real training slices: {format_ci95(entry.reference.kid)})"
                     + (f"; FID not valid here ({families[invalid[0]].fid['reason']})" if invalid else ""))
    agreement = realism.agreement
    decided = []
    for pair in agreement["pairs"]:
        orders = ", ".join(f"{space}: {order if order == 'tie' else order + ' lower'}"
                           for space, order in pair["order"].items())
        decided.append(f"{' vs '.join(pair['families'])}: {orders}")
    if agreement["conflicts"]:
        verdict = ("The feature spaces DISAGREE on which family is more realistic (" + "; ".join(decided)
                   + "): no realism ranking is supported.")
    elif all(set(p["order"].values()) == {"tie"} for p in agreement["pairs"]):
        verdict = "In no feature space do the families' KID intervals separate: realism is not distinguishable."
    else:
        verdict = ("The feature spaces do not contradict each other (" + "; ".join(decided)
                   + "; 'tie' = overlapping 95% intervals).")
    return " ".join([verdict, "KID per space, lower is more like the held-out real slices: " + " | ".join(words)])


def diversity_verdict(models: dict[str, FamilyResult]) -> str:
    words = []
    for name, model in models.items():
        d = model.diversity
        flags = [w for w, on in (("within a condition", d.collapse_within),
                                 ("across conditions", d.collapse_across)) if on]
        words.append(f"{name}: MS-SSIM among samples for one condition {format_ci95(d.within)}, across conditions "
                     f"{d.across:.3g}, real images among themselves {d.real:.3g}: "
                     + (f"MODE COLLAPSE flagged {' and '.join(flags)}" if flags else "no mode collapse flagged"))
    return ". ".join(words) + f". (1 = identical images; the rule: {next(iter(models.values())).diversity.rule})"


def memorization_verdict(models: dict[str, FamilyResult]) -> str:
    words = []
    for name, model in models.items():
        shares, both = model.memorization.shares, model.memorization.flagged_by
        words.append(f"{name}: {shares['features'].flagged} of {shares['features'].n} samples flagged as "
                     f"copies on features ({_pct(shares['features'])}), {shares['residuals'].flagged} on "
                     f"condition residuals ({_pct(shares['residuals'])}); flagged by both {both['both']}, "
                     f"features only {both['features_only']}, residuals only {both['residuals_only']}")
    return ("; ".join(words) + ". A copy is closer to a training image than half the 5th percentile of held-out "
            "real images' nearest-training distances. Flagged on features only: the sample follows a training "
            "label map closely (not necessarily a copy); on residuals only: it repeats a training image's texture "
            "under a new map.")


def fidelity_verdict(fidelity: dict) -> str:
    reference = fidelity["reference"]["dice"]
    words = []
    for name, entry in fidelity["synthetic"].items():
        dice = entry["dice"]
        where = ("as faithful as real (intervals overlap)" if _overlap(dice, reference) else
                 "BELOW real" if dice["value"] < reference["value"] else "above real (easier to segment than real)")
        words.append(f"{name} {format_ci95(dice)}: {where}")
    seeds = fidelity["segmenters"]
    return (f"Dice of real-only segmenters ({seeds} seed{'s' * (seeds != 1)}) on synthetic images against their "
            f"conditioning maps: " + "; ".join(words) + f". Held-out real images against their own maps: "
            f"{format_ci95(reference)}.")


def cost_verdict(models: dict[str, FamilyResult], budget: Budget) -> str:
    costs = {name: model.cost for name, model in models.items()}
    words = [f"{name}: {c.network_evaluations} network evaluation{'s' * (c.network_evaluations != 1)} per "
             f"image ({c.sampler}), {c.images_per_second:.3g} images/s" for name, c in costs.items()]
    return "; ".join(words) + f". {budget.statement[0].upper()}{budget.statement[1:]}."


def verdicts(report: CompareReport) -> dict[str, str]:
    """Question -> one paragraph in plain words, each figure with its 95% interval."""
    utility = report.utility
    seeds = len(utility["seeds"])
    return {"realism": realism_verdict(report.realism),
            "diversity": diversity_verdict(report.models),
            "memorization": memorization_verdict(report.models),
            "label fidelity": fidelity_verdict(report.label_fidelity),
            "utility": f"{seeds} segmenter seed{'s' * (seeds != 1)}. " + " ".join(utility["verdicts"].values()),
            "costs": cost_verdict(report.models, report.budget)}
