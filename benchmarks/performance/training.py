"""``training``: steps/s of medsynth's ``Trainer`` vs. a plain MONAI-tutorial loop (CacheDataset +
DataLoader + the same network, schedule, batch, optimizer and noise) on the same MNI152 slices."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.performance.common import CONFIGS, synchronize
from medsynth.models import build_synthesizer
from medsynth.training import RunDirectory, Trainer, load_experiment


def measure(args: argparse.Namespace, report: dict) -> dict:
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


def plain_loop(config, steps: int, device: torch.device, meta_tensors: bool = False) -> float:
    """A MONAI-tutorial loop for the config's diffusion network and noise schedule (built by
    medsynth, v-prediction), batch, data and noise: steady-state steps/s.

    ``meta_tensors``: feed the network the ``MetaTensor`` batches the DataLoader gives (as the
    tutorials do; every op then goes through MetaTensor's ``__torch_function__``) instead of
    plain tensors."""
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose, CopyItemsd, RandRicianNoised, RandSpatialCropd

    from medsynth.training.dataset import load_volumes, split_volumes

    train = split_volumes(load_volumes(config.data, 2), config.data)["train"]
    image = train[0].image[0]  # (X, Y, Z)
    items = [{"image": image[None, :, :, k].numpy()} for k in range(image.shape[-1]) if image[..., k].max() > 0.1]
    transform = Compose([RandSpatialCropd("image", (64, 64), random_size=False), CopyItemsd("image", names="noisy"),
                         RandRicianNoised("noisy", prob=1.0, std=0.05, sample_std=True)])
    loader = DataLoader(CacheDataset(items, transform, progress=False), batch_size=config.train.batch_size,
                        shuffle=True, num_workers=0, drop_last=True)
    torch.manual_seed(0)
    model = build_synthesizer(config.family, config.spatial_dims, config.job.condition_channels, config.model)
    unet, scheduler = model.network.to(device), model.scheduler
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.train.lr)
    done, start = 0, None
    while done < steps:
        for batch in loader:
            clean, noisy = batch["image"].to(device) * 2 - 1, batch["noisy"].to(device)
            if not meta_tensors:
                clean, noisy = clean.as_tensor(), noisy.as_tensor()
            noise = torch.randn_like(clean)
            t = torch.randint(0, scheduler.num_train_timesteps, (clean.shape[0],), device=device)
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
    seconds = {int(row["step"]): row["seconds"] for row in RunDirectory(out).read_log()}
    return (steps - 2) / (seconds[steps] - seconds[2])
