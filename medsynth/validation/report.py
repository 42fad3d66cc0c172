"""Report pages: PNG figures and one self-contained ``report.html`` (figures embedded).

The shared drawing helpers and ``medsynth validate``'s page; ``medsynth compare``'s page is
:mod:`medsynth.validation.compare_report`. 3D images are shown as three orthogonal middle slices.
How to read the reports: docs/report.md.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsynth.io.files import atomic_path  # noqa: E402
from medsynth.validation.realism import ImageSet  # noqa: E402


def _format(value: float | str | None) -> str:
    if value is None or value is False:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


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
    """A 2D view: the image itself, or for a 3D one its three orthogonal middle slices side by side
    (sagittal, coronal, axial, each zero-padded to the largest side)."""
    image = np.asarray(image)
    if image.ndim != 3:
        return image
    views = [image.take(image.shape[axis] // 2, axis) for axis in range(3)]
    side = max(max(v.shape) for v in views)
    padded = [np.pad(v, [(0, side - v.shape[0]), (0, side - v.shape[1])]) for v in views]
    return np.concatenate(padded, axis=0)  # _show's rot90 lays axis 0 out left to right: sagittal first


# html -------------------------------------------------------------------------------------------
def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
