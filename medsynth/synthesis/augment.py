"""``augment``: new (image, label) pairs, new images, or variations, from a folder of real data.

- Label-conditioned models: each real label map is randomly deformed (:mod:`.labels`) and an
  image is generated for it: ``per_image`` new pairs per input.
- Unconditional models: ``count`` new images, each on the grid of an input image (cycled).
- Diffusion models with ``strength``: variations of each real image (noised to ``strength`` of
  the schedule and denoised, SDEdit); label-conditioned models keep the real label map.

Outputs keep the source geometry and intensity units; the folder gets ``dataset.json`` and
``manifest.csv`` (:mod:`.outputs`). Each output's seed derives from ``seed`` and its name, so a
rerun gives the same files, skips the finished ones, and distributed ranks need no coordination
but the final merge.

With ``reject`` (e.g. :func:`medsynth.validation.copies.near_copy_check`, what ``--reject-copies``
uses), an output that the check flags as a near-copy of a training image is not written; it is
listed with its ratio in ``rejected.csv`` (``rejected.<rank>.csv`` under ``torchrun``) and not
retried by a rerun.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.errors import MedsynthError, check_count, display
from medsynth.io import ImageSource, MedicalImage, find_input_images, write_dicom_series, write_nifti
from medsynth.io.dicom_seg import write_dicom_seg
from medsynth.io.files import (
    LOCK_NAME,
    NNUNET_IMAGE,
    NNUNET_LABEL,
    append_line,
    check_separate,
    csv_line,
    folder_lock,
    inside_output,
    prepare_output_dir,
    write_datalist,
    write_nnunet_dataset,
)
from medsynth.io.pairing import check_label, pair_labels
from medsynth.models import SampleOptions, label_condition
from medsynth.progress import progress as show_progress
from medsynth.synthesis.apply import (
    MAX_BATCH,
    TrainedModel,
    from_model_space,
    from_ras,
    output_seed,
    run_on_volume,
    to_model_space,
    to_ras,
)
from medsynth.synthesis.labels import deform_label
from medsynth.synthesis.outputs import OutputRecord, read_csv_rows
from medsynth.training.distributed import Ranks

log = logging.getLogger("medsynth")
#: most outputs one run makes (``--count``, ``--per-image`` times the inputs)
MAX_OUTPUTS = 10**6
#: output folder layouts: MONAI datalist, or nnU-Net v2 raw dataset
LAYOUTS = ("monai", "nnunet")

#: flags a near-copy: given an output in model space (RAS, [0, 1]), its memorization ratio, else None
CopyCheck = Callable[[np.ndarray], "float | None"]


class NearCopy(Exception):
    """An output that the copy check flagged (its memorization ratio)."""

    def __init__(self, ratio: float) -> None:
        super().__init__(f"near-copy of a training image (ratio {ratio:.3f})")
        self.ratio = ratio


@dataclass
class _Task:
    source: ImageSource
    label: ImageSource | None
    name: str


def augment(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | TrainedModel,
    *,
    labels: str | os.PathLike | None = None,
    count: int | None = None,
    per_image: int = 1,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    strength: float | None = None,
    output_format: str = "nifti",
    layout: str = "monai",
    batch_size: int = 8,
    device: str = "auto",
    reject: CopyCheck | None = None,
    progress: bool = True,
) -> Path:
    """Write synthetic data for the images under ``input_dir`` into ``output_dir``; returns ``dataset.json``.

    Args:
        input_dir: NIfTI files and/or DICOM series, nested.
        output_dir: created if needed; never inside ``input_dir`` or ``labels``.
        model: a ``generate`` run directory (or a loaded :class:`TrainedModel`).
        labels: label maps matched to the images by file stem (label-conditioned models).
        count: unconditional models: number of images (default one per input image).
        per_image: label-conditioned models and variations: outputs per input image.
        seed: base seed.
        steps, sampler: diffusion sampling (GANs ignore them with a note).
        strength: diffusion only: make variations of the real images, noised to this fraction
            of the schedule, in (0, 1].
        output_format: ``nifti`` or ``dicom`` (image series, and labels as DICOM SEG files).
        layout: ``monai``: ``images/``, ``labels/`` and a MONAI datalist ``dataset.json`` (with
            the class names); ``nnunet``: nnU-Net v2's raw dataset, ``imagesTr/<case>_0000.nii.gz``,
            ``labelsTr/<case>.nii.gz`` and its ``dataset.json`` (label-conditioned models, NIfTI).
        batch_size: 2D slices per network call.
        device: ``auto``, ``cpu`` or ``cuda``.
        reject: a copy check; flagged outputs are not written but listed in ``rejected.csv``.
        progress: show a progress bar.

    Raises:
        MedsynthError: wrong model, missing or mismatched labels, unreadable input, unwritable output.
    """
    if output_format not in ("nifti", "dicom"):
        raise MedsynthError(f"--format {output_format}: use nifti or dicom")
    if layout not in LAYOUTS:
        raise MedsynthError(f"--layout {layout}: use {' or '.join(LAYOUTS)}")
    if layout == "nnunet" and output_format != "nifti":
        raise MedsynthError("--layout nnunet: nnU-Net reads NIfTI; drop --format dicom")
    check_count("--per-image", per_image, MAX_OUTPUTS)
    check_count("--batch-size", batch_size, MAX_BATCH)
    if count is not None:
        check_count("--count", count, MAX_OUTPUTS)
    output_dir = Path(output_dir)
    trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model, device)
    trained.require_job("generate")
    check_separate(output_dir, [input_dir, labels, trained.run_dir], "output folder")
    if strength is not None and ("strength" not in trained.model.sample_options or not 0 < strength <= 1):
        raise MedsynthError("--strength: variations need a diffusion model and a strength in (0, 1]")
    conditional = trained.config.job.num_classes > 0
    if count is not None and (conditional or strength is not None):
        raise MedsynthError("--count applies to unconditional models; this model makes --per-image outputs for each "
                            "input" + (" label map" if conditional else " image"))
    sources = find_input_images(input_dir, labels)
    if layout == "nnunet" and not conditional:
        raise MedsynthError(f"--layout nnunet: nnU-Net trains on image + label pairs; {trained.run_dir} is not a "
                            "label-conditioned model")
    if conditional and labels is None:
        raise MedsynthError(f"{trained.run_dir}: this model generates from label maps; give them with --labels")
    pairs = pair_labels(sources, labels) if conditional else [(s, None) for s in sources]
    for _, label_source in pairs:  # every label's values checked before the first output is written
        if label_source is not None:
            label = label_source.read()
            check_label(label, label, trained.config.job.num_classes)  # its grid is checked with its image later

    if conditional or strength is not None:
        total = len(pairs) * per_image
    else:
        total = count if count is not None else len(sources) * per_image
    if total > MAX_OUTPUTS:
        raise MedsynthError(f"{total} outputs asked for, more than {MAX_OUTPUTS} in one run; split the run into "
                            "several output folders")
    prepare_output_dir(output_dir, input_dir, labels, trained.run_dir)
    if conditional or strength is not None:
        tasks = [_Task(s, lab, f"{s.name}_syn{k:03d}") for s, lab in pairs for k in range(per_image)]
    else:
        tasks = [_Task(sources[i % len(sources)], None, f"{sources[i % len(sources)].name}_syn{i // len(sources):03d}")
                 for i in range(total)]
    options = trained.sample_options(steps=steps, sampler=sampler, strength=strength)
    sampler_name, evaluations = trained.describe_sampling(options)
    settings = {"model": display(trained.run_dir.resolve()), "seed": seed, "per_image": per_image, "count": count,
                "strength": strength, "format": output_format, "sampler": sampler_name, "steps": evaluations,
                "layout": layout}
    ranks = Ranks.from_environment()
    lock_name = LOCK_NAME if ranks.part is None else f"{LOCK_NAME}.{ranks.part}"
    with folder_lock(output_dir, "output folder", lock_name):
        record = OutputRecord(output_dir, settings, _dataset_json(output_dir, trained, layout), part=ranks.part)
        mine = [t for i, t in enumerate(tasks) if ranks.owns(i)]
        rejected = _Rejected(output_dir, ranks.part)
        todo = [t for t in mine if not record.done(_paths(t.name, output_format, layout)[0]) and t.name not in rejected]
        if len(todo) < len(mine):
            log.info("%d of %d outputs already done in %s; skipping them", len(mine) - len(todo), len(mine),
                     display(output_dir))
        bar = show_progress(todo, desc="augment", unit="image", enabled=progress)
        cached: tuple[ImageSource | None, MedicalImage | None] = (None, None)
        try:
            for task in bar:
                if cached[0] is not task.source:
                    cached = (task.source, task.source.read())
                image = cached[1]
                start = time.perf_counter()
                try:
                    row = _make_one(trained, task, image, output_dir, output_seed(seed, task.name), options,
                                    output_format, layout, batch_size, reject)
                except NearCopy as copy:
                    rejected.add(task.name, copy.ratio)
                    continue
                row.update(sampler=sampler_name, steps=evaluations, seconds=round(time.perf_counter() - start, 3))
                record.add(row)
        except BaseException:
            if ranks.part is None:
                record.finish()  # the datalist lists what is done, for a user who stops here
            raise
        if rejected.count:
            log.warning("%d outputs were near-copies of training images and were not written (%s)", rejected.count,
                        display(rejected.path))
        ranks.barrier()  # every rank's part is written; rank 0 folds them into the manifest and datalist
        if ranks.is_main:
            record.finish()
        ranks.barrier()
    return output_dir / "dataset.json"


class _Rejected:
    """The outputs a copy check refused, kept in ``rejected.csv`` (name, ratio) so reruns skip them."""

    def __init__(self, folder: Path, part: str | None) -> None:
        self.path = folder / ("rejected.csv" if part is None else f"rejected.{part}.csv")
        self.rows: dict[str, str] = {}
        if self.path.exists():
            self.rows = {row["output"]: row.get("ratio", "") for row in read_csv_rows(self.path) if "output" in row}

    def __contains__(self, name: str) -> bool:
        return name in self.rows

    @property
    def count(self) -> int:
        return len(self.rows)

    def add(self, name: str, ratio: float) -> None:
        self.rows[name] = f"{ratio:.4f}"
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                append_line(self.path, csv_line(["output", "ratio"]))
            append_line(self.path, csv_line([name, self.rows[name]]))
        except OSError as err:
            raise MedsynthError(f"{display(self.path)}: cannot write ({err.strerror or err})") from None


def _paths(name: str, output_format: str, layout: str) -> tuple[str, str]:
    """The image and label paths of output ``name``, relative to the output folder."""
    if layout == "nnunet":
        return NNUNET_IMAGE.format(case=name), NNUNET_LABEL.format(case=name)
    if output_format == "dicom":  # a DICOM series, and its labels as a DICOM SEG file
        return f"images/{name}", f"labels/{name}.dcm"
    return f"images/{name}.nii.gz", f"labels/{name}.nii.gz"


def _dataset_json(folder: Path, trained: TrainedModel, layout: str) -> Callable[[list[dict[str, str]]], Path]:
    """Writes the folder's ``dataset.json``: a MONAI datalist, or nnU-Net's dataset description."""
    labels = trained.config.job.labels
    if layout == "nnunet":
        channel = "CT" if (trained.config.data.modality or "").upper() == "CT" else "MRI"
        return lambda entries: write_nnunet_dataset(folder, len(entries), labels, channel)
    description = f"medsynth augment: {trained.family} {trained.run_dir.name}"
    return lambda entries: write_datalist(folder, entries, description, labels)


def synthesize(
    trained: TrainedModel, image: MedicalImage, label: MedicalImage | None, seed: int, *,
    options: SampleOptions | None = None, batch_size: int = 8, reject: CopyCheck | None = None,
) -> tuple[MedicalImage, MedicalImage | None]:
    """One synthetic output on ``image``'s grid: an image (and, with ``label``, its label map).

    With a label (label-conditioned models) the label is deformed at random (seeded) and an image
    generated for it; with ``options.strength`` (diffusion variations) the real image is noised
    and denoised and the label kept. Intensities come back in ``image``'s units.

    Raises:
        NearCopy: ``reject`` flagged the output as a near-copy of a training image.
    """
    config = trained.config
    options = trained.sample_options() if options is None else options
    variation = options.strength is not None
    x, space = to_model_space(image, config)
    condition = label_ras = None
    if label is not None:
        label_ras, _ = to_ras(check_label(label, image, config.job.num_classes))
        if not variation:
            label_ras = deform_label(label_ras, seed)
        condition = label_condition(label_ras[None], config.job.num_classes)[0].numpy()
    out = run_on_volume(trained, condition, seed=seed, options=options, batch_size=batch_size, shape=x.shape,
                        init=x if variation else None)
    ratio = reject(out) if reject is not None else None
    if ratio is not None:
        raise NearCopy(ratio)
    result = from_model_space(out, space, series_description=f"medsynth synthetic ({trained.family})",
                              source=f"medsynth synthetic from {image.name}")
    if label_ras is None:
        return result, None
    new_label = MedicalImage(from_ras(label_ras, space.orientation), image.affine.copy(),
                             {"source": f"medsynth deformed label of {image.name}"})
    return result, new_label


def _make_one(trained: TrainedModel, task: _Task, image: MedicalImage, output_dir: Path, seed: int,
              options: SampleOptions, output_format: str, layout: str, batch_size: int,
              reject: CopyCheck | None) -> dict:
    label = None if task.label is None else task.label.read()
    result, new_label = synthesize(trained, image, label, seed, options=options, batch_size=batch_size,
                                   reject=reject)
    image_rel, label_rel = _paths(task.name, output_format, layout)
    if output_format == "nifti":
        write_nifti(result, inside_output(output_dir, image_rel))
    else:
        write_dicom_series(result, inside_output(output_dir, image_rel),
                           series_description=result.meta["series_description"], uid_seed=f"{task.name}/{seed}")
    row = {"output": image_rel, "source": str(task.source.path), "model": str(trained.run_dir),
           "family": trained.family, "job": trained.job, "seed": seed, "label": ""}
    if new_label is not None:
        row["label"] = label_rel
        if output_format == "dicom":
            write_dicom_seg(new_label, output_dir / image_rel, inside_output(output_dir, label_rel),
                            trained.config.job.labels, uid_seed=f"{task.name}/{seed}")
        else:
            write_nifti(new_label, inside_output(output_dir, label_rel))
    return row
