"""The latent diffusion family: MONAI ``AutoencoderKL`` + the diffusion family in its latent space.

Latent diffusion (Rombach et al. 2022; MONAI's MAISI for 3D CT): an autoencoder shrinks the
image by ``2 ** (len(channels) - 1)`` per axis (4 with three levels: 64x fewer voxels in 3D)
and a diffusion model learns the latents, so 3D volumes of 128^3 and more are sampled at the
cost of a 32^3 diffusion model plus one decoder pass.

Both stages train in one run, one model, two optimizers (``autoencoder`` and ``network``):

1. The first ``autoencoder_steps`` steps train the autoencoder: L1 reconstruction plus
   ``kl_weight`` times the KL divergence of the latent posterior to N(0, I), optionally on random
   ``ae_patch`` crops of the batch (memory). No perceptual or adversarial loss: those need
   downloaded weights.
2. Then the autoencoder is frozen, the latents of the first stage-2 batch fix the scale factor
   (1 / std, so the diffused latents have unit variance, as in MONAI's ``LatentDiffusionInferer``),
   and the rest of the run trains a :class:`~medsynth.models.diffusion.DiffusionSynthesizer` on
   scaled latents; its condition is the condition average-pooled to the latent grid (label
   fractions for ``generate``).

The step counter and the scale factor are buffers: they are in the checkpoints, so a resumed
run continues in the right stage with the same scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from torch import nn

from medsynth.config import check_range
from medsynth.errors import short
from medsynth.models.base import (
    MAX_WIDTH,
    GridPadding,
    SampleOptions,
    SamplingMixin,
    StepContext,
    check_widths,
    conv_parameters,
    ensemble_mean,
)
from medsynth.models.diffusion import DiffusionConfig, DiffusionProcess, diffusion_unet

NAN = float("nan")
#: the keys of every training step's losses (log.csv has fixed columns); the idle stage's are nan
LOSS_KEYS = ("loss_ae", "loss_reconstruction", "loss_kl", "grad_norm_ae", "loss", "grad_norm")


@dataclass
class LatentDiffusionConfig:
    """Options of the latent diffusion family (the ``model:`` section of a config).

    The autoencoder's options are at the top level, the latent diffusion model's under
    ``diffusion:`` (the diffusion family's keys; its ``residual`` does not apply).
    """

    channels: tuple[int, ...] = (32, 64, 64)  # autoencoder widths; downsampling factor 2 ** (levels - 1)
    latent_channels: int = 4
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    kl_weight: float = 1e-6
    autoencoder_steps: int = 500  # steps of stage 1 (autoencoder); the rest of train.steps train the diffusion
    ae_patch: tuple[int, ...] | None = None  # random crop of each patch for stage 1 (memory); None: whole patch
    latent_clip: float = 5.0  # |x0| bound of the sampler in scaled latents (unit std), like [-1, 1] for images
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    @property
    def factor(self) -> int:
        """Downsampling factor of the autoencoder per axis."""
        return 2 ** (len(self.channels) - 1)

    #: parameter group -> the options that size it (named when a model is too large)
    SIZE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "autoencoder": ("channels", "latent_channels", "num_res_blocks"),
        "network": ("diffusion.channels", "diffusion.num_res_blocks")}

    def validate(self) -> None:
        check_widths(self, "channels", min_levels=2)
        check_range(self, "norm_num_groups", 1, MAX_WIDTH)
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"norm_num_groups: {self.norm_num_groups} must divide every entry of channels")
        check_range(self, "latent_channels", 1, 256)
        check_range(self, "num_res_blocks", 1, 16)
        check_range(self, "kl_weight", 0.0, 10.0)
        check_range(self, "autoencoder_steps", 1, 10**9)
        if self.ae_patch is not None and any(p < self.factor or p % self.factor for p in self.ae_patch):
            raise ValueError(f"ae_patch: every side must be a multiple of the autoencoder's factor {self.factor}, "
                             f"got {short(list(self.ae_patch))}")
        if self.ae_patch is not None:
            check_range(self, "ae_patch", 1, 4096)
        check_range(self, "latent_clip", 0.0, 1000.0, above=True)
        if self.diffusion.residual:
            raise ValueError("diffusion.residual: does not apply to latent diffusion (the condition is not a latent)")

    def parameter_estimate(self, spatial_dims: int, condition_channels: int) -> dict[str, int]:
        """A rough parameter count (within ~15% of the built networks), for when they cannot be built
        on the meta device: the autoencoder's residual blocks per level in the encoder and the
        decoder, and the latent UNet's estimate."""
        blocks = 3 * self.num_res_blocks + 3
        autoencoder = sum(blocks * conv_parameters(spatial_dims, width, width) for width in self.channels)
        autoencoder += 4 * conv_parameters(spatial_dims, self.channels[-1], self.latent_channels)
        network = self.diffusion.parameter_estimate(spatial_dims, condition_channels, self.latent_channels)
        return {"autoencoder": autoencoder, **network}


class LatentDiffusionSynthesizer(SamplingMixin, nn.Module):
    """``AutoencoderKL`` + latent diffusion behind the :class:`~medsynth.models.base.Synthesizer` interface.

    Args:
        spatial_dims: 2 or 3.
        condition_channels: channels of the condition (0: unconditional).
        config: autoencoder, schedule and latent diffusion options.
    """

    family = "latent_diffusion"
    progress_losses = ("loss_ae", "loss")  # autoencoder stage, then diffusion stage
    sample_options = frozenset(f.name for f in fields(SampleOptions))

    def __init__(self, spatial_dims: int, condition_channels: int, config: LatentDiffusionConfig) -> None:
        super().__init__()
        config.validate()
        if config.ae_patch is not None and len(config.ae_patch) != spatial_dims:
            raise ValueError(f"model.ae_patch: a {spatial_dims}D model needs {spatial_dims} sides, "
                             f"got {list(config.ae_patch)}")
        self.spatial_dims = spatial_dims
        self.condition_channels = condition_channels
        self.config = config
        levels = len(config.channels)
        self.autoencoder = AutoencoderKL(
            spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=config.channels,
            latent_channels=config.latent_channels, num_res_blocks=config.num_res_blocks,
            norm_num_groups=config.norm_num_groups, attention_levels=(False,) * levels,
            with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)  # attention over 32^3 latents: GBs
        # the latent UNet, under ``diffusion.network`` in checkpoints; the diffused variable is the
        # scaled latent itself, its x0 estimates bounded by ``latent_clip`` (unit std)
        unet = diffusion_unet(spatial_dims, config.latent_channels + condition_channels, config.latent_channels,
                              config.diffusion)
        self.diffusion = nn.ModuleDict({"network": unet})
        self.process = DiffusionProcess(unet, config.diffusion, config.latent_clip)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps taken: decides the stage
        self.register_buffer("scale_factor", torch.ones(()))  # 1 / std of the latents, set at the stage switch

    @property
    def stage(self) -> str:
        """``"autoencoder"`` for the first ``autoencoder_steps`` training steps, then ``"diffusion"``."""
        return "autoencoder" if int(self.steps) < self.config.autoencoder_steps else "diffusion"

    def parameter_groups(self) -> dict[str, dict]:
        return {"autoencoder": {"params": list(self.autoencoder.parameters())},
                "network": {"params": list(self.process.network.parameters())}}

    def ema_modules(self) -> dict[str, nn.Module]:
        # the decoder is not averaged: sampling decodes with the weights the latents were trained on
        return {"network": self.process.network}

    # training ------------------------------------------------------------------------------------
    def _crop(self, image: torch.Tensor, context: StepContext) -> torch.Tensor:
        """A random ``ae_patch`` crop of each sample (corners drawn per sample), or ``image`` itself."""
        if self.config.ae_patch is None:
            return image
        spatial = image.shape[2:]
        size = [min(p, s - s % self.config.factor) for p, s in zip(self.config.ae_patch, spatial, strict=True)]
        if list(spatial) == size:
            return image
        room = torch.tensor([s - c + 1 for s, c in zip(spatial, size, strict=True)], dtype=torch.float32)
        corners = (context.rand((image.shape[0], len(size))).cpu() * room).long().tolist()
        return torch.stack([sample[(slice(None), *(slice(c, c + n) for c, n in zip(corner, size, strict=True)))]
                            for sample, corner in zip(image, corners, strict=True)])

    def _encode(self, image: torch.Tensor, context: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, mu, sigma)``: a posterior sample (noise from ``context``), its mean and std."""
        mu, sigma = self.autoencoder.encode(image)
        return mu + sigma * context.randn(mu.shape), mu, sigma

    def _autoencoder_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        image = self._crop(batch["target"], context)
        grid = GridPadding.to_multiple(tuple(image.shape[2:]), self.config.factor)
        image = grid.pad(image)
        with context.autocast():
            z, mu, sigma = self._encode(image, context)
            reconstruction = self.autoencoder.decode(z)
        mu, sigma = mu.float(), sigma.float()
        reconstruction_loss = F.l1_loss(reconstruction.float(), image)
        # KL(N(mu, sigma^2) || N(0, 1)) summed over the latent, averaged over the batch (MONAI's tutorials)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).flatten(1).sum(1).mean()
        loss = reconstruction_loss + self.config.kl_weight * kl
        grad_norm = context.optimize("autoencoder", loss)
        return {"loss_ae": float(loss.detach()), "loss_reconstruction": float(reconstruction_loss.detach()),
                "loss_kl": float(kl.detach()), "grad_norm_ae": grad_norm}

    @torch.no_grad()
    def _set_scale_factor(self, z: torch.Tensor, context: StepContext) -> None:
        """1 / std of the latents ``z`` (of the global batch when data parallel)."""
        z = z.double()
        stats = torch.stack([z.sum(), z.pow(2).sum(), torch.tensor(float(z.numel()), device=z.device).double()])
        if context.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        total, squares, count = stats.tolist()
        variance = (squares - total**2 / count) / max(1.0, count - 1)
        self.scale_factor.fill_(1.0 / max(math.sqrt(max(variance, 0.0)), 1e-6))

    def _diffusion_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        target, condition = batch["target"], batch.get("condition")
        # the latent grid must suit the latent UNet too: pad to the product of both strides
        stride = self.config.factor * 2 ** (len(self.config.diffusion.channels) - 1)
        grid = GridPadding.to_multiple(tuple(target.shape[2:]), stride)
        with torch.no_grad(), context.autocast():
            z = self._encode(grid.pad(target), context)[0].float()
        if int(self.steps) == self.config.autoencoder_steps:  # the first diffusion step
            self._set_scale_factor(z, context)
        latent_condition = None if condition is None else self._pool(grid.pad(condition))
        return self.process.training_step(z * self.scale_factor, latent_condition, context)

    def _pool(self, condition: torch.Tensor) -> torch.Tensor:
        """The condition on the latent grid: its average over each ``factor``-sided block."""
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        return pool(condition.float(), self.config.factor)

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        """One step of the current stage; the other stage's losses are nan (fixed log columns)."""
        if self.stage == "autoencoder":
            losses = self._autoencoder_step(batch, context)
        else:
            losses = self._diffusion_step(batch, context)
        self.steps += 1
        return {key: losses.get(key, NAN) for key in LOSS_KEYS}

    # sampling ------------------------------------------------------------------------------------
    def _default_ensemble(self) -> int:
        return self.config.diffusion.ensemble

    def sampling_defaults(self) -> SampleOptions:
        sampler, steps, guidance = self.process.settings(SampleOptions())
        return SampleOptions(sampler=sampler, steps=steps, guidance=guidance, ensemble=self._default_ensemble())

    def _evaluations_per_sample(self, options: SampleOptions) -> int:
        """The latent UNet's calls (guidance counted, as in the diffusion family) and one decoder
        pass (which costs more than a UNet call on the latent grid); the encoder pass of an ``init``
        is counted once per output, not per sample, so it is not here."""
        return self.process.evaluations(options, self.condition_channels > 0) + 1

    def cost(self, options: SampleOptions | None = None) -> int:
        """Network evaluations per output: per sample the latent UNet's calls and one decoder pass,
        plus one encoder pass (per flip) when ``options.init`` is given."""
        options = options or SampleOptions()
        flips = 2 ** self.spatial_dims if options.flips else 1
        return super().cost(options) + (options.init is not None) * flips

    def _sample_mean(self, condition: torch.Tensor | None, shape: tuple[int, ...], seed: int,
                     options: SampleOptions) -> torch.Tensor:
        """Diffusion on the latent grid, then one decoder pass per sample; the unclipped mean.

        ``options.init`` is encoded, and its latent noised to ``strength`` of the schedule and
        denoised from there (SDEdit in latent space).
        """
        self.process.timesteps(options)  # refuse bad settings before any work
        device = next(self.autoencoder.parameters()).device
        grid = GridPadding.to_multiple(tuple(shape[2:]), self.config.factor)
        latent_grid = tuple(s // self.config.factor for s in grid.shape)
        latent_condition = None if condition is None else self._pool(grid.pad(condition.to(device)))
        latent_init = None
        if options.init is not None:
            latent_init = self.autoencoder.encode(grid.pad(options.init.to(device).float()))[0] * self.scale_factor
        # the latent grid is padded again for the latent UNet, which halves it len(channels) - 1 times
        unet_grid = GridPadding.to_multiple(latent_grid, 2 ** (len(self.config.diffusion.channels) - 1))
        padded = (shape[0], self.config.latent_channels, *unet_grid.shape)
        if latent_condition is not None:
            latent_condition = unet_grid.pad(latent_condition)
        start = None if latent_init is None else unet_grid.pad(latent_init)

        def member(seed: int) -> torch.Tensor:
            z = unet_grid.crop_back(self.process.generate(padded, latent_condition, start, seed, options))
            return self.autoencoder.decode(z / self.scale_factor).float()

        return grid.crop_back(ensemble_mean(member, seed, options.ensemble or self._default_ensemble()))
