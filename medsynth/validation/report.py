"""Report pages: PNG figures and one self-contained ``report.html`` (figures embedded).

The shared drawing helpers and ``medsynth validate``'s page; ``medsynth compare``'s page is
:mod:`medsynth.validation.compare_report`. 3D images are shown as three orthogonal middle slices.
How to read the reports: docs/report.md.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medsynth.io.files import atomic_path
from medsynth.training.figures import subplots
from medsynth.validation.compare_measure import REAL_TRAINING
from medsynth.validation.compare_results import FamilyFigures, Memorization, Realism
from medsynth.validation.realism import ImageSet
from medsynth.validation.unpaired import format_ci95


def _format(value: float | str | None) -> str:
    if value is None or value is False:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _interval(entry: object | None, digits: int = 3) -> str:
    """``value [low, high]`` of a ``{"value", "ci95"}`` record or an interval object; "—" for none."""
    return format_ci95(entry, digits) if entry else "—"


def _errorbar(entries: list[dict]) -> tuple[list[float], np.ndarray]:
    values = [e["value"] for e in entries]
    spread = np.array([[e["value"] - e["ci95"][0] for e in entries], [e["ci95"][1] - e["value"] for e in entries]])
    return values, np.clip(spread, 0, None)


# figures ----------------------------------------------------------------------------------------
def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def _show(axis: Axes, image: np.ndarray, title: str = "", **kwargs) -> None:
    axis.imshow(np.rot90(image), **({"cmap": "gray", "vmin": 0, "vmax": 1} | kwargs))
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def loss_figure(shown: dict[str, FamilyFigures], path: Path) -> Path:
    figure, axes = subplots(1, len(shown), (4.2 * len(shown), 3))
    for axis, (name, items) in zip(axes[0], shown.items(), strict=True):
        curves = items.curves
        for key, values in curves.items():
            if key.startswith("loss") and len(values) == len(curves["step"]):
                axis.plot(curves["step"], values, label=key, linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(name, fontsize=9)
        axis.legend(fontsize=6)
    return _save(figure, path)


def realism_figure(realism: Realism, path: Path) -> Path:
    """KID with its 95% interval in each feature space, families beside the real training slices."""
    spaces = list(realism.spaces)
    figure, axes = subplots(1, len(spaces), (3.4 * len(spaces), 2.8))
    for axis, space in zip(axes[0], spaces, strict=True):
        entry = realism.spaces[space]
        rows = {f: r.kid.as_dict() for f, r in entry.families.items()}
        if entry.reference is not None:
            rows[REAL_TRAINING] = entry.reference.kid.as_dict()
        values, spread = _errorbar(list(rows.values()))
        axis.bar(range(len(rows)), values, yerr=spread, capsize=4, color=["C0", "C1", "C2", "C3"][:len(rows)])
        axis.set_xticks(range(len(rows)), list(rows), fontsize=7, rotation=20)
        axis.axhline(0, color="k", linewidth=0.6)
        axis.set_title(f"KID, {space} features", fontsize=9)
    return _save(figure, path)


def nearest_figure(shown: dict[str, FamilyFigures], train: ImageSet, path: Path, pairs: int = 2) -> Path:
    """Per family: the held-out real images' nearest-training distances (histogram), the copy threshold
    and the closest samples' distances, in both spaces; then the closest pairs (features)."""
    columns = 2 + 2 * pairs
    figure, axes = subplots(len(shown), columns, (2.2 * columns, 2.2 * len(shown)))
    for r, (name, items) in enumerate(shown.items()):
        calibrated = items.memorization.results
        for c, (space, result) in enumerate(calibrated.items()):
            axis = axes[r, c]
            axis.hist(result.held_distance, bins=15, color="0.7", label="held-out real")
            axis.axvline(result.threshold, color="r", linewidth=1, label="copy threshold")
            for d in np.sort(result.distance)[:pairs]:
                axis.axvline(d, color="C0", linewidth=1, linestyle="--")
            axis.set_title(f"{name}: {space}", fontsize=8)
            axis.tick_params(labelsize=6)
            if r == 0 and c == 0:
                axis.legend(fontsize=5)
        if len(calibrated) == 1:  # no condition residuals (no label maps)
            axes[r, 1].axis("off")
        result = calibrated["features"]
        for k, i in enumerate(np.argsort(result.distance)[:pairs]):
            _show(axes[r, 2 + 2 * k], _view(items.pairs.images[i, 0]),
                  f"d={result.distance[i]:.3g} (pct {result.percentile[i]:.0%})")
            _show(axes[r, 3 + 2 * k], _view(train.images[result.nearest[i], 0]), "nearest training")
    figure.suptitle("Nearest-training distances: held-out real images (grey), closest samples (dashed)", fontsize=9)
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


def write_validation_report(out: Path, report: dict, real: ImageSet, synthetic: ImageSet, train: ImageSet | None,
                            realism: Realism, memorization: Memorization | None) -> Path:
    """Figures and ``report.html`` of ``medsynth validate`` (``memorization``: None without ``--train``)."""
    m = report["metrics"]
    rows = []
    for space, entry in realism.spaces.items():
        record = entry.families["synthetic"]
        fid = record.fid
        reference = "" if entry.reference is None else \
            f"; real training images: {_interval(entry.reference.kid)}"
        rows.append([f"KID, {space} features", _interval(record.kid),
                     f"95% interval; ~0 = same distribution as REAL_DIR{reference}"])
        rows.append([f"FID, {space} features", _format(fid.get("value")),
                     "valid" if fid.get("valid") else f"biased: {fid.get('reason', 'too few images')}"])
    rows.append(["MS-SSIM among synthetic", _format(m["ms_ssim"]["synthetic"]),
                 f"real: {m['ms_ssim']['real']:.3f}; lower = more diverse"])
    rows += [[f"intensity Wasserstein-1, {k}", _format(v), "image units in [0, 1]"]
             for k, v in m["intensity_wasserstein"].items()]
    if "fidelity" in m:
        f = m["fidelity"]
        rows.append(["paired PSNR / SSIM", f"{f['psnr']:.2f} dB / {f['ssim']:.3f}",
                     f"{f['pairs']} synthetic images against the real images of the same name"])
    if memorization is None:
        rows.append(["copies of training images", "—", m["memorization"]["reason"]])
    for space, result in ({} if memorization is None else memorization.results).items():
        share = memorization.shares[space]
        inside = result.held_out_in_training
        warning = (f" WARNING: {inside} of REAL_DIR's images are identical to training images, so the calibration "
                   "is void; give real images the generator never trained on." if inside else "")
        rows.append([f"share flagged as copies ({result.space})",
                     f"{share.flagged} of {share.n}: {_interval(share)}", result.rule + warning])
    figures = out / "figures"
    paths = {"Real and synthetic images": grid_figure({"real": real, "synthetic": synthetic}, figures / "samples.png"),
             "Realism: KID per feature space, 95% intervals": realism_figure(realism, figures / "kid.png")}
    if memorization is not None and train is not None:
        paths["Memorization: nearest-training distances and closest pairs"] = nearest_figure(
            {"synthetic": FamilyFigures(synthetic, memorization)}, train, figures / "nearest.png")
    body = (f"<p>{len(real)} real images ({html.escape(report['real'])}) and {len(synthetic)} synthetic images "
            f"({html.escape(report['synthetic'])}), {report['spatial_dims']}D, on a "
            f"{'x'.join(map(str, report['shape']))} grid; memorization against "
            f"{html.escape(report['train'] or 'nothing (no --train)')}. "
            f"Trained features: {html.escape(report['feature_network']['description'])}. Computed in this run "
            f"({report['seconds']:.0f} s).</p>" + _html_table(["metric", "value", "note"], rows))
    return _write_page(out, "medsynth validation report", body, paths)


def grid_figure(sets: dict[str, ImageSet], path: Path, columns: int = 8) -> Path:
    """One row per set: ``columns`` evenly chosen images."""
    figure, axes = subplots(len(sets), columns, (1.6 * columns, 1.8 * len(sets)))
    for r, (name, images) in enumerate(sets.items()):
        chosen = np.linspace(0, len(images) - 1, columns).round().astype(int)
        for c, index in enumerate(chosen):
            _show(axes[r, c], _view(images.images[index, 0]), f"{name}" if c == 0 else "")
    return _save(figure, path)
