"""The conditional GAN family: a SPADE U-Net generator with a noise input + MONAI ``PatchDiscriminator``.

- Generator: an encoder-decoder (U-Net) over the condition; the decoder's normalisation layers
  are MONAI ``SPADE`` blocks modulated by the condition (the label map for ``generate``, the
  degraded image for restoration; Park et al. 2019), and a Gaussian noise map joins the
  bottleneck so one condition yields varied outputs. Restoration jobs may predict a correction
  added to the condition (``residual``).
- Discriminator: MONAI ``PatchDiscriminator`` on ``[condition, image]`` (pix2pix, Isola et al.
  2017), with spectral norm and/or lazy R1 (Mescheder et al. 2018) as configured.
- Losses: MONAI ``PatchAdversarialLoss`` (least squares or hinge), L1 to the target, feature
  matching on the discriminator's layers (pix2pixHD), and a bounded mode-seeking term for
  diversity (DSGAN, Yang et al. 2019): the output distance between two noise draws per unit of
  noise distance, capped at ``diversity_cap``. Nothing needs downloaded weights.
- Two optimizers (TTUR, Heusel et al. 2017): the discriminator's learning rate is
  ``discriminator_lr_scale`` times ``train.lr``; Adam betas ``betas`` for both.

Every step logs the stability signals the validation module compares: both losses, the
discriminator's accuracy on real and fake patches, both gradient norms and ``diversity`` (mean
absolute difference of two outputs for the same condition and different noise: near zero means
the generator ignores its noise, i.e. mode collapse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.blocks import Convolution
from monai.networks.blocks.spade_norm import SPADE
from monai.networks.layers import Norm
from monai.networks.nets import PatchDiscriminator
from torch import nn

from medsynth.config import check_range
from medsynth.errors import short
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


@dataclass
class GANConfig:
    """Options of the GAN family (the ``model:`` section of a config)."""

    channels: tuple[int, ...] = (32, 64, 128)  # generator widths, one U-Net level each
    noise_channels: int = 8  # Gaussian noise map at the bottleneck (0: deterministic generator)
    spade_hidden: int = 32  # hidden width of the SPADE modulation networks
    norm: Literal["batch", "instance"] = "batch"  # batch: statistics independent of the field of view
    residual: bool = False  # restoration: predict a correction added to the condition
    discriminator_channels: int = 32
    discriminator_layers: int = 3  # strided layers: receptive field 70 px at 3 (pix2pix)
    adversarial: Literal["least_squares", "hinge"] = "least_squares"
    adversarial_weight: float = 1.0
    l1_weight: float = 100.0
    feature_matching_weight: float = 10.0
    diversity_weight: float = 0.0  # mode seeking (DSGAN); worth it for generate
    diversity_cap: float = 0.1  # tau: the diversity reward stops growing here
    spectral_norm: bool = True
    r1_weight: float = 0.0  # gamma of the R1 penalty on real images (0: off)
    r1_every: int = 4  # lazy regularisation: penalty every k steps, scaled by k
    discriminator_lr_scale: float = 2.0  # TTUR
    betas: tuple[float, float] = (0.5, 0.999)

    #: parameter group -> the options that size it (named when a model is too large)
    SIZE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "generator": ("channels", "noise_channels", "spade_hidden"),
        "discriminator": ("discriminator_channels", "discriminator_layers")}

    def validate(self) -> None:
        check_widths(self, "channels", min_levels=2)
        check_range(self, "noise_channels", 0, MAX_WIDTH)
        check_range(self, "spade_hidden", 1, MAX_WIDTH)
        check_range(self, "discriminator_channels", 1, MAX_WIDTH)
        check_range(self, "discriminator_layers", 1, 8)  # each doubles the width: 8 layers, 256x
        check_range(self, "r1_every", 1, 10**6)
        for key in ("adversarial_weight", "l1_weight", "feature_matching_weight", "diversity_weight", "r1_weight"):
            check_range(self, key, 0.0, 1e6)
        check_range(self, "diversity_cap", 0.0, 100.0, above=True)
        check_range(self, "discriminator_lr_scale", 0.0, 1000.0, above=True)
        check_range(self, "betas", 0.0, 1.0, below=True)

    def check_patch(self, patch_size: tuple[int, ...]) -> None:
        """Refuse a training patch the generator cannot take unpadded, or that the discriminator's
        strided layers shrink below the two values its last instance normalisation needs."""
        check_patch_stride(patch_size, len(self.channels))
        layers = self.discriminator_layers
        # a stride-2 first convolution and layers - 1 more (kernel 4, padding 1: each halves), then a stride-1 one
        sizes = [side // 2**layers - 1 for side in patch_size]
        if min(sizes) < 1 or math.prod(sizes) < 2:
            raise ValueError(f"discriminator_layers: {layers} layers shrink a {short(list(patch_size))} patch to "
                             f"{short(sizes)} before their last normalisation, which needs at least 2 values; use "
                             "fewer layers or a larger data.patch_size")

    def parameter_estimate(self, spatial_dims: int, condition_channels: int) -> dict[str, int]:
        """A rough parameter count (within ~30% of the built networks), for when they cannot be built
        on the meta device: per generator level three convolutions and two SPADE blocks, and the
        discriminator's 4^d convolutions, doubling in width per layer."""
        conditions = max(condition_channels, 1)
        generator = conv_parameters(spatial_dims, conditions + self.noise_channels, self.channels[0])
        for width in self.channels:
            spade = conv_parameters(spatial_dims, conditions, self.spade_hidden) + \
                2 * conv_parameters(spatial_dims, self.spade_hidden, width)
            generator += conv_parameters(spatial_dims, 2 * width, width) + \
                2 * conv_parameters(spatial_dims, width, width) + 2 * spade
        widths = [self.discriminator_channels * 2**layer for layer in range(self.discriminator_layers + 1)]
        discriminator = conv_parameters(spatial_dims, 1 + condition_channels, widths[0], 4) + sum(
            conv_parameters(spatial_dims, a, b, 4) for a, b in zip(widths[:-1], widths[1:], strict=True))
        return {"discriminator": discriminator + conv_parameters(spatial_dims, widths[-1], 1),
                "generator": generator}


class _ConvNorm(nn.Module):
    """3x3 convolution -> normalisation (SPADE-modulated when given a condition) -> LeakyReLU."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str, condition_channels: int = 0,
                 spade_hidden: int = 32, stride: int = 1) -> None:
        super().__init__()
        self.conv = Convolution(dims, cin, cout, strides=stride, kernel_size=3, conv_only=True)
        self.spade = condition_channels > 0
        if self.spade:
            self.norm = SPADE(condition_channels, cout, spatial_dims=dims, hidden_channels=spade_hidden,
                              norm=norm.upper())
        else:
            self.norm = Norm[norm, dims](cout, affine=True)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x)
        return self.act(self.norm(x, condition) if self.spade else self.norm(x))


class SpadeUNetGenerator(nn.Module):
    """U-Net whose decoder is SPADE-modulated by the condition, with a noise map at the bottleneck.

    Fully convolutional: any grid whose sides are multiples of ``2 ** (len(channels) - 1)``.
    Unconditional models (no condition channels) take a full-resolution noise map as input.
    """

    def __init__(self, dims: int, condition_channels: int, config: GANConfig) -> None:
        super().__init__()
        channels, norm = config.channels, config.norm
        self.noise_channels = config.noise_channels
        self.conditional = condition_channels > 0
        cin = condition_channels if self.conditional else max(1, config.noise_channels)
        spade = {"condition_channels": condition_channels, "spade_hidden": config.spade_hidden}
        self.encoder = nn.ModuleList([nn.ModuleList([_ConvNorm(dims, cin, channels[0], norm)])])
        for before, width in zip(channels[:-1], channels[1:], strict=True):
            self.encoder.append(nn.ModuleList([_ConvNorm(dims, before, width, norm, stride=2),
                                               _ConvNorm(dims, width, width, norm)]))
        self.bottleneck = _ConvNorm(dims, channels[-1] + config.noise_channels, channels[-1], norm, **spade)
        self.decoder = nn.ModuleList()
        for width, below in zip(reversed(channels[:-1]), reversed(channels[1:]), strict=True):
            self.decoder.append(nn.ModuleList([_ConvNorm(dims, below + width, width, norm, **spade),
                                               _ConvNorm(dims, width, width, norm, **spade)]))
        self.head = Convolution(dims, channels[0], 1, kernel_size=1, conv_only=True)
        self.residual = config.residual
        self.stride = 2 ** (len(channels) - 1)

    def noise_shape(self, batch: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the bottleneck noise map for images of ``spatial`` size."""
        return (batch, self.noise_channels, *(s // self.stride for s in spatial))

    def forward(self, condition: torch.Tensor | None, noise: torch.Tensor,
                input_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Image in [0, 1] (before clipping when ``residual``) from the condition and the noise map(s)."""
        x = condition if self.conditional else input_noise
        skips = []
        for level in self.encoder:
            for block in level:
                x = block(x, None)
            skips.append(x)
        x = self.bottleneck(torch.cat([x, noise.to(x.dtype)], dim=1), condition)
        for level, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = level[0](torch.cat([x, skip], dim=1), condition)
            x = level[1](x, condition)
        out = self.head(x)
        return condition + out if self.residual else torch.sigmoid(out)


class GANSynthesizer(SamplingMixin, nn.Module):
    """Conditional GAN behind the :class:`~medsynth.models.base.Synthesizer` interface.

    Args:
        spatial_dims: 2 or 3.
        condition_channels: channels of the condition (0: unconditional).
        config: network and loss options.
    """

    family = "gan"
    progress_losses = ("loss_g", "loss_d")

    def __init__(self, spatial_dims: int, condition_channels: int, config: GANConfig) -> None:
        super().__init__()
        check_residual(config.residual, condition_channels)
        self.spatial_dims = spatial_dims
        self.condition_channels = condition_channels
        self.config = config
        self.generator = SpadeUNetGenerator(spatial_dims, condition_channels, config)
        self.discriminator = PatchDiscriminator(
            spatial_dims=spatial_dims, channels=config.discriminator_channels, in_channels=1 + condition_channels,
            num_layers_d=config.discriminator_layers, norm="INSTANCE", last_conv_kernel_size=3)
        if config.spectral_norm:
            for module in self.discriminator.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                    nn.utils.parametrizations.spectral_norm(module)
        self.adversarial = PatchAdversarialLoss(criterion=config.adversarial)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # counts lazy-R1 intervals; in checkpoints

    @property
    def trains_discriminator(self) -> bool:
        """Whether the discriminator shapes the generator's loss. Without it (the plain-L1 network:
        adversarial and feature-matching weights 0) it is neither trained nor evaluated: the
        generator's updates are the same, bit for bit, without the discriminator's share of a step."""
        return self.config.adversarial_weight > 0 or self.config.feature_matching_weight > 0

    def parameter_groups(self) -> dict[str, dict]:
        betas = tuple(self.config.betas)
        groups = {"generator": {"params": list(self.generator.parameters()), "betas": betas}}
        if self.trains_discriminator:
            groups = {"discriminator": {"params": list(self.discriminator.parameters()), "betas": betas,
                                        "lr_scale": self.config.discriminator_lr_scale}, **groups}
        return groups

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def _generate(self, condition: torch.Tensor | None, draw, batch: int, spatial: tuple[int, ...]) -> torch.Tensor:
        noise = draw(self.generator.noise_shape(batch, spatial))
        input_noise = None if condition is not None else draw((batch, max(1, self.config.noise_channels), *spatial))
        return self.generator(condition, noise, input_noise)

    def _discriminate(self, condition: torch.Tensor | None, image: torch.Tensor) -> list[torch.Tensor]:
        inputs = image if condition is None else torch.cat([condition.to(image.dtype), image], dim=1)
        return self.discriminator(inputs)

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> dict[str, float]:
        config = self.config
        real, condition = batch["target"], batch.get("condition")
        size, spatial = real.shape[0], tuple(real.shape[2:])
        r1_due = config.r1_weight > 0 and int(self.steps) % config.r1_every == 0
        self.steps += 1
        if not self.trains_discriminator:
            return self._l1_step(real, condition, context)

        # discriminator: real vs. fake (fake detached), optional lazy R1 on the real images
        with context.autocast():
            fake = self._generate(condition, context.randn, size, spatial)
        real_input = real.detach().requires_grad_(r1_due)
        with context.autocast():
            real_features = self._discriminate(condition, real_input)
            fake_logits = self._discriminate(condition, fake.detach())[-1]
            loss_d = 0.5 * (self.adversarial(real_features[-1], target_is_real=True, for_discriminator=True)
                            + self.adversarial(fake_logits, target_is_real=False, for_discriminator=True))
        r1 = torch.zeros(())
        if r1_due:
            (grad,) = torch.autograd.grad(real_features[-1].float().sum(), real_input, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = loss_d + 0.5 * config.r1_weight * config.r1_every * r1
        grad_d = context.optimize("discriminator", loss_d)

        # generator: fool the (frozen) discriminator, match its features, stay close to the target
        self.discriminator.requires_grad_(False)
        try:
            with context.autocast():
                fake_features = self._discriminate(condition, fake)
                adversarial = self.adversarial(fake_features[-1], target_is_real=True, for_discriminator=False)
                matching = torch.zeros((), device=real.device)
                if config.feature_matching_weight > 0:  # against the updated discriminator's real features
                    with torch.no_grad():
                        targets = self._discriminate(condition, real)[:-1]
                    matching = torch.stack([nn.functional.l1_loss(f, r)
                                            for f, r in zip(fake_features[:-1], targets, strict=True)]).mean()
            l1, diversity = self._pixel_terms(fake, real, condition, context)
            loss_g = self._mode_seeking(config.adversarial_weight * adversarial
                                        + config.feature_matching_weight * matching + config.l1_weight * l1, diversity)
            grad_g = context.optimize("generator", loss_g)
        finally:
            self.discriminator.requires_grad_(True)

        real_logits = real_features[-1].detach()
        result = {
            "loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
            "loss_adversarial": float(adversarial.detach()), "loss_l1": float(l1.detach()),
            "loss_feature_matching": float(matching.detach()),
            "d_real_accuracy": float((real_logits > 0).float().mean()),
            "d_fake_accuracy": float((fake_logits.detach() < 0).float().mean()),
            "grad_norm_d": grad_d, "grad_norm_g": grad_g, "diversity": float(diversity.detach()),
        }
        if config.r1_weight > 0:
            result["r1"] = float(r1.detach())
        return result

    def _pixel_terms(self, fake: torch.Tensor, real: torch.Tensor, condition: torch.Tensor | None,
                     context: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """L1 to the target, and the mean difference from a second draw of noise for half the batch
        (the collapse signal, and what mode seeking rewards)."""
        l1 = nn.functional.l1_loss(fake.float(), real)
        half = max(1, fake.shape[0] // 2)
        pair_condition = None if condition is None else condition[:half]
        with torch.set_grad_enabled(self.config.diversity_weight > 0), context.autocast():
            other = self._generate(pair_condition, context.randn, half, tuple(fake.shape[2:]))
        return l1, (fake[:half].float() - other.float()).abs().mean()

    def _mode_seeking(self, loss_g: torch.Tensor, diversity: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.diversity_weight > 0:
            loss_g = loss_g - config.diversity_weight * torch.clamp(diversity, max=config.diversity_cap)
        return loss_g

    def _l1_step(self, real: torch.Tensor, condition: torch.Tensor | None, context: StepContext) -> dict[str, float]:
        """The generator step alone (no discriminator: see :attr:`trains_discriminator`), with the same draws."""
        with context.autocast():
            fake = self._generate(condition, context.randn, real.shape[0], tuple(real.shape[2:]))
        l1, diversity = self._pixel_terms(fake, real, condition, context)
        loss_g = self._mode_seeking(self.config.l1_weight * l1, diversity)
        grad_g = context.optimize("generator", loss_g)
        return {"loss_g": float(loss_g.detach()), "loss_l1": float(l1.detach()), "grad_norm_g": grad_g,
                "diversity": float(diversity.detach())}

    def _evaluations_per_sample(self, options: SampleOptions) -> int:
        return 1  # one generator pass

    def _sample_mean(self, condition: torch.Tensor | None, shape: tuple[int, ...], seed: int,
                     options: SampleOptions) -> torch.Tensor:
        """The unclipped mean of ``options.ensemble`` outputs (noise maps seeded ``seed``, ``seed + 1``, ...)."""
        device = next(self.generator.parameters()).device
        grid = GridPadding.to_multiple(tuple(shape[2:]), self.generator.stride)
        if condition is not None:
            condition = grid.pad(condition.to(device))

        def member(seed: int) -> torch.Tensor:
            generator = torch.Generator().manual_seed(seed)

            def draw(size: tuple[int, ...]) -> torch.Tensor:
                return torch.randn(size, generator=generator).to(device)

            return self._generate(condition, draw, shape[0], grid.shape).float()

        return grid.crop_back(ensemble_mean(member, seed, options.ensemble or 1))
