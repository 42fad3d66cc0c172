"""``medsynth compare``'s page: the verdicts, the headline figures with their 95% intervals, the costs,
and the figures (samples, diversity, intensity histograms per tissue class, KID per feature space,
nearest-training pairs on the held-out distance distribution, Dice with interval bars for every
arm, loss curves). How to read it: docs/report.md.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medsynth.training.figures import subplots
from medsynth.validation.compare_results import CompareReport, FamilyFigures
from medsynth.validation.realism import ImageSet
from medsynth.validation.report import (
    _errorbar,
    _format,
    _html_table,
    _interval,
    _save,
    _show,
    _write_page,
    grid_figure,
    loss_figure,
    nearest_figure,
    realism_figure,
)
from medsynth.validation.utility import REAL_ONLY


def diversity_figure(shown: dict[str, FamilyFigures], path: Path, conditions: int = 4, per_model: int = 3) -> Path:
    """Rows: deformed training label maps; columns: the map, then samples of each family for it."""
    first = next(iter(shown.values()))
    count = min(conditions, len(first.group_labels))
    repeats = min(per_model, first.groups.shape[1])
    columns = 1 + repeats * len(shown)
    figure, axes = subplots(count, columns, (1.6 * columns, 1.8 * count))
    for r in range(count):
        labels = first.group_labels[r, 0].numpy()
        _show(axes[r, 0], labels, "label map" if r == 0 else "", cmap="viridis", vmin=0, vmax=max(1, int(labels.max())))
        column = 1
        for name, items in shown.items():
            for k in range(repeats):
                _show(axes[r, column], items.groups[r, k, 0].numpy(), f"{name} #{k}" if r == 0 else "")
                column += 1
    figure.suptitle("Several samples for one deformed training label map (alike = collapse within a condition)",
                    fontsize=9)
    return _save(figure, path)


def histogram_figure(held: ImageSet, shown: dict[str, FamilyFigures], classes: list[str], path: Path) -> Path:
    """Intensity histograms per tissue class: held-out real voxels vs each family's, by their label maps."""
    figure, axes = subplots(1, len(classes), (3.4 * len(classes), 2.8))
    bins = np.linspace(0, 1, 51)
    for k, (axis, name) in enumerate(zip(axes[0], classes, strict=True)):
        sets = {"real (held-out)": held, **{n: items.pairs for n, items in shown.items()}}
        for label, images in sets.items():
            values = images.images[images.labels == k].numpy()
            if values.size:
                axis.hist(values, bins, density=True, histtype="step", linewidth=1.2, label=label)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("intensity", fontsize=8)
        axis.legend(fontsize=6)
    return _save(figure, path)


def dice_figure(utility: dict, fidelity: dict, path: Path) -> Path:
    """Mean Dice with 95% interval bars: every arm at every real fraction, then label fidelity."""
    arms = utility["arms"]
    fractions = list(arms[REAL_ONLY])
    figure, axes = subplots(1, len(fractions) + 1, (3.6 * (len(fractions) + 1), 3.2))
    for axis, fraction in zip(axes[0], fractions, strict=False):
        names = [a for a in arms if fraction in arms[a]]
        values, spread = _errorbar([arms[a][fraction]["dice"] for a in names])
        axis.bar(range(len(names)), values, yerr=spread, capsize=4, color=[f"C{k}" for k in range(len(names))])
        axis.set_xticks(range(len(names)), names, fontsize=6, rotation=30, ha="right")
        axis.set_title(f"utility: {float(fraction):.0%} of the real slices ({arms[REAL_ONLY][fraction]['real']})",
                       fontsize=8)
        axis.set_ylim(0, 1)
    axis = axes[0, -1]
    rows = {"held-out real": fidelity["reference"]["dice"],
            **{n: e["dice"] for n, e in fidelity["synthetic"].items()}}
    values, spread = _errorbar(list(rows.values()))
    axis.bar(range(len(rows)), values, yerr=spread, capsize=4, color=[f"C{k}" for k in range(len(rows))])
    axis.set_xticks(range(len(rows)), list(rows), fontsize=7, rotation=30, ha="right")
    axis.set_title("label fidelity (real-only segmenter)", fontsize=8)
    axis.set_ylim(0, 1)
    axes[0, 0].set_ylabel(f"mean Dice, 95% interval\n({len(utility['seeds'])} segmenter seeds)", fontsize=8)
    return _save(figure, path)


def headline_table(headline: dict, spaces: Iterable[str],
                   fractions: Iterable[str]) -> tuple[list[str], list[list[str]]]:
    """Rows of ``compare_summary.headline`` figures for KID in ``spaces`` and utility at ``fractions``
    (keys of the real fractions); columns: the families, the baseline arms, real only, real training slices."""
    columns = list(headline)
    rows: list[list[str]] = []

    def row(label: str, get) -> None:
        cells = []
        for name in columns:
            try:
                cells.append(_interval(get(headline[name])))
            except (KeyError, TypeError):
                cells.append("—")
        rows.append([label] + cells)

    for space in spaces:
        row(f"KID, {space} features (lower = closer to held-out real)", lambda h, s=space: h["realism_kid"][s])
    row("MS-SSIM among samples for one condition (1 = collapse)", lambda h: h["diversity_within_ms_ssim"])
    row("label fidelity: Dice vs conditioning map", lambda h: h["label_fidelity_dice"])
    for space in ("features", "residuals"):
        row(f"share flagged as copies ({space})", lambda h, s=space: h["memorization_share"][s])
    for fraction in fractions:
        percent = f"{float(fraction):.0%}"
        row(f"utility Dice, {percent} real", lambda h, f=fraction: h["utility"][f]["dice"])
        row(f"Dice difference vs real only, {percent} real", lambda h, f=fraction: h["utility"][f]
            ["difference_vs_real_only"])
    return ["figure (95% interval)"] + columns, rows


def cost_table(report: CompareReport) -> tuple[list[str], list[list[str]]]:
    models = report.models.values()
    header = ["", *report.models]
    rows = [["sampler, network evaluations / image"] + [f"{m.cost.sampler}, {m.cost.network_evaluations}"
                                                         for m in models],
            ["sampling speed, images / s"] + [_format(m.cost.images_per_second) for m in models]]
    for key in next(iter(models)).runs:
        rows.append([f"training: seconds (steps), fraction {key}"] + [
            f"{_format(m.runs[key].train_seconds)} ({m.runs[key].train_steps})" for m in models])
    rows.append(["peak training memory, MiB"] + [_format(m.full.peak_memory_mb) for m in models])
    rows.append(["loss CV, 2nd half (headline loss)"] + [
        _format(m.stability.headline_cv) + f" ({m.stability.headline_loss})" for m in models])
    return header, rows


def intensity_table(report: CompareReport) -> tuple[list[str], list[list[str]]]:
    """Wasserstein-1 distance of each family's voxel intensities to the held-out real ones, per tissue class."""
    models = report.models.values()
    classes = list(next(iter(models)).intensity_wasserstein)
    return (["intensity Wasserstein-1 (no interval)", *report.models],
            [[c] + [_format(m.intensity_wasserstein.get(c)) for m in models] for c in classes])


def _notes(report: CompareReport) -> list[str]:
    data, utility, realism = report.data, report.utility, report.realism
    notes = [
        f"Every number was computed in this run ({report.seconds:.0f} s) from the data named here.",
        f"Data: {html.escape(str(data['source']))}; {data['train_slices']} real training slices, "
        f"{data['held_out_slices']} held-out test slices (slab {data['test_slab']}), "
        f"{'x'.join(map(str, data['slice_shape']))} voxels. Real fractions: "
        + ", ".join(f"{k}: {n} slices" for k, n in data["fractions"].items()) + ".",
        f"Realism, diversity and memorization use synthetic images made from deformed training label maps "
        f"(unpaired with the {realism.n_real} held-out real slices). KID's interval is a bootstrap over images "
        "(conservative when the sets match); FID is reported only with its validity flag (N must exceed the "
        "feature dimension).",
        f"Trained features: {html.escape(report.feature_network['description'])}; no feature space is a "
        "pretrained medical network.",
        f"Utility: {utility['network']}, {utility['steps']} steps, {len(utility['seeds'])} segmenter seeds "
        f"{utility['seeds']}, {utility['ratio']:.0%} of each batch from the arm; each generator was trained on "
        "the same real slices as the segmenter it helps. Intervals: " + utility["interval"]
        + "; several arms at 95% each, not corrected for multiple comparisons.",
        "Training budget: " + html.escape(report.budget.statement) + ". Small CPU budgets give weak "
        "models: these results are not either family's ceiling.",
    ]
    inexact = [n for n, m in report.models.items() if not m.full.trained_on_exact_subset]
    if inexact:
        notes.append(f"{', '.join(inexact)}: a run given with --runs, trained on the whole training part (including "
                     "slices below min_foreground that the segmenters do not use).")
    return notes


def write_compare_report(out: Path, report: CompareReport, train: ImageSet, held: ImageSet,
                         shown: dict[str, FamilyFigures]) -> Path:
    """Write the figures and ``report.html``; returns the report's path."""
    figures = out / "figures"
    samples = {"real (held-out)": held, **{n: items.pairs for n, items in shown.items()}}
    paths = {
        "Held-out real slices and synthetic images for deformed training label maps": grid_figure(
            samples, figures / "samples.png"),
        "Diversity: several samples per condition": diversity_figure(shown, figures / "diversity.png"),
        "Intensity histograms per tissue class": histogram_figure(held, shown, report.data["classes"],
                                                                  figures / "histograms.png"),
        "Realism: KID per feature space, 95% intervals": realism_figure(report.realism, figures / "kid.png"),
        "Dice with 95% intervals: every utility arm, and label fidelity": dice_figure(
            report.utility, report.label_fidelity, figures / "dice.png"),
        "Memorization: nearest-training distances and closest pairs": nearest_figure(
            shown, train, figures / "nearest_pairs.png"),
        "Training loss curves": loss_figure(shown, figures / "loss_curves.png"),
    }
    verdicts = "".join(f"<h3>{html.escape(question.capitalize())}</h3><p>{html.escape(text)}</p>"
                       for question, text in report.verdicts.items())
    body = (f"<p>{html.escape(report.description or '')}</p><h2>Verdicts</h2>{verdicts}"
            f"<h2>Headline figures</h2>"
            f"{_html_table(*headline_table(report.headline, report.realism.spaces, report.utility['arms'][REAL_ONLY]))}"
            f"<h2>Intensities per tissue class</h2>{_html_table(*intensity_table(report))}"
            f"<h2>Costs</h2>{_html_table(*cost_table(report))}"
            f"<ul>{''.join(f'<li>{n}</li>' for n in _notes(report))}</ul>")
    return _write_page(out, "medsynth comparison report", body, paths)
