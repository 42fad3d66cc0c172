"""The comparison report: PNG figures and one self-contained ``report.html`` (figures embedded).

The headline is the comparison table from the literature (sample quality, diversity, training
stability, training time, inference speed, utility, memorization) with one column per model,
filled with the numbers measured in this run. How to read it: docs/report.md.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsynth.io.files import atomic_path  # noqa: E402
from medsynth.validation.realism import ImageSet  # noqa: E402
from medsynth.validation.utility import REAL_ONLY  # noqa: E402

Row = tuple[str, str, Callable[[dict], float | str | None], str]  # group, metric, value of a model's metrics, hint


def _utility_delta(utility: dict, name: str, fraction: str) -> str | None:
    conditions = utility["conditions"]
    if name not in conditions:
        return None
    entry, base = conditions[name][fraction], conditions[REAL_ONLY][fraction]["mean_dice"]
    return f"{entry['mean_dice']:.3f} ± {entry['mean_dice_std']:.3f} ({entry['mean_dice'] - base:+.3f})"


def headline_rows(report: dict) -> list[Row]:
    """The literature's comparison table, as rows of measured values."""
    rows: list[Row] = [
        ("Sample quality", "FID (feature network below)", lambda m: m["fid"], "lower is better"),
        ("Sample quality", "KID × 1000", lambda m: 1000 * m["kid"], "lower; ~0 = same distribution"),
        ("Sample quality", "intensity Wasserstein-1, all voxels", lambda m: m["intensity_wasserstein"]["all"],
         "lower is better"),
        ("Diversity", "MS-SSIM among samples", lambda m: m["ms_ssim"],
         f"lower = more diverse; real held-out slices: {report['real_ms_ssim']:.3f}"),
        ("Diversity", "MS-SSIM within a label map (collapse signal)", lambda m: m.get("ms_ssim_within_condition"),
         "1 = the noise input is ignored"),
        ("Diversity", "precision / recall", lambda m: f"{m['precision']:.2f} / {m['recall']:.2f}",
         "fidelity / coverage of the real manifold, 1 best"),
        ("Diversity", "density / coverage", lambda m: f"{m['density']:.2f} / {m['coverage']:.2f}",
         "density ~1 for matched sets; coverage 1 best"),
        ("Training stability", "loss CV, 2nd half, smoothed", lambda m: _stability(m),
         "spread of the first logged loss"),
        ("Training time", "seconds (steps)", lambda m: m.get("train_seconds") and
         f"{m['train_seconds']:.0f} ({m['train_steps']})", "matched budgets: compare wall time"),
        ("Inference speed", "images / s", lambda m: m.get("images_per_second") and
         f"{m['images_per_second']:.2f} ({m['sampler']}, {m['network_evaluations']} NFE)", "higher is faster"),
        ("Cost", "peak memory, MiB", lambda m: m.get("peak_memory_mb"), "training; process RSS on CPU"),
    ]
    for fraction in report["utility"]["conditions"][REAL_ONLY]:
        rows.append(("Utility", f"mean Dice with {float(fraction):.0%} real (Δ vs real only)",
                     lambda m, f=fraction, r=report: _utility_delta(r["utility"], m["name"], f),
                     "held-out real slices; mean ± std over seeds"))
    rows.append(("Memorization", "near-copies flagged (min ratio)", lambda m: "memorization" in m and
                 f"{m['memorization']['fraction_flagged']:.1%} ({m['memorization']['min_ratio']:.2f})",
                 "ratio < 0.5 of the training set's own spacing"))
    return rows


def _stability(metrics: dict) -> str | None:
    stability = metrics.get("stability")
    if not stability or not stability["headline_loss"]:
        return None
    return f"{stability['loss_cv'][stability['headline_loss']]:.3f} ({stability['headline_loss']})"


def _format(value: float | str | None) -> str:
    if value is None or value is False:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the headline table (models, then the real-vs-real reference)."""
    models = list(report["models"])
    header = ["", "metric"] + models + ["note"]
    rows = []
    for group, metric, value, hint in headline_rows(report):
        cells = []
        for name in models:
            try:
                cells.append(_format(value({**report["models"][name], "name": name})))
            except (KeyError, TypeError):
                cells.append("—")
        rows.append([group, metric] + cells + [hint])
    return header, rows


# figures ----------------------------------------------------------------------------------------
def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _show(axis: plt.Axes, image: np.ndarray, title: str = "", **kwargs) -> None:
    axis.imshow(np.rot90(image), **({"cmap": "gray", "vmin": 0, "vmax": 1} | kwargs))
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def sample_figure(held: ImageSet, shown: dict, path: Path, rows: int = 5, per_model: int = 2) -> Path:
    """Held-out label map | real image | samples of each model for that label map."""
    chosen = np.linspace(0, len(held) - 1, min(rows, len(held))).round().astype(int)
    columns = 2 + per_model * len(shown)
    figure, axes = plt.subplots(len(chosen), columns, figsize=(1.6 * columns, 1.8 * len(chosen)), squeeze=False)
    for r, index in enumerate(chosen):
        _show(axes[r, 0], held.labels[index, 0].numpy(), "label map" if r == 0 else "", cmap="viridis",
              vmin=0, vmax=int(held.labels.max()))
        _show(axes[r, 1], held.images[index, 0].numpy(), "real" if r == 0 else "")
        column = 2
        for name, items in shown.items():
            samples = items["samples"]
            repeats = len(samples) // len(held)
            for k in range(min(per_model, repeats)):
                _show(axes[r, column], samples.images[index * repeats + k, 0].numpy(),
                      f"{name} #{k}" if r == 0 else "")
                column += 1
    figure.suptitle("Held-out label maps: real image and samples of each model", fontsize=9)
    return _save(figure, path)


def table_figure(report: dict, path: Path) -> Path:
    header, rows = table(report)
    figure, axis = plt.subplots(figsize=(3 + 2.6 * (len(header) - 2), 0.32 * len(rows) + 0.8))
    axis.axis("off")
    grid = axis.table(cellText=[r[:-1] for r in rows], colLabels=header[:-1], loc="center", cellLoc="left")
    grid.auto_set_font_size(False)
    grid.set_fontsize(7)
    grid.auto_set_column_width(list(range(len(header) - 1)))
    return _save(figure, path)


def dice_figure(utility: dict, path: Path) -> Path:
    """Mean Dice per class with the std over seeds as error bars, one panel per real-data fraction."""
    conditions = list(utility["conditions"])
    fractions = list(utility["conditions"][REAL_ONLY])
    classes = list(utility["conditions"][REAL_ONLY][fractions[0]]["dice"])
    figure, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.2), squeeze=False, sharey=True)
    width = 0.8 / len(conditions)
    for axis, fraction in zip(axes[0], fractions, strict=True):
        for k, condition in enumerate(conditions):
            entry = utility["conditions"][condition][fraction]
            means = [entry["dice"][c]["mean"] for c in classes]
            spreads = [entry["dice"][c]["std"] for c in classes]
            axis.bar(np.arange(len(classes)) + k * width, means, width, yerr=spreads, capsize=3,
                     label=f"{condition} ({entry['real']} real + {entry['synthetic']} synthetic)")
        axis.set_xticks(np.arange(len(classes)) + width * (len(conditions) - 1) / 2, classes, fontsize=8)
        axis.set_title(f"{float(fraction):.0%} of the real training slices", fontsize=9)
        axis.set_ylim(0, 1)
        axis.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_ylabel(f"Dice on held-out real slices\n(mean ± std, {len(utility['seeds'])} seeds)")
    return _save(figure, path)


def loss_figure(shown: dict, path: Path) -> Path:
    figure, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3), squeeze=False)
    for axis, (name, items) in zip(axes[0], shown.items(), strict=True):
        curves = items["curves"]
        for key, values in curves.items():
            if key.startswith("loss") and len(values) == len(curves["step"]):
                axis.plot(curves["step"], values, label=key, linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(name, fontsize=9)
        axis.legend(fontsize=6)
    return _save(figure, path)


def nearest_figure(models: dict[str, tuple[ImageSet, dict]], train: ImageSet, path: Path) -> Path:
    """For each model, the synthetic images closest to a training image (``memorization_check``), with it."""
    pairs = max(len(check["closest"]) for _, check in models.values())
    figure, axes = plt.subplots(len(models), 2 * pairs, figsize=(3.2 * pairs, 1.9 * len(models)), squeeze=False)
    for r, (name, (synthetic, check)) in enumerate(models.items()):
        for k, pair in enumerate(check["closest"]):
            _show(axes[r, 2 * k], _view(synthetic.images[pair["synthetic_index"], 0]),
                  f"{name}: ratio {pair['ratio']:.2f}")
            _show(axes[r, 2 * k + 1], _view(train.images[pair["train_index"], 0]), "nearest training")
    figure.suptitle(f"Closest synthetic / training pairs (ratio < {check['threshold']} flags a near-copy)", fontsize=9)
    return _save(figure, path)


def _view(image) -> np.ndarray:
    """A 2D view of a 2D image or the middle slice (last axis) of a 3D one."""
    image = np.asarray(image)
    return image[..., image.shape[-1] // 2] if image.ndim == 3 else image


# html -------------------------------------------------------------------------------------------
def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _utility_table(utility: dict) -> tuple[list[str], list[list[str]]]:
    classes = list(next(iter(utility["conditions"][REAL_ONLY].values()))["dice"])
    header = ["real fraction", "training data"] + [f"Dice {c}" for c in classes] + ["mean Dice"]
    rows = []
    for fraction in utility["conditions"][REAL_ONLY]:
        for condition, entries in utility["conditions"].items():
            e = entries[fraction]
            rows.append([f"{float(fraction):.0%}", f"{condition} ({e['real']} real + {e['synthetic']} synthetic)"]
                        + [f"{e['dice'][c]['mean']:.3f} ± {e['dice'][c]['std']:.3f}" for c in classes]
                        + [f"{e['mean_dice']:.3f} ± {e['mean_dice_std']:.3f}"])
    return header, rows


def write_report(out: Path, report: dict, train: ImageSet, held: ImageSet, shown: dict) -> Path:
    """Write the figures and ``report.html``; returns the report's path."""
    figures = out / "figures"
    paths = {
        "Samples for held-out label maps": sample_figure(held, shown, figures / "samples.png"),
        "Headline table": table_figure(report, figures / "metrics_table.png"),
        "Downstream segmentation: Dice on held-out real slices": dice_figure(report["utility"], figures / "dice.png"),
        "Training loss curves": loss_figure(shown, figures / "loss_curves.png"),
        "Memorization: closest synthetic / training pairs": nearest_figure(
            {n: (items["pairs"], report["models"][n]["memorization"]) for n, items in shown.items()}, train,
            figures / "nearest_pairs.png"),
    }
    models = [n for n in report["models"] if n in shown]
    budget = "; ".join(f"{n}: {report['models'][n]['train_steps']} steps in "
                       f"{report['models'][n]['train_seconds']:.0f} s" for n in models
                       if report["models"][n].get("train_seconds") is not None)
    data = report["data"]
    utility = report["utility"]
    header, rows = table(report)
    notes = [
        f"Every number was computed in this run ({report['seconds']:.0f} s) from the data named here; "
        "nothing is cached or copied from elsewhere.",
        f"Training budget: {budget}. Small (CPU) budgets give weak models: these results are not either "
        "family's ceiling.",
        f"Data: {html.escape(str(data['source']))}; {data['train_slices']} real training slices and "
        f"{data['held_out_slices']} held-out test slices (axial slab {data.get('test_slab')}) of "
        f"{'x'.join(map(str, data['slice_shape']))} voxels.",
        f"Features for FID/KID/precision/recall: {html.escape(report['feature_network']['description'])}.",
        f"Realism and coverage compare samples for the held-out label maps with the real held-out slices "
        f"({report['models'][models[0]]['n_real']} real vs {report['models'][models[0]]['n_synthetic']} synthetic "
        "images): FID is biased upwards for sets this small, KID is not.",
        f"Utility: {utility['network']}, {utility['steps']} steps, seeds {utility['seeds']}, "
        f"{utility['ratio']:.0%} of each batch synthetic; synthetic pairs come from deformed copies of the "
        "real training label maps in use (the generators saw all real training slices).",
    ]
    body = (f"<p>{html.escape(report.get('description') or '')}</p>"
            f"<h2>Headline: the literature's comparison, measured</h2>{_html_table(header, rows)}"
            f"<ul>{''.join(f'<li>{n}</li>' for n in notes)}</ul>"
            f"<h2>Downstream segmentation utility</h2>{_html_table(*_utility_table(utility))}")
    return _write_page(out, "medsynth comparison report", body, paths)


def _write_page(out: Path, title: str, body: str, figures: dict[str, Path]) -> Path:
    """``out/report.html``: ``body`` and then every figure, embedded as base64 PNG."""
    images = "".join(
        f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'>" for name, path in figures.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:left}}th{{background:#f3f3f3}}img{{max-width:100%}}li{{margin:.3em 0}}</style></head><body>
<h1>{html.escape(title)}</h1>{body}<h2>Figures</h2>{images}
<p>How to read this report: docs/report.md in the medsynth repository. Raw numbers: metrics.json.</p>
</body></html>"""
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / "report.html"


def write_validation_report(out: Path, report: dict, real: ImageSet, synthetic: ImageSet, train: ImageSet) -> Path:
    """Figures and ``report.html`` of ``medsynth validate``."""
    m = report["metrics"]
    rows = [["FID", _format(m["fid"]), "lower is better; comparable within one feature network only"],
            ["KID × 1000", f"{1000 * m['kid']:.3g} ± {1000 * m['kid_std']:.2g}", "unbiased; ~0 = same distribution"],
            ["precision / recall", f"{m['precision']:.3f} / {m['recall']:.3f}", "k-NN manifolds, 1 best"],
            ["density / coverage", f"{m['density']:.3f} / {m['coverage']:.3f}", "density ~1 for matched sets"],
            ["MS-SSIM among synthetic", _format(m["ms_ssim"]),
             f"real: {report['real_ms_ssim']:.3f}; lower = more diverse"]]
    rows += [[f"intensity Wasserstein-1, {k}", _format(v), "image units in [0, 1]"]
             for k, v in m["intensity_wasserstein"].items()]
    if "fidelity" in m:
        f = m["fidelity"]
        rows.append(["paired PSNR / SSIM", f"{f['psnr']:.2f} dB / {f['ssim']:.3f}",
                     f"{f['pairs']} synthetic images against the real images of the same name"])
    check = m["memorization"]
    rows.append(["near-copies of training images", f"{check['flagged']} of {check['n_synthetic']} "
                 f"({check['fraction_flagged']:.1%}), min ratio {check['min_ratio']:.2f}",
                 f"ratio < {check['threshold']} of the training set's own nearest-neighbour spacing"])
    figures = out / "figures"
    shown = {"real": ImageSet(real.images, real.labels, real.names),
             "synthetic": ImageSet(synthetic.images, synthetic.labels, synthetic.names)}
    paths = {"Real and synthetic images": grid_figure(shown, figures / "samples.png"),
             "Memorization: closest synthetic / training pairs": nearest_figure({"synthetic": (synthetic, check)},
                                                                                train, figures / "nearest_pairs.png")}
    body = (f"<p>{len(real)} real images ({html.escape(report['real'])}) and {len(synthetic)} synthetic images "
            f"({html.escape(report['synthetic'])}), {report['spatial_dims']}D, on a "
            f"{'x'.join(map(str, report['shape']))} grid; memorization against {html.escape(report['train'])}. "
            f"Features: {html.escape(report['feature_network']['description'])}. Computed in this run "
            f"({report['seconds']:.0f} s).</p>" + _html_table(["metric", "value", "note"], rows))
    return _write_page(out, "medsynth validation report", body, paths)


def grid_figure(sets: dict[str, ImageSet], path: Path, columns: int = 8) -> Path:
    """One row per set: ``columns`` evenly chosen images."""
    figure, axes = plt.subplots(len(sets), columns, figsize=(1.6 * columns, 1.8 * len(sets)), squeeze=False)
    for r, (name, images) in enumerate(sets.items()):
        chosen = np.linspace(0, len(images) - 1, columns).round().astype(int)
        for c, index in enumerate(chosen):
            _show(axes[r, c], _view(images.images[index, 0]), f"{name}" if c == 0 else "")
    return _save(figure, path)
