"""The comparison's headline figures (``{"value", "ci95"}`` records) and its plain-language verdicts.

Both are read off the report dictionary ``compare`` builds; nothing here measures. A verdict
calls one set better than another only where the two 95% intervals do not overlap (realism,
label fidelity) or the paired difference's interval excludes 0 (utility).
"""

from __future__ import annotations

from medsynth.validation.compare_measure import REAL_TRAINING
from medsynth.validation.utility import REAL_ONLY


def _record(entry: dict) -> dict:
    return {"value": entry["value"], "ci95": list(entry["ci95"])}


def _fmt(entry: dict, digits: int = 3) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def _pct(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.0%} [{low:.0%}, {high:.0%}]"


def _overlap(a: dict, b: dict) -> bool:
    return a["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= a["ci95"][1]


def headline(report: dict) -> dict:
    """Name -> headline figures, each ``{"value", "ci95"}``: every family, both baseline arms, real only
    (utility and the label-fidelity reference) and the real training slices (the realism reference)."""
    spaces = report["realism"]["spaces"]
    utility = report["utility"]["arms"]
    out: dict[str, dict] = {}
    for name, model in report["models"].items():
        out[name] = {
            "realism_kid": {space: _record(entry["families"][name]["kid"]) for space, entry in spaces.items()},
            "diversity_within_ms_ssim": _record(model["diversity"]["within"]),
            "label_fidelity_dice": _record(report["label_fidelity"]["synthetic"][name]["dice"]),
            "memorization_share": {space: _record(model["memorization"][space]["share"])
                                   for space in ("features", "residuals")},
        }
    for arm, by_fraction in utility.items():
        entry = out.setdefault(arm, {})
        entry["utility"] = {fraction: {"dice": _record(e["dice"]),
                                       **({"difference_vs_real_only": _record(e["difference"])}
                                          if "difference" in e else {})}
                            for fraction, e in by_fraction.items()}
    out[REAL_ONLY]["label_fidelity_dice"] = _record(report["label_fidelity"]["reference"]["dice"])
    out[REAL_TRAINING] = {"realism_kid": {space: _record(entry["reference"]["kid"]) for space, entry in spaces.items()}}
    return out


def realism_verdict(realism: dict) -> str:
    words = []
    for space, entry in realism["spaces"].items():
        ranked = sorted(entry["families"], key=lambda f: entry["families"][f]["kid"]["value"])
        listed = "; ".join(f"{f} {_fmt(entry['families'][f]['kid'])}" for f in ranked)
        invalid = [f for f in ranked if not entry["families"][f]["fid"]["valid"]]
        words.append(f"{space} features: KID {listed} (real training slices: {_fmt(entry['reference']['kid'])})"
                     + (f"; FID not valid here ({entry['families'][invalid[0]]['fid']['reason']})" if invalid else ""))
    agreement = realism["agreement"]
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


def diversity_verdict(models: dict) -> str:
    words = []
    for name, model in models.items():
        d = model["diversity"]
        flags = [w for w, on in (("within a condition", d["collapse_within"]),
                                 ("across conditions", d["collapse_across"])) if on]
        words.append(f"{name}: MS-SSIM among samples for one condition {_fmt(d['within'])}, across conditions "
                     f"{d['across']:.3g}, real images among themselves {d['real']:.3g}: "
                     + (f"MODE COLLAPSE flagged {' and '.join(flags)}" if flags else "no mode collapse flagged"))
    return ". ".join(words) + ". (1 = identical images; the rule: " + next(iter(models.values()))["diversity"]["rule"] \
        + ")"


def memorization_verdict(models: dict) -> str:
    words = []
    for name, model in models.items():
        m = model["memorization"]
        both = m["flagged_by"]
        words.append(f"{name}: {m['features']['flagged']} of {m['features']['n_synthetic']} samples flagged as "
                     f"copies on features ({_pct(m['features']['share'])}), {m['residuals']['flagged']} on "
                     f"condition residuals ({_pct(m['residuals']['share'])}); flagged by both {both['both']}, "
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
        words.append(f"{name} {_fmt(dice)}: {where}")
    seeds = fidelity["segmenters"]
    return (f"Dice of real-only segmenters ({seeds} seed{'s' * (seeds != 1)}) on synthetic images against their "
            f"conditioning maps: " + "; ".join(words) + f". Held-out real images against their own maps: "
            f"{_fmt(reference)}.")


def cost_verdict(models: dict, budget: dict) -> str:
    words = [f"{name}: {m['network_evaluations']} network evaluation{'s' * (m['network_evaluations'] != 1)} per "
             f"image ({m['sampler']}), "
             f"{m['images_per_second']:.3g} images/s" for name, m in models.items()]
    return "; ".join(words) + f". {budget['statement'][0].upper()}{budget['statement'][1:]}."


def verdicts(report: dict) -> dict[str, str]:
    """Question -> one paragraph in plain words, each figure with its 95% interval."""
    utility = report["utility"]
    seeds = len(utility["seeds"])
    return {"realism": realism_verdict(report["realism"]),
            "diversity": diversity_verdict(report["models"]),
            "memorization": memorization_verdict(report["models"]),
            "label fidelity": fidelity_verdict(report["label_fidelity"]),
            "utility": f"{seeds} segmenter seed{'s' * (seeds != 1)}. " + " ".join(utility["verdicts"].values()),
            "costs": cost_verdict(report["models"], report["budget"])}
