"""Hostile configs and options: one-line errors naming the key or file, fast, bounded, and no output.

Alias bombs, ``extends:`` pointing at devices, FIFOs and other people's files, non-finite or huge
numbers, models too large to train, and malformed feature networks for ``validate``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from medsynth.config import MAX_CONFIG_BYTES, load_yaml
from medsynth.errors import MedsynthError
from tests.cli.test_cli import error_line, run

CONFIGS = Path(__file__).parent.parent.parent / "configs"
GAN = CONFIGS / "denoise_2d_gan.yaml"
DIFFUSION = CONFIGS / "generate_2d_diffusion.yaml"


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" YAML: 9 levels of 9 aliases each, 9^9 strings once expanded (~350 bytes)."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijk"[:levels - 1]:
        text += f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text


def within(seconds: float, function, *args):
    """``(function(*args), seconds taken)``, failing the test if the call takes longer than ``seconds``
    (e.g. blocks on a FIFO); an exception of the call is raised here."""
    outcome = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = err

    worker = threading.Thread(target=call, daemon=True)
    began = time.perf_counter()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], time.perf_counter() - began


def refused(tmp_path, *args, seconds: float = 10.0) -> str:
    """Run ``medsynth train ARGS --out tmp/run``: exit 1, within ``seconds``, no run directory; the error line."""
    result, _ = within(seconds, run, "train", *args, "--out", tmp_path / "run")
    assert result.exit_code == 1, result.stderr
    assert not (tmp_path / "run").exists()
    line = error_line(result)
    assert "Traceback" not in result.stderr and len(line) < 600, result.stderr
    return line


# 1. YAML alias bomb ------------------------------------------------------------------------------
def test_alias_bomb_config_is_refused_within_two_seconds(tmp_path):
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    assert len(alias_bomb()) < 470
    with pytest.raises(MedsynthError, match="bomb.yaml: .*aliases are expanded"):
        within(2.0, load_yaml, tmp_path / "bomb.yaml")
    import medsynth.training  # noqa: F401 - the command's imports, out of the timing

    began = time.perf_counter()
    assert "aliases are expanded" in refused(tmp_path, tmp_path / "bomb.yaml")
    assert time.perf_counter() - began < 2.0


def test_alias_bomb_in_set_is_refused(tmp_path):
    bomb = "[" + ", ".join(f"&{n} [" + ", ".join([f"*{p}" if p else "1"] * 9) + "]"
                           for p, n in zip(["", "a", "b", "c", "d", "e"], "abcdef", strict=True)) + "]"
    assert "aliases are expanded" in refused(tmp_path, GAN, "--set", f"description={bomb}", seconds=2.0)


@pytest.mark.parametrize("text, message", [
    ("a: &a [1, *a]\n", "refers to the collection that contains it"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
    ("a: !!python/object/apply:os.system ['true']\n", "line 1, column 4"),
    ("description: 2024-02-30\n", "invalid YAML value"),
    ("train: {seed: " + "9" * 5000 + "}\n", "invalid YAML value"),
    ("1: 2\n", "keys must be names"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("a: b\x00c\n", "character #x0000 is not allowed"),
], ids=["recursive_alias", "deep", "python_tag", "bad_date", "huge_int", "int_key", "list", "nul_character"])
def test_hostile_yaml_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert message in refused(tmp_path, tmp_path / "bad.yaml")


def test_large_and_binary_config_files_are_refused(tmp_path):
    (tmp_path / "big.yaml").write_text("description: " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "bytes, more than" in refused(tmp_path, tmp_path / "big.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"description: \xff\xfe\n")
    assert "not UTF-8" in refused(tmp_path, tmp_path / "binary.yaml")


# 2. extends: and the config path ------------------------------------------------------------------
@pytest.fixture
def special(tmp_path):
    """Special files with a .yaml name: a FIFO, /dev/zero, someone else's file, a directory."""
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "passwd.yaml").symlink_to("/etc/passwd")
    (tmp_path / "folder.yaml").mkdir()
    yield tmp_path
    try:  # release a reader that the code under test left blocked on the FIFO
        os.close(os.open(tmp_path / "fifo.yaml", os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize("base, message", [
    ("/dev/zero", "not a regular file (a character device)"),
    ("zero.yaml", "not a regular file (a character device)"),
    ("fifo.yaml", "not a regular file (a FIFO)"),
    ("folder.yaml", "not a regular file (a directory)"),
    ("/etc/passwd", "expected a .yaml or .yml file"),
    ("passwd.yaml", "a config must be a mapping"),
    ("missing.yaml", "cannot read config (No such file or directory)"),
    ("a\x00b.yaml", "a path cannot contain a NUL byte"),
    (["a.yaml"], "extends: expected a file name"),
])
def test_extends_reads_only_regular_yaml_files(special, base, message):
    config = special / "child.yaml"
    config.write_text(json.dumps({"extends": base}))
    line = refused(special, config, seconds=5.0)
    assert message in line and ("child.yaml: extends" in line or "passwd.yaml" in line)
    assert "root:" not in line and "\x00" not in line  # nothing of /etc/passwd, no raw NUL


@pytest.mark.parametrize("name, message", [
    ("fifo.yaml", "a FIFO"), ("zero.yaml", "a character device"), ("folder.yaml", "a directory"),
    ("config.txt", "expected a .yaml or .yml file"),
])
def test_config_path_must_be_a_regular_yaml_file(special, name, message):
    (special / "config.txt").write_text("train: {steps: 1}\n")
    assert message in refused(special, special / name, seconds=5.0)
    with pytest.raises(MedsynthError, match=message):  # the same from Python
        within(5.0, load_yaml, special / name)


def test_a_nul_byte_in_the_config_path_is_a_clean_error(tmp_path):
    with pytest.raises(MedsynthError, match=r"a\\x00b.yaml': a path cannot contain a NUL byte"):
        load_yaml(f"{tmp_path}/a\x00b.yaml")


def test_yaml_errors_give_line_and_column_not_content(tmp_path):
    (tmp_path / "secret.yaml").write_text("train:\n  steps: 5\n  lr: [SECRET-TOKEN-123: x\n")
    line = refused(tmp_path, tmp_path / "secret.yaml")
    assert "secret.yaml: invalid YAML at line" in line and "column" in line
    assert "SECRET" not in line


def test_extends_cycles_and_chains_are_bounded(tmp_path):
    (tmp_path / "loop.yaml").write_text("extends: ./loop.yaml\n")
    assert "forms a cycle" in refused(tmp_path, tmp_path / "loop.yaml")
    for k in range(40):
        (tmp_path / f"c{k}.yaml").write_text(f"extends: c{k + 1}.yaml\n")
    (tmp_path / "c40.yaml").write_text("train: {steps: 1}\n")
    assert "files deep" in refused(tmp_path, tmp_path / "c0.yaml")


# 3. non-finite numbers ----------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"), ("train.lr=1e400", "train.lr"), ("data.spacing_mm=.inf", "data.spacing_mm"),
    ("data.spacing_mm=.nan", "data.spacing_mm"), ("train.grad_clip=.nan", "train.grad_clip"),
    ("train.weight_decay=.nan", "train.weight_decay"), ("model.l1_weight=.nan", "model.l1_weight"),
    ("model.adversarial_weight=.nan", "model.adversarial_weight"), ("model.diversity_cap=.nan", "model.diversity_cap"),
    ("model.betas=[.nan, 0.9]", "model.betas"), ("job.noise_sigma=[0.1, .inf]", "job.noise_sigma"),
    ("train.ema_decay=-.inf", "train.ema_decay"),
])
def test_non_finite_numbers_are_refused(tmp_path, override, key):
    line = refused(tmp_path, GAN, "--set", override)
    assert f"--set {override}" in line and "finite" in line and key.split(".")[-1] in line


def test_non_finite_numbers_in_a_config_file_name_the_file_and_key(tmp_path):
    (tmp_path / "nan.yaml").write_text(f"extends: {GAN}\nmodel: {{l1_weight: .nan}}\n")
    line = refused(tmp_path, tmp_path / "nan.yaml")
    assert "nan.yaml: model.l1_weight: must be a finite number" in line


@pytest.mark.parametrize("override, key", [
    ("train.lr=2", "lr"), ("train.weight_decay=5", "weight_decay"), ("model.l1_weight=1.0e+9", "l1_weight"),
    ("model.diversity_cap=0", "diversity_cap"), ("model.discriminator_lr_scale=1.0e+6", "discriminator_lr_scale"),
    ("model.r1_every=0", "r1_every"), ("data.spacing_mm=0.001", "spacing_mm"), ("job.photons=[1, 1.0e+12]", "photons"),
    ("job.noise_sigma=[0.1, 5]", "noise_sigma"), ("train.sample_steps=100000000", "sample_steps"),
])
def test_out_of_range_numbers_are_refused(tmp_path, override, key):
    assert key in refused(tmp_path, GAN, "--set", override)


# 4. model sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, override, key", [
    (GAN, "model.spade_hidden=0", "spade_hidden"), (GAN, "model.spade_hidden=-3", "spade_hidden"),
    (GAN, "model.discriminator_channels=0", "discriminator_channels"),
    (GAN, "model.discriminator_channels=-8", "discriminator_channels"),
    (DIFFUSION, "job.num_classes=100000000", "num_classes"), (GAN, "model.channels=[100000,100000]", "channels"),
    (GAN, "model.discriminator_layers=50", "discriminator_layers"), (GAN, f"train.seed={10**23}", "seed"),
    (GAN, "train.seed=-1", "seed"), (GAN, "model.noise_channels=100000", "noise_channels"),
    (DIFFUSION, "model.num_train_timesteps=1000000000", "num_train_timesteps"),
    (DIFFUSION, "model.norm_num_groups=0", "norm_num_groups"),
    (DIFFUSION, "model.num_head_channels=48", "num_head_channels"),
    (DIFFUSION, "model.ensemble=100000", "ensemble"),
    (DIFFUSION, "model.channels=[16,16,16,16,16,16,16,16,16]", "channels"),
])
def test_model_sizes_are_refused_before_any_run_directory(tmp_path, config, override, key):
    assert key in refused(tmp_path, config, "--set", override)


@pytest.mark.parametrize("config, overrides, keys", [
    (GAN, ["model.discriminator_channels=4096", "model.discriminator_layers=5", "data.patch_size=[256,256]"],
     "model.discriminator_channels"),
    (DIFFUSION, ["model.channels=[4096,4096,4096]", "model.num_res_blocks=16"], "model.channels"),
    (CONFIGS / "generate_3d_latent_diffusion.yaml", ["model.channels=[4096,4096]"], "model.latent_channels"),
])
def test_models_too_large_to_train_are_refused_with_an_estimate(tmp_path, config, overrides, keys):
    began = time.perf_counter()
    line = refused(tmp_path, config, *[f"--set={o}" for o in overrides])
    assert "parameters" in line and "GiB" in line and keys in line
    assert time.perf_counter() - began < 5.0  # counted on the meta device: nothing allocated


def test_size_check_falls_back_to_an_analytic_estimate(monkeypatch):
    """When a network cannot be built on the meta device the options' estimate is used (same order)."""
    from medsynth import models
    from medsynth.training.experiment import load_experiment

    for path in (GAN, DIFFUSION, CONFIGS / "generate_3d_latent_diffusion.yaml"):
        config = load_experiment(path)
        options = models.family_options(config.family, config.model)
        built = models.parameter_counts(config.family, config.spatial_dims, config.job.condition_channels, options)

        class Unbuildable:
            def __init__(self, *args):
                raise RuntimeError("no meta kernel")

        monkeypatch.setitem(models.FAMILIES, config.family, (type(options), Unbuildable))
        models._COUNTS.clear()
        estimated = models.parameter_counts(config.family, config.spatial_dims, config.job.condition_channels, options)
        monkeypatch.undo()
        models._COUNTS.clear()
        assert set(estimated) == set(built)
        for name, count in built.items():
            assert 0.5 < estimated[name] / count < 2, (path.name, name)


def test_size_check_is_fast_and_allocates_nothing():
    from medsynth import models
    from medsynth.training.experiment import load_experiment

    load_experiment(GAN)  # first-use costs (imports) out of the way
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.stem.startswith("compare"):
            continue
        models._COUNTS.clear()
        state = torch.random.get_rng_state()
        began = time.perf_counter()
        load_experiment(path)
        assert time.perf_counter() - began < 1.0, path.name  # ~0.02-0.1 s on a 2-core CPU
        assert torch.equal(state, torch.random.get_rng_state())  # the real build draws the same weights


# 5. validate: options and feature networks ----------------------------------------------------------
@pytest.mark.parametrize("option, value", [
    ("--feature-steps", 0), ("--feature-steps", -5), ("--feature-steps", 10**7), ("--dims", 4), ("--dims", 0),
])
def test_validate_refuses_bad_numeric_options_before_any_work(tmp_path, option, value):
    result, seconds = within(10.0, run, "validate", tmp_path / "real", tmp_path / "synthetic",
                             "--out", tmp_path / "report", option, value)
    assert result.exit_code == 1 and option in error_line(result)
    assert not (tmp_path / "report").exists()


def saved_network(folder: Path) -> Path:
    """A medsynth feature network folder (untrained: its files are what matters here)."""
    from medsynth.validation.features import FeatureExtractor, FeatureNetwork

    config = {"kind": "medsynth", "spatial_dims": 2, "channels": [16, 32, 64, 128], "out_channels": 1,
              "objective": "masked-block reconstruction", "steps": 1, "training_images": 2, "seconds": 0.1,
              "final_loss": 0.5}
    return FeatureExtractor(FeatureNetwork(2).eval(), config).save(folder)


@pytest.mark.parametrize("name, text, message", [
    ("not_json", "{'kind': ", "not JSON"),
    ("list", "[1, 2]", "expected a mapping"),
    ("missing", json.dumps({"kind": "medsynth"}), "spatial_dims: required key is missing"),
    ("kind", {"kind": "torchscript"}, "kind: 'torchscript' is not one of"),
    ("types", {"channels": "abc"}, "channels: expected a list"),
    ("bool", {"spatial_dims": True}, "spatial_dims"),
    ("float_dims", {"spatial_dims": 2.0}, "spatial_dims"),
    ("huge", {"channels": [10**9]}, "channels: every entry must be at most 1024"),
    ("huge_int", {"out_channels": 10**30}, "out_channels"),
    ("nan", '"final_loss": NaN', "not JSON (NaN is not a number"),
    ("inf", '"seconds": 1e400', "seconds: must be a finite number"),
    ("negative", {"steps": -1}, "steps: must be non-negative"),
    ("unknown", {"extra": 1}, "extra: unknown key"),
    ("deep", "[" * 100000 + "]" * 100000, "not JSON"),
    ("stages", {"channels": []}, "channels: needs 1 to 8 stages"),
], ids=lambda value: value if isinstance(value, str) and value.isidentifier() else "")
def test_malformed_feature_network_config_is_a_one_line_error(tmp_path, name, text, message):
    from medsynth.validation.features import load_feature_extractor

    folder = saved_network(tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    if isinstance(text, dict):
        text = json.dumps({**config, **text})
    elif text.startswith('"'):  # a raw JSON member replacing the key's value
        key = text.split('"')[1]
        text = json.dumps({k: v for k, v in config.items() if k != key})[:-1] + ", " + text + "}"
    (folder / "config.json").write_text(text)
    with pytest.raises(MedsynthError) as caught:
        load_feature_extractor(folder)
    assert f"{name}: not a medsynth feature network (config.json: " in str(caught.value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_malformed_feature_network_files_are_one_line_errors(tmp_path):
    from medsynth.validation.features import load_feature_extractor

    cases = {"truncated": lambda f: (f / "weights.safetensors").write_bytes(b"\x08" * 64),
             "no_weights": lambda f: (f / "weights.safetensors").unlink(),
             "fifo_weights": lambda f: ((f / "weights.safetensors").unlink(), os.mkfifo(f / "weights.safetensors")),
             "fifo_config": lambda f: ((f / "config.json").unlink(), os.mkfifo(f / "config.json")),
             "big_config": lambda f: (f / "config.json").write_text(" " * (MAX_CONFIG_BYTES + 1))}
    for name, spoil in cases.items():
        folder = saved_network(tmp_path / name)
        spoil(folder)
        with pytest.raises(MedsynthError, match=f"{name}: not a medsynth feature network"):
            within(5.0, load_feature_extractor, folder)
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(MedsynthError, match="fifo.pt: not a regular file"):
        within(5.0, load_feature_extractor, tmp_path / "fifo.pt")


def test_validate_with_a_malformed_feature_network_writes_nothing(tmp_path):
    from tests.validation.test_validate import write_folder

    real, _ = write_folder(tmp_path / "real", 5, seed=0)
    synthetic, _ = write_folder(tmp_path / "synthetic", 5, seed=1)
    folder = saved_network(tmp_path / "features")
    (folder / "config.json").write_text(json.dumps({"kind": "medsynth", "spatial_dims": 3, "channels": [16],
                                                    "out_channels": float("nan")}))
    result = run("validate", real, synthetic, "--out", tmp_path / "report", "--dims", 3, "--features", folder,
                 "--device", "cpu")
    assert result.exit_code == 1 and "features: not a medsynth feature network (config.json" in error_line(result)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("config, override, key", [
    (DIFFUSION, "data.patch_size=[18,18]", "model.channels: 3 levels need every side of data.patch_size"),
    (GAN, "data.patch_size=[66,64]", "model.channels: 3 levels need every side of data.patch_size"),
    (GAN, "model.discriminator_layers=5", "--set model.discriminator_layers=5: 5 layers shrink a [64, 64] patch"),
])
def test_patches_the_networks_cannot_train_on_are_refused(tmp_path, config, override, key):
    assert key in refused(tmp_path, config, "--set", override)


def test_gan_patch_check_matches_the_networks():
    """GANConfig.check_patch refuses exactly the patches a tiny generator + discriminator fail on."""
    from medsynth.models import build_synthesizer, family_options

    for levels, layers in [(2, 2), (3, 2), (3, 3), (2, 4)]:
        options = {"channels": [4, 8, 8][:levels], "discriminator_channels": 2, "discriminator_layers": layers,
                   "spade_hidden": 4, "noise_channels": 2}
        model = build_synthesizer("gan", 2, 1, options).train()  # training mode: the norms need 2+ values
        for patch in [(4, 16), (6, 16), (8, 8), (12, 16), (16, 16), (18, 16), (32, 16)]:
            condition = torch.rand(2, 1, *patch)
            try:
                with torch.no_grad():
                    model._discriminate(condition, model._generate(condition, torch.randn, 2, patch))
                works = True
            except (RuntimeError, ValueError):
                works = False
            try:
                family_options("gan", options).check_patch(patch)
                accepted = True
            except ValueError:
                accepted = False
            assert accepted == works, (levels, layers, patch)
