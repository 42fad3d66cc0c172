"""The latent diffusion family with tiny networks: config errors, both stages, sampling, checkpoints, trainer."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions, Synthesizer, build_synthesizer
from medsynth.models.latent import LOSS_KEYS
from medsynth.training import Trainer, load_experiment
from medsynth.training.inference import load_synthesizer
from tests.models.conftest import TINY_OPTIONS

TINY = TINY_OPTIONS["latent_diffusion"]
TINY_DIFFUSION = TINY["diffusion"]


def make(spatial_dims: int, condition_channels: int, **options):
    torch.manual_seed(0)
    return build_synthesizer("latent_diffusion", spatial_dims, condition_channels, {**TINY, **options})


def one_hot(*spatial, classes=3, seed=0):
    labels = torch.randint(0, classes, (2, *spatial), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


@pytest.mark.parametrize("options, message", [
    ({"channels": [8, 12]}, "model.norm_num_groups: 8 must divide"),
    ({"channels": [8]}, "model.channels: needs at least two levels"),
    ({"autoencoder_steps": 0}, "model.autoencoder_steps"),
    ({"kl_weight": -1.0}, "model.kl_weight"),
    ({"ae_patch": [6, 5]}, "model.ae_patch: every side must be a multiple of the autoencoder's factor 2"),
    ({"latent_clip": 0.0}, "model.latent_clip"),
    ({"diffusion": {**TINY_DIFFUSION, "residual": True}}, "model.diffusion.residual"),
    ({"diffusion": {**TINY_DIFFUSION, "num_inference_steps": 50}}, "model.diffusion.num_inference_steps"),
    ({"diffusion": {"bogus": 1}}, "model.diffusion.bogus: unknown key"),
    ({"bogus": 1}, "model.bogus: unknown key"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(MedsynthError, match=message):
        make(2, 0, **options)


def test_ae_patch_needs_one_side_per_axis():
    with pytest.raises(ValueError, match="ae_patch: a 3D model needs 3 sides"):
        make(3, 0, ae_patch=[4, 4])


def test_stages_train_their_own_networks_with_fixed_log_keys(step_context):
    model = make(2, 3)
    assert isinstance(model, Synthesizer) and set(model.parameter_groups()) == {"autoencoder", "network"}
    ctx = step_context(model)
    batch = {"target": torch.rand(2, 1, 8, 8), "condition": one_hot(8, 8)}
    autoencoder = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    network = {k: v.clone() for k, v in model.diffusion.network.state_dict().items()}
    stage_one = [model.training_step(batch, ctx) for _ in range(2)]
    assert model.stage == "diffusion" and float(model.scale_factor) == 1.0
    assert all(torch.equal(v, model.diffusion.network.state_dict()[k]) for k, v in network.items())
    assert not all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in autoencoder.items())
    autoencoder = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    stage_two = [model.training_step(batch, ctx) for _ in range(2)]
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in autoencoder.items())
    assert not all(torch.equal(v, model.diffusion.network.state_dict()[k]) for k, v in network.items())
    assert all(tuple(row) == LOSS_KEYS for row in stage_one + stage_two)
    assert all(math.isfinite(r["loss_ae"]) and math.isnan(r["loss"]) for r in stage_one)
    assert all(math.isnan(r["loss_ae"]) and math.isfinite(r["loss"]) for r in stage_two)
    assert int(model.steps) == 4 and float(model.scale_factor) not in (0.0, 1.0)


def test_scale_factor_gives_the_latents_unit_std(step_context):
    model = make(2, 0, autoencoder_steps=1)
    ctx = step_context(model)
    batch = {"target": torch.rand(4, 1, 16, 16)}
    model.training_step(batch, ctx)
    state = ctx.generator.get_state()
    model.training_step(batch, ctx)  # the switch: scale from this batch's latents
    ctx.generator.set_state(state)
    with torch.no_grad():
        z = model._encode(batch["target"], ctx)[0]
    assert float((z * model.scale_factor).std()) == pytest.approx(1.0, rel=1e-4)


def test_autoencoder_loss_decreases_on_a_tiny_overfit_set(step_context):
    model = make(2, 0, autoencoder_steps=100)
    ctx = step_context(model, lr=3e-3)
    target = torch.rand(2, 1, 8, 8) * 0.5 + 0.25
    losses = [model.training_step({"target": target}, ctx)["loss_reconstruction"] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_ae_patch_crops_each_sample_at_its_own_corner(step_context):
    model = make(3, 0, ae_patch=[4, 4, 2])
    ctx = step_context(model)
    image = torch.arange(2 * 8 * 6 * 4, dtype=torch.float32).reshape(2, 1, 8, 6, 4)
    crop = model._crop(image, ctx)
    assert crop.shape == (2, 1, 4, 4, 2)
    for sample, part in zip(image, crop, strict=True):  # a contiguous block of its own sample
        x, y, z = (int(i) for i in torch.nonzero(sample[0] == part[0, 0, 0, 0])[0])
        assert torch.equal(sample[:, x:x + 4, y:y + 4, z:z + 2], part)
    losses = model.training_step({"target": torch.rand(2, 1, 8, 6, 4)}, ctx)
    assert math.isfinite(losses["loss_ae"])


@pytest.mark.parametrize("dims, odd", [(2, (7, 9)), (3, (5, 7, 6))])
def test_sample_shape_range_and_seed(step_context, dims, odd):
    model = make(dims, 3)
    ctx = step_context(model)
    size = (6, 10, 5)[:dims]  # not multiples of the strides: both stages pad
    for _ in range(3):  # into stage 2, so the diffusion network has left its zero-initialised output
        model.training_step({"target": torch.rand(2, 1, *size), "condition": one_hot(*size)}, ctx)
    condition = one_hot(*odd)
    a, b, c = (model.sample(condition, seed=s) for s in (1, 1, 2))
    assert a.shape == (2, 1, *odd) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    guided = model.sample(condition, seed=1, options=SampleOptions(guidance=3.0, steps=2, sampler="ddim"))
    assert guided.shape == a.shape and not torch.equal(guided, a)
    solver = model.sample(condition, seed=1, options=SampleOptions(sampler="dpm_solver", steps=3))  # any inner sampler
    assert solver.shape == a.shape and 0 <= float(solver.min()) and float(solver.max()) <= 1
    varied = model.sample(condition, seed=1, options=SampleOptions(init=torch.rand(2, 1, *odd), strength=0.5))
    assert varied.shape == a.shape
    latent_condition = model._pool(one_hot(*(4,) * dims))
    latents = model.process.generate((2, 2, *(2,) * dims), latent_condition, None, 1, SampleOptions())
    assert latents.min() < 0  # latents are not clipped to the image range


def test_unconditional_sampling_and_wrong_condition():
    model = make(2, 0)
    assert model.sample(None, seed=0, shape=(1, 1, 6, 10)).shape == (1, 1, 6, 10)
    with pytest.raises(ValueError, match="needs `shape`"):
        model.sample(None, seed=0)
    with pytest.raises(ValueError, match="condition of 0 channels, got 3"):
        model.sample(one_hot(8, 8), seed=0)


def test_state_dict_keeps_the_stage_and_the_scale_factor(step_context):
    model = make(2, 3)
    ctx = step_context(model)
    for _ in range(3):
        model.training_step({"target": torch.rand(2, 1, 8, 8), "condition": one_hot(8, 8)}, ctx)
    copy = make(2, 3)
    assert copy.stage == "autoencoder" and float(copy.scale_factor) == 1.0
    copy.load_state_dict(model.state_dict())
    assert int(copy.steps) == 3 and copy.stage == "diffusion"
    assert float(copy.scale_factor) == float(model.scale_factor) != 1.0
    condition = one_hot(8, 8)
    assert torch.equal(copy.sample(condition, seed=0), model.sample(condition, seed=0))


def test_trainer_runs_both_stages_and_resumes_bit_for_bit(tmp_path):
    config = {"job": {"name": "generate"}, "spatial_dims": 2, "family": "latent_diffusion",
              "data": {"patch_size": [16, 16]},
              "model": {**TINY, "ae_patch": [8, 8]},
              "train": {"steps": 6, "batch_size": 2, "log_every": 2, "checkpoint_every": 3, "sample_every": 6,
                        "sample_steps": 2, "warmup_steps": 2}}
    path = tmp_path / "latent.yaml"
    path.write_text(yaml.safe_dump(config))
    Trainer(load_experiment(path), tmp_path / "straight", progress=False).fit()
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")  # then "killed" after step 3 (in stage 2)
    checkpoints = tmp_path / "killed" / "checkpoints"
    (checkpoints / "latest").write_text("step_0000003\n")
    shutil.rmtree(checkpoints / "step_0000006")
    (tmp_path / "killed" / "summary.json").unlink()
    Trainer(load_experiment(path), tmp_path / "killed", resume=True, progress=False).fit()
    straight = load_file(tmp_path / "straight" / "checkpoints" / "step_0000006" / "model.safetensors")
    resumed = load_file(checkpoints / "step_0000006" / "model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert int(straight["steps"]) == 6 and float(straight["scale_factor"]) != 1.0
    rows = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["step", *LOSS_KEYS]
    straight_rows = [r.split(",")[:7] for r in rows[1:]]
    killed_rows = [r.split(",")[:7] for r in (tmp_path / "killed" / "log.csv").read_text().splitlines()[1:]]
    assert straight_rows == killed_rows and [r[0] for r in straight_rows] == ["2", "4", "6"]
    assert straight_rows[0][5] == "nan" and straight_rows[-1][1] == "nan"  # stage 1 row, stage 2 row
    model = load_synthesizer(tmp_path / "straight")
    out = model.sample(one_hot(12, 10), seed=0)
    assert out.shape == (2, 1, 12, 10) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_commands_pass_sampler_options_to_every_iterative_family(tmp_path, caplog):
    """`augment`/`denoise` hand --steps/--sampler to a family by the options it takes, not its name."""
    from medsynth.synthesis.apply import TrainedModel
    from medsynth.training.experiment import ExperimentConfig

    latent = TrainedModel(make(2, 3), ExperimentConfig(family="latent_diffusion"), tmp_path)
    options = latent.sample_options(steps=3, sampler="dpm_solver")
    assert options.given() == ["sampler", "steps"]
    assert latent.describe_sampling(options) == ("dpm_solver", 3 + 1)  # 3 UNet calls and the decoder
    assert latent.describe_sampling(SampleOptions(sampler="ddpm")) == ("ddpm", 20 + 1)
    with pytest.raises(MedsynthError, match="--sampler: unknown sampler"):
        latent.sample_options(sampler="euler")
    with pytest.raises(MedsynthError, match="--steps: number of steps must be in"):
        latent.sample_options(steps=21)
    gan = TrainedModel(build_synthesizer("gan", 2, 3, {"channels": [8, 16], "spade_hidden": 8,
                                                       "discriminator_channels": 8}), ExperimentConfig(), tmp_path)
    with caplog.at_level("WARNING", logger="medsynth"):
        assert gan.sample_options(steps=3).given() == []
    assert "--steps: not an option of this gan model" in caplog.text
    assert gan.describe_sampling(SampleOptions()) == ("gan", 1)
