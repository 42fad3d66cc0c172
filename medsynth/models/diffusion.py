"""The diffusion family: MONAI ``DiffusionModelUNet`` + MONAI's DDPM noise schedule.

The condition is concatenated to the noisy image as input channels (all three jobs). For
label-conditioned generation, classifier-free guidance (Ho & Salimans 2022): the condition is
dropped (set to zeros, which no one-hot map equals) for a fraction of training samples, and at
sampling the two predictions are mixed with ``guidance_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from medsynth.config import check_range
from medsynth.models.base import (
    MAX_WIDTH,
    GridPadding,
    SampleOptions,
    SamplingMixin,
    StepContext,
    check_patch_stride,
    check_residual,
    check_widths,
    conv_parameters,
    ensemble_mean,
)
from medsynth.models.samplers import Sampler, get_sampler, spaced_timesteps


@dataclass
class DiffusionConfig:
    """Options of the diffusion family (the ``model:`` section of a config)."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"
    num_train_timesteps: int = 1000
    schedule: Literal["linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"] = "scaled_linear_beta"
    condition_dropout: float = 0.0
    guidance_scale: float = 1.0
    sampler: Sampler = "ddim"
    num_inference_steps: int = 50
    ensemble: int = 1  # samples averaged per output: >1 estimates the posterior mean (higher PSNR, less texture)
    residual: bool = False  # diffuse target - condition (SR3/ResShift-style), for image conditions
    residual_scale: float = 1.0  # residual multiplier: bring its std near the [-1, 1] image's (~0.5)

    #: parameter group -> the options that size it (named when a model is too large)
    SIZE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"network": ("channels", "num_res_blocks")}

    def validate(self) -> None:
        check_widths(self, "channels")
        if len(self.attention_levels) != len(self.channels):
            raise ValueError("attention_levels: needs one entry per level of channels")
        check_range(self, "norm_num_groups", 1, MAX_WIDTH)
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"norm_num_groups: {self.norm_num_groups} must divide every entry of channels")
        check_range(self, "num_head_channels", 1, MAX_WIDTH)
        attending = [c for c, a in zip(self.channels, self.attention_levels, strict=True) if a] + [self.channels[-1]]
        if any(c % self.num_head_channels for c in attending):  # the middle block always attends
            raise ValueError(f"num_head_channels: {self.num_head_channels} must divide the channels of every "
                             "attention level and of the last level")
        check_range(self, "num_res_blocks", 1, 16)
        check_range(self, "num_train_timesteps", 2, 100_000)
        check_range(self, "num_inference_steps", 1, self.num_train_timesteps)
        check_range(self, "condition_dropout", 0.0, 1.0, below=True)
        check_range(self, "guidance_scale", 0.0, 100.0)
        check_range(self, "ensemble", 1, 100)
        check_range(self, "residual_scale", 0.0, 1000.0, above=True)

    def check_patch(self, patch_size: tuple[int, ...]) -> None:
        """Refuse a training patch the UNet cannot take (training steps are not padded)."""
        check_patch_stride(patch_size, len(self.channels))

    def parameter_estimate(self, spatial_dims: int, condition_channels: int, image_channels: int = 1) -> dict[str, int]:
        """A rough parameter count of the UNet (within ~10% of the built one), for when it cannot be
        built on the meta device: per level, ``num_res_blocks`` residual blocks down and one more up,
        two convolutions each, the up ones on the skip-concatenated input."""
        blocks = 7 * self.num_res_blocks + 5
        total = conv_parameters(spatial_dims, image_channels + condition_channels, self.channels[0])
        total += sum(blocks * conv_parameters(spatial_dims, width, width) for width in self.channels)
        return {"network": total + conv_parameters(spatial_dims, self.channels[0], image_channels)}


def diffusion_unet(spatial_dims: int, in_channels: int, out_channels: int, config: DiffusionConfig) -> nn.Module:
    """MONAI's ``DiffusionModelUNet`` sized by ``config``."""
    return DiffusionModelUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=config.channels,
        attention_levels=config.attention_levels,
        num_res_blocks=config.num_res_blocks,
        norm_num_groups=config.norm_num_groups,
        num_head_channels=config.num_head_channels,
        # torch's fused attention: the default path materialises the (tokens x tokens) matrix,
        # which at a 32^3 bottleneck (a 128^3 volume) asks for 16 GiB; the fused kernel never builds it
        use_flash_attention=True,
    )


class DiffusionProcess:
    """The diffusion core both diffusion families compose: a denoising network on ``[x_t, condition]``,
    MONAI's DDPM schedule, the training loss, classifier-free guidance and the sampler registry.

    It works on the *diffused variable* (an image in [-1, 1], a scaled residual, a scaled latent),
    whose x0 estimates are clipped to ``[-bound, bound]``; mapping images to and from it is the
    family's. Not a module: the network is the family's (its state-dict keys stay the family's).
    """

    def __init__(self, network: nn.Module, config: DiffusionConfig, bound: float) -> None:
        self.network = network
        self.config = config
        self.bound = bound
        self.scheduler = DDPMScheduler(config.num_train_timesteps, schedule=config.schedule,
                                       prediction_type=config.prediction_type)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        inputs = x if condition is None else torch.cat([x, condition.to(x.dtype)], dim=1)
        return self.network(inputs, t)

    def training_step(self, x0: torch.Tensor, condition: torch.Tensor | None,
                      context: StepContext) -> dict[str, float]:
        """One step of the denoising loss on the diffused variable ``x0`` (optimizer group ``network``)."""
        config = self.config
        batch_size = x0.shape[0]
        if condition is not None and config.condition_dropout > 0:
            keep = context.rand((batch_size,)) >= config.condition_dropout
            condition = condition * keep.view(-1, *[1] * (condition.ndim - 1)).to(condition.dtype)
        noise = context.randn(x0.shape)
        t = context.randint(config.num_train_timesteps, (batch_size,))
        x_t = self.scheduler.add_noise(x0, noise, t)
        if config.prediction_type == "epsilon":
            target = noise
        elif config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        with context.autocast():
            prediction = self._forward(x_t, t, condition)
        loss = torch.nn.functional.mse_loss(prediction.float(), target)
        grad_norm = context.optimize("network", loss)
        return {"loss": float(loss.detach()), "grad_norm": grad_norm}

    def _split(self, output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output -> (x0 clipped to the variable's range, eps consistent with it)."""
        a, s = alpha.sqrt(), (1 - alpha).sqrt()
        if self.config.prediction_type == "epsilon":
            x0 = (x - s * output) / a
        elif self.config.prediction_type == "v_prediction":
            x0 = a * x - s * output
        else:
            x0 = output
        x0 = x0.clamp(-self.bound, self.bound)
        return x0, (x - a * x0) / s.clamp(min=1e-8)

    def settings(self, options: SampleOptions) -> tuple[str, int, float]:
        """(sampler, steps, guidance) of ``options``, the config's where they are ``None``."""
        config = self.config
        return (options.sampler or config.sampler, options.steps or config.num_inference_steps,
                config.guidance_scale if options.guidance is None else options.guidance)

    def timesteps(self, options: SampleOptions) -> tuple[int, list[int]]:
        """The first timestep and every timestep a sample visits (one network call each, two with guidance).

        Raises:
            ValueError: an unknown sampler, steps or strength out of range.
        """
        sampler, steps, _ = self.settings(options)
        strength = 1.0 if options.strength is None else options.strength
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        T = self.config.num_train_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"number of steps must be in [1, {T}], got {steps}")
        start = round(strength * (T - 1))
        if get_sampler(sampler).every_timestep:
            return start, list(range(start, -1, -1))
        return start, spaced_timesteps(T, min(steps, start + 1), start)

    def evaluations(self, options: SampleOptions, conditional: bool) -> int:
        """Network calls of one sample: one per visited timestep, two with classifier-free guidance
        (``guidance != 1`` on a conditional model)."""
        _, _, guidance = self.settings(options)
        return len(self.timesteps(options)[1]) * (2 if conditional and guidance != 1.0 else 1)

    def generate(self, shape: tuple[int, ...], condition: torch.Tensor | None, start_image: torch.Tensor | None,
                 seed: int, options: SampleOptions) -> torch.Tensor:
        """One sample of the diffused variable (its final x0 estimate) of ``shape``, on the network's grid.

        ``start_image``: the diffused variable to noise to ``options.strength`` and denoise (SDEdit).
        """
        sampler, _, guidance = self.settings(options)
        device = next(self.network.parameters()).device
        start, timesteps = self.timesteps(options)
        alphas = self.scheduler.alphas_cumprod.to(device)

        def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            t_batch = torch.full((x_t.shape[0],), t, device=device, dtype=torch.long)
            if condition is not None and guidance != 1.0:  # conditional and unconditional in one batched call
                both = self._forward(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]),
                                     torch.cat([condition, torch.zeros_like(condition)]))
                output, unconditional = both.chunk(2)
                output = unconditional + guidance * (output - unconditional)
            else:
                output = self._forward(x_t, t_batch, condition)
            return self._split(output.float(), x_t, alphas[t])

        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=generator).to(device)
        if start_image is not None:
            x = alphas[start].sqrt() * start_image + (1 - alphas[start]).sqrt() * x
        return get_sampler(sampler).run(denoise, x, timesteps, alphas, generator)


class DiffusionSynthesizer(SamplingMixin, nn.Module):
    """Conditional DDPM: predicts noise, velocity or the clean image from ``[x_t, condition]``.

    Args:
        spatial_dims: 2 or 3.
        condition_channels: channels of the condition (0: unconditional).
        config: network, schedule and sampling options.
    """

    family = "diffusion"
    progress_losses = ("loss",)
    sample_options = frozenset(f.name for f in fields(SampleOptions))

    def __init__(self, spatial_dims: int, condition_channels: int, config: DiffusionConfig) -> None:
        super().__init__()
        check_residual(config.residual, condition_channels)
        self.spatial_dims = spatial_dims
        self.condition_channels = condition_channels
        self.config = config
        self.network = diffusion_unet(spatial_dims, 1 + condition_channels, 1, config)
        # the diffused variable: the image in [-1, 1], or the residual scaled to about the same range
        self.process = DiffusionProcess(self.network, config, config.residual_scale if config.residual else 1.0)

    @property
    def scheduler(self) -> DDPMScheduler:
        return self.process.scheduler

    def parameter_groups(self) -> dict[str, dict]:
        return {"network": {"params": list(self.network.parameters())}}

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"network": self.network}

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        condition = batch.get("condition")
        return self.process.training_step(self._to_model(batch["target"], condition), condition, context)

    def _to_model(self, image: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Image in [0, 1] -> the diffused variable: the image in [-1, 1], or the scaled residual over
        the condition. Residuals are small (std ~0.04 for 2-4x thick slices): unscaled, the noise
        drowns them at all but the last timesteps and few-step samplers lose them (EDM's sigma_data)."""
        if self.config.residual:
            return (image - condition) * self.config.residual_scale
        return image * 2 - 1

    def _from_model(self, x0: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """The inverse of ``_to_model``, unclipped (a residual can step outside [0, 1])."""
        if self.config.residual:
            return condition + x0 / self.config.residual_scale
        return (x0 + 1) / 2

    def _default_ensemble(self) -> int:
        return self.config.ensemble

    def sampling_defaults(self) -> SampleOptions:
        sampler, steps, guidance = self.process.settings(SampleOptions())
        return SampleOptions(sampler=sampler, steps=steps, guidance=guidance, ensemble=self.config.ensemble)

    def _evaluations_per_sample(self, options: SampleOptions) -> int:
        return self.process.evaluations(options, self.condition_channels > 0)

    def _sample_mean(self, condition: torch.Tensor | None, shape: tuple[int, ...], seed: int,
                     options: SampleOptions) -> torch.Tensor:
        """The unclipped mean of the ensemble's samples (average, then clip: clipping each sample
        first biases the mean wherever the truth sits at a bound, and air is 0)."""
        self.process.timesteps(options)  # refuse bad settings before any work
        device = next(self.network.parameters()).device
        # the UNet halves the grid len(channels) - 1 times: pad to a multiple, crop at the end
        grid = GridPadding.to_multiple(tuple(shape[2:]), 2 ** (len(self.config.channels) - 1))
        padded = (*shape[:2], *grid.shape)
        if condition is not None:
            condition = grid.pad(condition.to(device))
        start = None if options.init is None else self._to_model(grid.pad(options.init.to(device)), condition)

        def member(seed: int) -> torch.Tensor:
            return self._from_model(self.process.generate(padded, condition, start, seed, options), condition)

        return grid.crop_back(ensemble_mean(member, seed, options.ensemble or self.config.ensemble))
