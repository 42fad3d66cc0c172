"""One trainer for every family: AdamW + warmup/cosine LR, gradient clipping, EMA, AMP on CUDA,
atomic checkpoints, bit-for-bit resume on CPU, CSV log and sample grids, data parallel under ``torchrun``.

The family only says how one optimisation step works (``training_step``) and how to sample;
the trainer never asks which family it holds.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from medsynth.device import resolve_device
from medsynth.errors import Interrupted, MedsynthError, display
from medsynth.io import ImageSource
from medsynth.io.files import check_no_escape, check_separate, is_bookkeeping, remove_leftovers
from medsynth.models import SampleOptions, StepContext, Synthesizer, build_synthesizer, split_options
from medsynth.progress import progress
from medsynth.training.dataset import PatchSampler, Volume, make_condition, training_sources
from medsynth.training.distributed import Ranks
from medsynth.training.experiment import ExperimentConfig
from medsynth.training.run_dir import RunDirectory
from medsynth.training.self_supervised import neighbor_pairs, self_supervised_sources

log = logging.getLogger("medsynth")


class EMA:
    """Exponential moving average of module weights (Polyak averaging), with the usual warm-up.

    The decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        self.modules = modules
        self.decay = decay
        self.shadow = {f"{name}.{k}": v.detach().clone().float()
                       for name, module in modules.items() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, module in self.modules.items():
            for k, v in module.state_dict().items():
                shadow = self.shadow[f"{name}.{k}"]
                if v.dtype.is_floating_point:
                    shadow.mul_(decay).add_(v.detach().float(), alpha=1 - decay)
                else:
                    shadow.copy_(v)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the modules (for sampling)."""
        saved = {name: copy.deepcopy(module.state_dict()) for name, module in self.modules.items()}
        try:
            self.load_into_modules()
            yield
        finally:
            for name, module in self.modules.items():
                module.load_state_dict(saved[name])

    def load_into_modules(self) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in self.shadow.items() if k.startswith(prefix)})


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[_StopFlag]:
    """Turn Ctrl-C (SIGINT) into a request to stop after the current step, at a clean point."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: object) -> None:
        flag.requested = True
        log.warning("stopping after this step (Ctrl-C again to abort at once)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's peak resident set size on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class Trainer:
    """Train ``config`` into ``run_dir``.

    Args:
        config: the experiment (ignored when resuming: the run's saved config is used, with
            ``train.steps`` taken from ``config`` so a finished run can be extended).
        run_dir: output folder; an existing run is only continued with ``resume=True``.
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue from the run's latest checkpoint.
        progress: show a progress bar.
        time_limit: stop after this many seconds of training in this session (checkpoint saved,
            ``summary["stopped_at_time_limit"]``): fewer steps than ``train.steps``, so the result
            depends on the machine's speed; a run that finishes in time is unaffected.
        sources: self-supervised runs: the scan to train on, instead of searching ``data.images``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data parallel: ``train.batch_size`` is per
    process, every rank draws the same global batch and trains on its share, gradients are
    averaged over the ranks, and rank 0 alone writes the run directory. K processes with batch
    B follow the loss trajectory of one process with batch K * B. The run directory must be on a
    filesystem every rank sees (for ``--resume``).
    """

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, device: str = "auto", resume: bool = False,
                 progress: bool = True, time_limit: float | None = None,
                 sources: list[ImageSource] | None = None) -> None:
        self.run = RunDirectory(run_dir)
        self.device = resolve_device(device)
        self.ranks = Ranks.from_environment("nccl" if self.device.type == "cuda" else "gloo")
        if self.ranks.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ranks.local_rank)
        self.progress = progress and self.ranks.is_main
        check_separate(self.run.path, [config.data.images, config.data.labels], "run directory")
        if resume:
            config = self.run.continued_config(config)
        else:
            self._check_fresh()
        self.ranks.barrier()  # every rank has checked the run directory before rank 0 writes to it
        self.config = config
        self.resume = resume
        self.time_limit = time_limit
        self.sources = sources

    def _check_fresh(self) -> None:
        """A new run needs an empty (or missing) directory: medsynth's own bookkeeping files aside."""
        if self.run.exists() or (self.run.path.is_dir() and any(not is_bookkeeping(p)
                                                                for p in self.run.path.iterdir())):
            raise MedsynthError(f"{display(self.run.path)}: run directory exists and is not empty; use --resume to "
                                "continue it or choose another --out")

    # building ------------------------------------------------------------------------------------
    def _build(self) -> None:
        config = self.config
        torch.manual_seed(config.train.seed)
        if config.data.self_supervised:
            self.sampler, parts = self_supervised_sources(config, self.sources)
        else:
            self.sampler, parts = training_sources(config)
        self.scaling = parts["train"][0].scaling
        self.model: Synthesizer = build_synthesizer(config.family, config.spatial_dims,
                                                    config.job.condition_channels, config.model).to(self.device)
        self.ranks.broadcast_module(self.model)  # equal already (same seed); made certain, as DDP does
        self.optimizers = {
            name: torch.optim.AdamW(group["params"], lr=config.train.lr * group.get("lr_scale", 1.0),
                                    betas=group.get("betas", (0.9, 0.999)), weight_decay=config.train.weight_decay)
            for name, group in self.model.parameter_groups().items()}
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
                           for name, opt in self.optimizers.items()}
        self.ema = EMA(self.model.ema_modules(), config.train.ema_decay)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        use_amp = config.train.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
        # one loss scaler per optimizer: a GAN's two losses have their own scales and steps
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
                        for name in self.optimizers}
        self.preview = self._preview_batch(parts["train"])  # never a validation or test voxel, even in a picture

    def _lr_factor(self, step: int) -> float:
        train = self.config.train
        if train.warmup_steps and step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.lr_schedule == "constant":
            return 1.0
        progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _preview_batch(self, volumes: list[Volume]) -> dict[str, torch.Tensor]:
        """A fixed batch (own seed, never drawn from the training generator) for the sample grids."""
        sampler = PatchSampler(volumes, self.config.data, self.config.spatial_dims)
        generator = torch.Generator().manual_seed(self.config.train.seed + 1)
        return self._batch(sampler, 4, generator)

    def _batch(self, sampler: PatchSampler, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        target, label = sampler.sample(size, generator)
        if self.config.data.self_supervised and self.config.job.name == "denoise":
            condition, target = neighbor_pairs(target, generator)
        else:
            condition = make_condition(target, label, self.config.job, self.scaling, generator)
        batch = {"target": target}
        if condition is not None:
            batch["condition"] = condition
        return batch

    # one step ------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _optimize(self, group: str, loss: torch.Tensor) -> float:
        optimizer, scaler = self.optimizers[group], self.scalers[group]
        scaler.scale(loss).backward()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.ranks.average_gradients(params)
        scaler.unscale_(optimizer)
        limit = self.config.train.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # checkpoints ---------------------------------------------------------------------------------
    def _save(self, step: int, elapsed: float) -> None:
        state = {
            "step": step,
            "elapsed_seconds": elapsed,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
        }
        self.run.save_checkpoint(step, self.model.state_dict(), self.ema.shadow, state)

    def _restore(self) -> tuple[int, float]:
        model, ema, state = self.run.load_checkpoint()
        self.model.load_state_dict(model)
        for key, value in ema.items():
            self.ema.shadow[key].copy_(value)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        for name, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"][name])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"]), float(state["elapsed_seconds"])

    # the loop ------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps``; returns (and saves as ``summary.json``) timing and memory figures.

        The run directory is locked for the whole run (a second ``train`` into it stops with an
        error); a new run that fails before its config is written leaves no directory behind.
        """
        if not self.ranks.is_main:
            return self._fit()
        created = not self.run.path.exists()
        with self.run.lock():
            try:
                if not self.resume:
                    self._check_fresh()  # again, now that no other process can start in between
                check_no_escape(self.run.path)  # checkpoints/ or samples/ linked elsewhere: writes and pruning
                return self._fit()
            except BaseException:
                if created and not self.run.exists():
                    shutil.rmtree(self.run.path, ignore_errors=True)
                raise

    def _fit(self) -> dict[str, Any]:
        self._build()
        main = self.ranks.is_main
        if main:
            for folder in (self.run.path, self.run.checkpoints):  # temporaries of a killed earlier process
                remove_leftovers(folder)
        train = self.config.train
        start_step, elapsed_before = 0, 0.0
        if self.resume and self.run.latest_checkpoint() is not None:
            start_step, elapsed_before = self._restore()
            if start_step > train.steps:
                raise MedsynthError(f"{display(self.run.path)}: the run is at step {start_step}; train.steps "
                                    f"{train.steps} would go back (give at least {start_step})")
            if main:
                self.run.truncate_log(start_step)
            log.info("resuming %s at step %d", self.run.path, start_step)
        elif main:
            self.run.truncate_log(0)  # a resumed run that never reached a checkpoint starts its log again
            self.run.write_config(self.config)
        ranks = self.ranks
        context = StepContext(self.generator, self.device, self._autocast, self._optimize, ranks.rank,
                              ranks.world_size)
        share = ranks.share(train.batch_size)
        began = time.perf_counter()
        bar = progress(range(start_step, train.steps), initial=start_step, total=train.steps, desc="train",
                       unit="step", enabled=self.progress)
        shown = self.model.progress_losses
        stopped_early = False
        with _stop_on_interrupt() as stop:
            try:
                for step in bar:
                    # the global batch is drawn on every rank (same generator state); each trains on its share
                    batch = self._batch(self.sampler, train.batch_size * ranks.world_size, self.generator)
                    batch = {k: v[share].to(self.device) for k, v in batch.items()}
                    self.model.train()
                    losses = self.model.training_step(batch, context)
                    for scheduler in self.schedulers.values():
                        scheduler.step()
                    self.ema.update(step)
                    bar.set_postfix({k: f"{losses[k]:.4f}" for k in shown if math.isfinite(losses.get(k, math.nan))},
                                    refresh=False)
                    done = step + 1
                    seconds = elapsed_before + time.perf_counter() - began
                    if done % train.log_every == 0 or done == train.steps:
                        losses = ranks.mean(losses)
                        lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                        if main:
                            self.run.append_log({"step": done, **losses, "lr": lr, "seconds": round(seconds, 3)})
                    saved = done % train.checkpoint_every == 0 or done == train.steps
                    if saved and main:
                        self._save(done, seconds)
                    if (done % train.sample_every == 0 or done == train.steps) and main:
                        self.save_sample_grid(done)
                    # checked last: Ctrl-C may arrive during the sample grid; one rank's request stops all
                    if ranks.any(stop.requested):
                        if not saved and main:
                            self._save(done, seconds)
                        ranks.barrier()
                        raise Interrupted(f"interrupted; checkpoint saved at step {done} in {self.run.path}; "
                                          "continue with the same command and --resume")
                    if (self.time_limit is not None and done < train.steps
                            and ranks.any(time.perf_counter() - began > self.time_limit)):
                        if not saved and main:
                            self._save(done, seconds)
                        log.warning("stopped at the time limit (%.0f s) after %d of %d steps; the result depends "
                                    "on this machine's speed", self.time_limit, done, train.steps)
                        stopped_early = True
                        break
            finally:
                bar.close()
        wall = time.perf_counter() - began
        trained = (done if stopped_early else train.steps) - start_step
        summary = {
            "steps": done if stopped_early else train.steps,
            "stopped_at_time_limit": stopped_early,
            "steps_this_session": trained,
            "seconds_this_session": round(wall, 2),
            "seconds_total": round(elapsed_before + wall, 2),
            "steps_per_second": round(trained / wall, 4) if wall > 0 and trained else None,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "device": str(self.device),
            "processes": ranks.world_size,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
        if main:
            self.run.write_summary(summary)
        ranks.barrier()  # no rank returns (or exits) before the last checkpoint is written
        return summary

    @torch.no_grad()
    def save_sample_grid(self, step: int) -> Path:
        """PNG of condition | EMA sample | real for the fixed preview batch (middle slice in 3D)."""
        from medsynth.training.figures import sample_grid

        self.model.eval()
        condition = self.preview.get("condition")
        with self.ema.applied():
            shape = tuple(self.preview["target"].shape)
            options, _ = split_options(self.model, SampleOptions(steps=self.config.train.sample_steps))
            output = self.model.sample(None if condition is None else condition.to(self.device), seed=0,
                                       shape=shape, options=options).cpu()
        path = self.run.sample_grid(step)
        sample_grid(self.preview["target"], output, condition, path, title=f"step {step}")
        return path
