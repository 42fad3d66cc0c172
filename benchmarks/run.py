"""medsynth's performance suite: every ratio is measured side by side in one run, so a busy machine
slows both sides of a comparison alike and cannot fake a ratio.

Sections (``--only`` picks some):

- ``peak``: the machine's measured limits, a 3x3 convolution (channels_last) and a square matmul, fp32.
- ``network``: FLOPs of one sampling step of each family's default 2D network (counted with
  ``torch.utils.flop_counter``), its time, achieved FLOP/s and the fraction of the conv peak.
- ``families``: images/s of the diffusion and GAN families at their default sampling settings,
  same job, image size, batch and device (untrained weights: speed does not depend on them).
- ``training``: steps/s of medsynth's ``Trainer`` vs. a plain MONAI-tutorial loop (CacheDataset +
  DataLoader + the same network, batch, optimizer and noise) on the same MNI152 slices.
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

Usage: python benchmarks/run.py [--quick] [--only peak network ...] [--runs runs/bench] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medsynth.models import build_synthesizer
from medsynth.training import Trainer, load_experiment
from medsynth.training.trainer import peak_memory_mb
from medsynth.validation.fidelity import slice_scores
from medsynth.validation.provenance import provenance

if __package__:  # python -m benchmarks.run, or imported
    from .results_doc import performance_rows
else:  # python benchmarks/run.py: this folder is on sys.path
    from results_doc import performance_rows

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"


def seconds_per_call(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def model_of(config_name: str, device: torch.device):
    config = load_experiment(CONFIGS / config_name)
    model = build_synthesizer(config.family, config.spatial_dims, config.job.condition_channels, config.model)
    return config, model.to(device).eval()


def condition_for(config, batch: int, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if config.job.name == "generate":
        labels = torch.randint(0, config.job.num_classes, (batch, *spatial), generator=generator)
        return torch.nn.functional.one_hot(labels, config.job.num_classes).movedim(-1, 1).float().to(device)
    return torch.rand((batch, 1, *spatial), generator=generator).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# peak ------------------------------------------------------------------------------------------
def peak(args) -> dict:
    device, repeat = args.device, 3 if args.quick else 10
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 128, 128, device=device).to(memory_format=torch.channels_last)
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    with torch.no_grad():
        t_conv = seconds_per_call(lambda: (conv(x), synchronize(device)), repeat)
        t_mm = seconds_per_call(lambda: (a @ b, synchronize(device)), repeat)
    conv_flops = 2 * 8 * 64 * 64 * 9 * 128 * 128
    return {"conv3x3_gflops": conv_flops / t_conv / 1e9, "matmul_gflops": 2 * 2048**3 / t_mm / 1e9,
            "threads": torch.get_num_threads()}


# network efficiency -----------------------------------------------------------------------------
def sampling_step(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable]:
    """The family's default 2D denoise network and one sampling step on a batch of 16 at 64x64:
    a network evaluation (diffusion) or a whole sample (GAN: one pass)."""
    config, model = model_of(f"denoise_2d_{name}.yaml", device)
    condition = condition_for(config, 16, (64, 64), device)
    if name == "gan":
        return model, lambda memory_format=torch.contiguous_format: model.sample(
            condition.contiguous(memory_format=memory_format), seed=0)
    x, t = torch.randn(16, 1, 64, 64, device=device), torch.full((16,), 500, device=device)
    return model, lambda memory_format=torch.contiguous_format: model.network(
        torch.cat([x, condition], 1).contiguous(memory_format=memory_format), t)


def network(args, conv_peak: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    device, results = args.device, {}
    for name in ("diffusion", "gan"):
        model, step = sampling_step(name, device)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                step()
            flops = counter.get_total_flops()
            repeat = 3 if args.quick else 10
            entry = {"gflop_per_call": flops / 1e9, "batch": 16, "size": [64, 64]}
            for label, memory_format in (("contiguous", torch.contiguous_format),
                                         ("channels_last", torch.channels_last)):
                if memory_format == torch.channels_last:
                    model.to(memory_format=memory_format)
                seconds = seconds_per_call(lambda f=memory_format, s=step: (s(f), synchronize(device)), repeat)
                entry[label] = {"seconds": seconds, "gflops": flops / seconds / 1e9,
                                "fraction_of_conv_peak": flops / seconds / 1e9 / conv_peak}
            entry["time_by_operator"] = operator_shares(step)
            model.to(memory_format=torch.contiguous_format)
        results[name] = entry
    return results


def operator_shares(step: Callable) -> dict[str, float]:
    """Fractions of one call's CPU self time by kind of operator (torch.profiler): how much of a
    step is convolution (compute-bound) and how much is memory-bound normalisation/activation."""
    from torch.profiler import ProfilerActivity, profile

    kinds = {"convolution": ("conv", "mkldnn"), "normalisation": ("norm",), "activation": ("silu", "relu", "gelu"),
             "attention/matmul": ("bmm", "softmax", "addmm", "matmul", "mm", "attention"),
             "resampling": ("upsample", "interpolate", "pool")}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals = dict.fromkeys([*kinds, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, words in kinds.items() if any(w in name for w in words)), "other")
        totals[kind] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


# families ----------------------------------------------------------------------------------------
def families(args) -> dict:
    device, results = args.device, {}
    batch = 4 if args.quick else 16
    for job in ("denoise", "generate"):
        entry = {"batch": batch, "size": [64, 64]}
        for family in ("diffusion", "gan"):
            config, model = model_of(f"{job}_2d_{family}.yaml", device)
            condition = condition_for(config, batch, (64, 64), device)
            with torch.no_grad():  # a diffusion sample is 20-100 network calls: it warms itself up
                seconds = seconds_per_call(lambda m=model, c=condition: (m.sample(c, seed=0), synchronize(device)),
                                           1 if args.quick else 3, warmup=int(family == "gan"))
            evaluations = model.network_evaluations()
            entry[family] = {"images_per_second": batch / seconds, "network_evaluations": evaluations}
        entry["gan_over_diffusion"] = entry["gan"]["images_per_second"] / entry["diffusion"]["images_per_second"]
        results[job] = entry
    return results


# training throughput ------------------------------------------------------------------------------
def plain_loop(config, steps: int, device: torch.device, meta_tensors: bool = False) -> float:
    """A MONAI-tutorial loop for the same network, batch, data and noise: steady-state steps/s.

    ``meta_tensors``: feed the network the ``MetaTensor`` batches the DataLoader gives (as the
    tutorials do; every op then goes through MetaTensor's ``__torch_function__``) instead of
    plain tensors."""
    from monai.data import CacheDataset, DataLoader
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler
    from monai.transforms import Compose, CopyItemsd, RandRicianNoised, RandSpatialCropd

    from medsynth.training.dataset import load_volumes, split_volumes

    train = split_volumes(load_volumes(config.data, 2), config.data)["train"]
    image = train[0].image[0]  # (X, Y, Z)
    items = [{"image": image[None, :, :, k].numpy()} for k in range(image.shape[-1]) if image[..., k].max() > 0.1]
    transform = Compose([RandSpatialCropd("image", (64, 64), random_size=False), CopyItemsd("image", names="noisy"),
                         RandRicianNoised("noisy", prob=1.0, std=0.05, sample_std=True)])
    loader = DataLoader(CacheDataset(items, transform, progress=False), batch_size=config.train.batch_size,
                        shuffle=True, num_workers=0, drop_last=True)
    options = config.model
    torch.manual_seed(0)
    unet = DiffusionModelUNet(2, 2, 1, channels=options["channels"], attention_levels=options["attention_levels"],
                              num_res_blocks=options["num_res_blocks"], norm_num_groups=options["norm_num_groups"],
                              num_head_channels=options["num_head_channels"]).to(device)
    scheduler = DDPMScheduler(1000, schedule="scaled_linear_beta", prediction_type="v_prediction")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.train.lr)
    done, start = 0, None
    while done < steps:
        for batch in loader:
            clean, noisy = batch["image"].to(device) * 2 - 1, batch["noisy"].to(device)
            if not meta_tensors:
                clean, noisy = clean.as_tensor(), noisy.as_tensor()
            noise = torch.randn_like(clean)
            t = torch.randint(0, 1000, (clean.shape[0],), device=device)
            prediction = unet(torch.cat([scheduler.add_noise(clean, noise, t), noisy], 1), t)
            loss = torch.nn.functional.mse_loss(prediction, scheduler.get_velocity(clean, noise, t))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == 2:  # steady state: after the first steps (allocator warm-up)
                synchronize(device)
                start = time.perf_counter()
            if done == steps:
                break
    synchronize(device)
    return (steps - 2) / (time.perf_counter() - start)


def trainer_rate(config, steps: int, device: torch.device, out: Path) -> float:
    """medsynth's Trainer, steady-state steps/s from its own log (seconds at steps 2 and ``steps``)."""
    config.train.steps, config.train.log_every = steps, 1
    config.train.checkpoint_every = config.train.sample_every = steps
    Trainer(config, out, device=str(device), progress=False).fit()
    rows = (out / "log.csv").read_text().splitlines()
    seconds = {int(r.split(",")[0]): float(r.split(",")[-1]) for r in rows[1:]}
    return (steps - 2) / (seconds[steps] - seconds[2])


def training(args) -> dict:
    steps = 8 if args.quick else 40
    config = load_experiment(CONFIGS / "denoise_2d_diffusion.yaml", ["job.noise_sigma=[0.05,0.05]"])
    with tempfile.TemporaryDirectory() as tmp:  # plain, trainer, plain: a drift in machine speed shows
        before = plain_loop(config, steps, args.device)
        medsynth = trainer_rate(config, steps, args.device, Path(tmp) / "run")
        after = plain_loop(config, steps, args.device)
        meta = plain_loop(config, steps, args.device, meta_tensors=True)
    plain = (before + after) / 2
    return {"steps": steps, "batch": config.train.batch_size, "plain_steps_per_second": [before, after],
            "plain_metatensor_steps_per_second": meta, "trainer_steps_per_second": medsynth,
            "trainer_over_plain": medsynth / plain, "trainer_over_plain_metatensor": medsynth / meta}


# pipeline overhead --------------------------------------------------------------------------------
def pipeline(args) -> dict:
    """``augment`` end to end vs. its own network calls: ``model.sample`` is timed inside the same
    run, so the two figures share every condition of the machine."""
    from medsynth.data.samples import mni152
    from medsynth.io import write_nifti
    from medsynth.synthesis import augment
    from medsynth.synthesis.apply import TrainedModel

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, label = mni152()
        write_nifti(image, tmp / "in" / "images" / "mni.nii.gz")
        write_nifti(label, tmp / "in" / "labels" / "mni.nii.gz")
        for family, steps in (("gan", None), ("diffusion", 2)):
            config = load_experiment(CONFIGS / f"generate_2d_{family}.yaml",
                                     ["train.steps=1", "train.sample_every=1", "train.sample_steps=1"])
            Trainer(config, tmp / family, device=str(args.device), progress=False).fit()
            trained = TrainedModel.load(tmp / family, str(args.device))
            network_seconds = []
            sample = trained.model.sample

            def timed(*call_args, sample=sample, seconds=network_seconds, **call_options):
                start = time.perf_counter()
                out = sample(*call_args, **call_options)
                synchronize(args.device)
                seconds.append(time.perf_counter() - start)
                return out

            trained.model.sample = timed
            count = (1 if family == "diffusion" else 2) if args.quick else 4
            start = time.perf_counter()
            augment(tmp / "in" / "images", tmp / f"out_{family}", trained, labels=tmp / "in" / "labels",
                    per_image=count, steps=steps, batch_size=8, progress=False)
            end_to_end = time.perf_counter() - start
            network_only = sum(network_seconds)
            results[family] = {"volumes": count, "volume_shape": list(label.array.shape), "batch": 8,
                               "diffusion_steps": steps, "network_only_volumes_per_second": count / network_only,
                               "augment_volumes_per_second": count / end_to_end,
                               "augment_over_network_only": network_only / end_to_end}
    return results


# sampling speed vs quality ------------------------------------------------------------------------
SAMPLING = [("ddpm", 1000, 1), ("ddim", 50, 1), ("ddim", 20, 1), ("ddim", 10, 1), ("dpm_solver", 10, 1),
            ("dpm_solver", 5, 1), ("ddim", 5, 4)]


def sampling(args) -> dict:
    from restoration import CONFIGS, train_or_reuse

    from medsynth.data.degradations import interpolate_slabs, rician_noise, thick_slices
    from medsynth.training import RunDirectory
    from medsynth.training.dataset import load_volumes, split_volumes
    from medsynth.training.inference import load_synthesizer
    from medsynth.validation.fidelity import nlm_rician

    overrides = ["train.steps=40", "train.batch_size=8", "train.sample_every=1000"] if args.quick else []
    runs = Path(tempfile.mkdtemp(prefix="medsynth-quick-")) if args.quick else args.runs  # quick: always fresh
    results = {}
    for job in args.sampling_jobs:
        run, _, train_seconds = train_or_reuse(CONFIGS / f"{job}_2d_diffusion.yaml", 0, runs, overrides)
        config = RunDirectory(run).read_config()
        held = split_volumes(load_volumes(config.data, 2), config.data)["validation"]  # a choice: validation only
        clean_volume, mask_volume = held[0].image[0].numpy(), held[0].label[0].numpy() > 0
        model = load_synthesizer(run, args.device)
        if job == "denoise":  # whole axial slices of the held-out slab
            count = 1 if args.quick else 6
            picks = np.linspace(0, clean_volume.shape[2] - 1, count + 2).round().astype(int)[1:-1]
            clean = np.stack([clean_volume[:, :, k] for k in picks])
            condition_np = rician_noise(clean, 0.05, np.random.default_rng(123)).astype(np.float32)
            baseline_name, baseline = "nlm", np.moveaxis(nlm_rician(np.moveaxis(condition_np, 0, -1), 0.05), -1, 0)
        else:  # coronal planes (x, z) of the slab, thick in z (factor 2)
            count = 2 if args.quick else 12
            brain = np.flatnonzero(mask_volume.any(axis=(0, 2)))
            picks = np.linspace(brain[0], brain[-1], count + 2).round().astype(int)[1:-1]
            clean = np.stack([clean_volume[:, j, :] for j in picks])
            thick, low = thick_slices(clean, 2, axis=-1, return_low_res=True, interpolation=config.job.interpolation)
            condition_np = thick.astype(np.float32)
            baseline_name = "cubic"
            baseline = interpolate_slabs(low, 2, clean.shape[-1], kind="cubic")
        condition = torch.from_numpy(condition_np)[:, None].to(args.device)
        entry = {"train_seconds": train_seconds, "images": count, "size": list(clean.shape[1:]),
                 "input": scores(condition_np, clean), baseline_name: scores(baseline, clean)}
        for sampler, steps, ensemble in SAMPLING:
            label = f"{sampler}-{steps}" + (f"x{ensemble}" if ensemble > 1 else "")
            with torch.no_grad():
                start = time.perf_counter()
                out = model.sample(condition, seed=0, sampler=sampler, num_inference_steps=steps, ensemble=ensemble)
                synchronize(args.device)
                seconds = time.perf_counter() - start
            estimate = out[:, 0].cpu().numpy()
            entry[label] = {"network_evaluations": model.network_evaluations(sampler=sampler, num_inference_steps=steps,
                                                                             ensemble=ensemble),
                            "seconds": seconds,
                            "images_per_second": count / seconds, **scores(estimate, clean)}
        reference = entry["ddpm-1000"]
        for value in entry.values():
            if isinstance(value, dict) and "network_evaluations" in value:
                value["speedup_over_ddpm"] = reference["seconds"] / value["seconds"]
                value["psnr_minus_ddpm"] = value["psnr"] - reference["psnr"]
        results[job] = entry
    plot_sampling(results, RESULTS / f"sampling_curve_{'quick' if args.quick else 'full'}.png")
    return results


def scores(estimate: np.ndarray, clean: np.ndarray) -> dict:
    """Mean PSNR and SSIM of ``(N, H, W)`` images over the regions that every medsynth table uses
    (:data:`medsynth.validation.fidelity.REGIONS`: head mask, head bounding box)."""
    per_image = slice_scores(np.moveaxis(estimate, 0, -1), np.moveaxis(clean, 0, -1))
    return {metric: float(np.mean(values)) for metric, values in per_image.items()}


def plot_sampling(results: dict, path: Path) -> None:
    """PSNR and SSIM against images/s, one column per job: the speed/quality curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for column, (job, entry) in enumerate(results.items()):
        points = {k: v for k, v in entry.items() if isinstance(v, dict) and "network_evaluations" in v}
        for row, metric in enumerate(("psnr", "ssim")):
            ax = axes[row, column]
            for label, value in points.items():
                ax.scatter(value["images_per_second"], value[metric],
                           color="C1" if label.startswith("dpm_solver") else "C0")
                ax.annotate(label, (value["images_per_second"], value[metric]), fontsize=8, xytext=(3, 3),
                            textcoords="offset points")
            for name, style in (("input", ":"), ("nlm", "--"), ("cubic", "--")):
                if name in entry:
                    ax.axhline(entry[name][metric], color="grey", linestyle=style,
                               label=f"{name} {entry[name][metric]:.3f}")
            ax.set_xscale("log")
            ax.set(xlabel="images / s (log)", ylabel="PSNR (dB, head)" if metric == "psnr" else "SSIM",
                   title=f"{job}: speed vs {metric.upper()}")
            ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# memory ---------------------------------------------------------------------------------------------
def process_peak_mb(device: torch.device) -> float:
    """This process's peak memory: on Linux the high-water mark of its own address space (VmHWM;
    ``ru_maxrss`` would carry over the parent's peak through fork and exec), else ``peak_memory_mb``."""
    status = Path("/proc/self/status")
    if device.type == "cpu" and status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_memory_mb(device)


def memory_case(case: str, device: str, run: str | None) -> dict:
    """One measurement, run in a fresh process (peak RSS is per process)."""
    from medsynth.models import StepContext

    device = torch.device(device)
    baseline = process_peak_mb(device)
    kind, size = case.split("_")
    if kind in ("train", "sample"):
        side = int(size)
        config, model = model_of("denoise_3d_diffusion.yaml", device)
        target = torch.rand(1, 1, side, side, side, device=device)
        if kind == "train":
            model.train()
            optimizer = torch.optim.AdamW(model.parameters())

            def optimize(group: str, loss: torch.Tensor) -> float:
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return 0.0

            context = StepContext(torch.Generator().manual_seed(0), device, lambda: torch.autocast(device.type,
                                                                                                     enabled=False),
                                  optimize)
            start = time.perf_counter()
            for _ in range(2):
                model.training_step({"target": target, "condition": target}, context)
        else:
            start = time.perf_counter()
            with torch.no_grad():
                model.sample(target, seed=0, num_inference_steps=2, ensemble=1)
        return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": time.perf_counter() - start}
    if kind == "latent":  # one whole label-conditioned volume at the config's sampling defaults (untrained weights)
        side = int(size)
        config, model = model_of("generate_3d_latent_diffusion.yaml", device)
        condition = condition_for(config, 1, (side,) * 3, device)
        start = time.perf_counter()
        with torch.no_grad():
            model.sample(condition, seed=0)
        synchronize(device)
        return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": time.perf_counter() - start}
    return full_volume(Path(run), size, device, baseline)


def full_volume(run: Path, family: str, device: torch.device, baseline: float) -> dict:
    """Denoise a 256x256x160 volume (MNI152 padded) in overlapping windows (two training patches a side); seam check."""
    from medsynth.data.degradations import rician_noise
    from medsynth.data.samples import mni152
    from medsynth.synthesis.apply import WINDOW_OVERLAP, TrainedModel, restoration_window, run_on_volume

    trained = TrainedModel.load(run, str(device))
    image = mni152()[0].array
    image = image / np.percentile(image, 99.5)
    clean = np.zeros((256, 256, 160), np.float32)
    shape = [min(a, b) for a, b in zip(image.shape, clean.shape, strict=True)]
    offsets = [(image.shape[i] - shape[i]) // 2 for i in range(3)]
    region = tuple(slice(o, o + s) for o, s in zip(offsets, shape, strict=True))
    clean[tuple(slice(0, s) for s in shape)] = np.clip(image[region], 0, 1)
    noisy = rician_noise(clean[None], 0.05, np.random.default_rng(0))[0].astype(np.float32)
    options = {"num_inference_steps": 2, "ensemble": 1} if family == "diffusion" else {}
    start = time.perf_counter()
    with torch.no_grad():
        out = run_on_volume(trained, noisy[None], seed=0, batch_size=1, patch_wise=True, **options)
    seconds = time.perf_counter() - start
    # window edges of MONAI's sliding window inside the volume
    roi = restoration_window(trained.config, clean.shape)
    error = np.abs(out - clean)
    near, far = np.zeros(clean.shape, bool), np.ones(clean.shape, bool)
    for axis, (length, window) in enumerate(zip(clean.shape, roi, strict=True)):
        edges = window_edges(length, window, WINDOW_OVERLAP)
        coords = np.arange(length)
        distance = np.min([np.abs(coords - e) for e in edges], axis=0) if edges else np.full(length, length)
        shape_axis = [1, 1, 1]
        shape_axis[axis] = length
        near |= (distance <= 1).reshape(shape_axis)
        far &= (distance >= 16).reshape(shape_axis)
    brain = clean > 0.05
    # a seam is a jump: the output's step between neighbours across a window edge vs. far from edges
    jumps_at_edges, jumps_elsewhere = [], []
    for axis, (length, window) in enumerate(zip(clean.shape, roi, strict=True)):
        step = np.abs(np.diff(out, axis=axis))
        between = sorted({e - 1 for e in window_edges(length, window, WINDOW_OVERLAP)})
        inside = np.moveaxis(brain[tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))], axis, 0)
        moved = np.moveaxis(step, axis, 0)
        far_rows = [i for i in range(length - 1) if all(abs(i - e) >= 16 for e in between)]
        jumps_at_edges.append(moved[between][inside[between]])
        jumps_elsewhere.append(moved[far_rows][inside[far_rows]])
    return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": seconds,
            "shape": list(clean.shape), "window": list(roi),
            "mae_at_window_edges": float(error[near & brain].mean()),
            "mae_at_window_centres": float(error[far & brain].mean()),
            "mae_noisy_input": float(np.abs(noisy - clean)[brain].mean()),
            "jump_at_window_edges": float(np.concatenate(jumps_at_edges).mean()),
            "jump_away_from_edges": float(np.concatenate(jumps_elsewhere).mean())}


def window_edges(length: int, window: int, overlap: float) -> list[int]:
    """Positions of the window borders inside ``[1, length)`` of MONAI's sliding window along one axis."""
    stride = max(1, int(window * (1 - overlap)))
    starts = sorted({min(s, length - window) for s in range(0, length, stride)})
    return sorted({e for s in starts for e in (s, s + window)} - {0, length})


def memory(args) -> dict:
    sides = (32, 64) if args.quick else (32, 64, 128)
    cases = [f"{kind}_{side}" for side in sides for kind in ("train", "sample")]
    results = {}
    for case in [*cases, "latent_128"]:
        results[case] = run_case(case, args.device, [])
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("gan",) if args.quick else ("gan", "diffusion"):
            steps = 40 if args.quick else 300
            config = load_experiment(CONFIGS / f"denoise_3d_{family}.yaml",
                                     [f"train.steps={steps}", f"train.sample_every={steps}"])
            Trainer(config, Path(tmp) / family, device=str(args.device), progress=False).fit()
            measured = run_case(f"volume_{family}", args.device, ["--run", f"{tmp}/{family}"])
            results[f"full_volume_{family}"] = {"trained_steps": steps, **measured}
    return results


def run_case(case: str, device: torch.device, extra: list[str]) -> dict:
    command = [sys.executable, __file__, "--memory-case", case, "--device", str(device), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


SECTIONS = ["peak", "network", "families", "training", "pipeline", "sampling", "memory"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a quarter of an hour on 2 CPU cores)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"),
                        help="full mode: where the sampling section trains (or finds) its models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sampling-jobs", nargs="+", choices=["denoise", "super_resolve"],
                        default=["denoise", "super_resolve"], help="jobs of the sampling section")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.device, args.run)))
        return
    args.device = torch.device(args.device)
    out = RESULTS / f"performance_{'quick' if args.quick else 'full'}.json"
    report = json.loads(out.read_text()) if out.exists() else {}  # sections run earlier are kept
    report["device"] = str(args.device)
    began = time.perf_counter()
    for section in args.only:
        start = time.perf_counter()
        if section == "network":
            conv_peak = report.get("peak", {}).get("conv3x3_gflops") or peak(args)["conv3x3_gflops"]
            report[section] = network(args, conv_peak)
        else:
            report[section] = globals()[section](args)
        report[section]["provenance"] = provenance(seconds=round(time.perf_counter() - start, 1),
                                                   load_average=round(os.getloadavg()[0], 2))
        print(f"{section}: {time.perf_counter() - start:.0f} s", flush=True)
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every section: a stopped run keeps its results
    print(f"\nperformance suite ({'quick' if args.quick else 'full'}, {report['device']}, "
          f"{time.perf_counter() - began:.0f} s); {out}; docs/results.md: python benchmarks/results_doc.py")
    rows = [row for section in args.only for row in performance_rows(section, report[section])]
    width = max(len(r[0]) for r in rows)
    for measure, value, target in rows:
        print(f"{measure:<{width}}  {value:<40} {target}")

if __name__ == "__main__":
    main()
