"""Run profiles (deepinfo.toolkit.profile and deepinfo/toolkit/profiles/*.toml): loading, validation, sanity."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from deepinfo.toolkit import profile as prof
from deepinfo.toolkit.profile import PROFILES, Profile, available_profiles, load_profile
from deepinfo.toolkit.training import Recipe

SMOKE_TOML = Path(prof.__file__).parent / "profiles" / "smoke.toml"


def write_variant(tmp_path: Path, edit) -> Path:
    """The smoke profile's text passed through ``edit``, written to a temp file."""
    text = edit(SMOKE_TOML.read_text())
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def insert_after(header: str, line: str):
    def edit(text: str) -> str:
        assert header in text, header
        return text.replace(header + "\n", header + "\n" + line + "\n", 1)

    return edit


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profiles_load(name):
    p = load_profile(name)
    assert isinstance(p, Profile)
    assert p.name == name and p.artifacts == name
    assert all(isinstance(r, Recipe) for r in (p.training.cub, p.compression.retrain, p.damage.recipe))
    assert load_profile(p) is p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1  # type: ignore[misc]
    for arch in p.networks.cub.archs:
        assert p.layers_for(arch)
    assert p.to_dict()["estimator"]["beta"] == p.estimator.beta


def test_available_profiles_and_unknown_name():
    assert available_profiles() == ["smoke", "cpu", "paper"]
    with pytest.raises(ValueError) as err:
        load_profile("smok")
    msg = str(err.value)
    assert "'smok'" in msg and "did you mean 'smoke'" in msg
    assert all(n in msg for n in ("smoke", "cpu", "paper"))


def test_smoke_is_synthetic_and_tiny():
    p = load_profile("smoke")
    assert not p.needs_data and p.data.data_dir is None and not p.data.download
    for spec in (p.data.cifar, p.data.cub, p.data.segmentation):
        assert spec.dataset == "synthetic" and spec.n_train <= 512 and spec.image_size <= 64
    for recipe in (p.training.cifar_resnet, p.training.cifar_autoencoder, p.training.cub, p.training.unet,
                   p.compression.retrain, p.damage.recipe):
        assert recipe.epochs <= 2
    counts = dataclasses.asdict(p.estimator.n_images)
    assert max(v for v in counts.values() if v is not None) <= 4
    assert p.networks.cub.width < 1 and p.networks.cub.weights is None


def test_cpu_uses_offline_real_data_and_published_cifar_weights():
    p = load_profile("cpu")
    assert p.needs_data and not p.data.download
    datasets = (p.data.cifar.dataset, p.data.cub.dataset, p.data.segmentation.dataset)
    assert datasets == ("cifar10", "cub200", "isbi2012")
    assert p.networks.cifar.weights == "published" and p.networks.cifar.depths == (20, 32, 44)
    assert p.data.cub.num_classes == 50  # the offline copy holds classes 1-50
    assert p.networks.cub.width < 1 and p.data.cub.image_size < 224
    assert p.data.data_dir is None  # $DEEPINFO_DATA decides


def test_paper_settings():
    p = load_profile("paper")
    assert p.estimator.beta == 1.5e-4 and p.estimator.grid == 16 and p.estimator.draws == 8
    cub = p.data.cub
    assert (cub.image_size, cub.num_classes, cub.crop, cub.concentration_crop) == (224, 200, "box", "box1.5")
    assert p.networks.cub.width == 1.0 and p.networks.cub.weights == "imagenet"
    r = p.training.cifar_resnet
    assert (r.epochs, r.lr, r.schedule, r.milestones, r.augment) == (200, 0.1, "step", (100, 150), "crop_flip")
    assert p.networks.cifar.weights == "train"
    assert p.compression.keep == (0.38, 0.128, 0.08)
    assert (p.adversarial.step_size, p.adversarial.steps) == (0.001, 10)
    assert p.decoder.n_blocks == 6 and p.decoder.compare_blocks == (6, 8)
    assert p.evaluation.robustness_top_k == 20 and p.evaluation.localization_archs == ("resnet50", "vgg16")
    assert p.distillation.teachers == ("vgg16", "resnet18", "resnet34") and p.distillation.student == "alexnet"
    assert (p.damage.n_filters, p.damage.kernel_size, p.damage.negatives) == (4, 7, "imagenet")
    assert p.dynamics.depth == 32 and p.dynamics.snapshot_epochs[-1] == 200
    assert p.data.segmentation.dataset == "isbi2012"


def test_every_profile_sets_every_section():
    # the schema has no defaults except optional values, so each shipped file is complete
    for name in PROFILES:
        p = load_profile(name)
        for section in ("data", "networks", "training", "estimator", "decoder", "evaluation", "compression",
                        "distillation", "adversarial", "damage", "dynamics", "rescaling"):
            assert getattr(p, section) is not None
        assert p.estimator.beta in p.estimator.betas


def test_copy_of_smoke_loads_from_a_path(tmp_path):
    p = load_profile(write_variant(tmp_path, lambda t: t))
    assert p == load_profile("smoke")


@pytest.mark.parametrize(
    "header, line, key, section, suggestion",
    [
        ('artifacts = "smoke"', "sed = 3", "sed", "the top level", "seed"),
        ("[training.cub]", "epoch = 3", "epoch", "[training.cub]", "epochs"),
        ("[estimator.n_images]", "mapz = 2", "mapz", "[estimator.n_images]", "maps"),
        ("[compression.retrain]", "lr_decay = 0.5", "lr_decay", "[compression.retrain]", None),
        ("[data.cub]", "image_sizes = 32", "image_sizes", "[data.cub]", "image_size"),
    ],
)
def test_unknown_key_is_an_error_naming_it(tmp_path, header, line, key, section, suggestion):
    path = write_variant(tmp_path, insert_after(header, line))
    with pytest.raises(ValueError) as err:
        load_profile(path)
    msg = str(err.value)
    assert f"unknown key {key!r}" in msg and section in msg and "accepted keys" in msg
    if suggestion:
        assert f"did you mean {suggestion!r}" in msg


def test_unknown_section_is_an_error(tmp_path):
    path = write_variant(tmp_path, lambda t: t + "\n[pruning]\nkeep = 0.5\n")
    with pytest.raises(ValueError, match=r"unknown key 'pruning' in the top level.*accepted keys: .*compression"):
        load_profile(path)


def set_key(section: str, key: str, value: str | None):
    """Edit: set ``key`` of ``[section]`` to the TOML literal ``value`` (added when absent; None
    deletes the line)."""

    def edit(text: str) -> str:
        header = f"[{section}]\n"
        start = text.index(header) if section else 0
        end = text.find("\n[", start + len(header))
        end = len(text) if end == -1 else end
        replacement = "" if value is None else f"{key} = {value}\n"
        block, n = re.subn(rf"^{re.escape(key)} = .*\n", replacement, text[start:end], count=1, flags=re.M)
        if n == 0:
            assert value is not None, (section, key)
            block = block.replace(header, header + replacement, 1)
        return text[:start] + block + text[end:]

    return edit


@pytest.mark.parametrize(
    "section, key, value, pattern",
    [
        ("training.cub", "epochs", '"two"', r"training\.cub\.epochs must be an int, got a string \('two'\)"),
        ("data.cifar", "image_size", "32.0", r"data\.cifar\.image_size must be an int, got a float \(32\.0\)"),
        ("data", "download", "0", r"data\.download must be a bool"),
        ("networks.cifar", "depths", "20", r"networks\.cifar\.depths must be a list of int"),
        ("networks.cifar", "depths", '[20, "32"]', r"networks\.cifar\.depths\[1\] must be an int"),
        ("estimator", "method", '"fast"', r"estimator\.method must be one of \['optimize', 'linear'\]"),
        ("networks.unet", "base_channels", "[8]", r"networks\.unet\.base_channels must be an int, got a list"),
        ("rescaling", "factor", "true", r"rescaling\.factor must be a number"),
        ("estimator", "grid", '"8"', r"estimator\.grid must be int"),
        ("layers", "vgg16", "3", r"layers\.vgg16 must be str \| list of str"),
        ("data.cub", "crop", '"box2"', r"data\.cub\.crop must be one of \['box', 'box1\.5'\]"),
    ],
)
def test_wrong_type_is_an_error(tmp_path, section, key, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_profile(write_variant(tmp_path, set_key(section, key, value)))


def test_ints_are_accepted_for_floats(tmp_path):
    p = load_profile(write_variant(tmp_path, set_key("rescaling", "factor", "4")))
    assert p.rescaling.factor == 4.0 and isinstance(p.rescaling.factor, float)


@pytest.mark.parametrize(
    "section, key, value, pattern",
    [
        ("training.cub", "optimizer", '"rmsprop"', r"training\.cub\.optimizer must be one of"),
        ("training.cub", "milestones", "[1]", r"\[training\.cub\]: Recipe: milestones are only used by schedule 'step'"),
        ("dynamics", "depth", "30", r"depth must be 6n\+2"),
        ("networks.cub", "archs", '["alexnet", "vgg_16"]', r"unknown architecture 'vgg_16' \(did you mean 'vgg16'\?\)"),
        ("compression", "keep", "[0.38, 1.5]", r"\[compression\]: keep must be decreasing"),
        ("dynamics", "snapshot_epochs", "[0, 1, 5]", r"snapshot_epochs"),
        ("layers", "resnet44", None, r"\[layers\] has no entry for \['resnet44'\]"),
        ("estimator", "beta", "-1.0", r"\[estimator\]: beta must be a positive number"),
        ("estimator", "betas", "[1e-4, 0.0]", r"\[estimator\]: betas must be > 0"),
        ("data.cifar", "n_train", None, r"\[data\.cifar\]: n_train is required for synthetic data"),
        ("networks.cifar", "weights", '"published"', r"'published' needs dataset cifar10"),
        ("estimator", "max_eval_draws", "4", r"\[estimator\]: max_eval_draws must be >= eval_draws"),
        ("estimator.n_images", "ru", "0", r"\[estimator\.n_images\]: ru must be >= 1"),
        ("data", "num_workers", "-1", r"\[data\]: num_workers must be >= 0"),
    ],
)
def test_inconsistent_values_are_errors(tmp_path, section, key, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_profile(write_variant(tmp_path, set_key(section, key, value)))


def test_missing_key_and_bad_toml(tmp_path):
    path = write_variant(tmp_path, set_key("estimator", "betas", None))
    with pytest.raises(ValueError, match=r"missing key 'betas' in \[estimator\]"):
        load_profile(path)
    # the estimator's own settings have deepinfo.Settings' defaults
    assert load_profile(write_variant(tmp_path, set_key("estimator", "tol", None))).estimator.tol == 0.05
    path = write_variant(tmp_path, lambda t: t + "\n[oops\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_profile(path)


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path))
    assert load_profile("cpu").data_root() == tmp_path


def test_a_profile_extends_another_and_sets_only_what_differs(tmp_path):
    from deepinfo.toolkit.profile import override_text

    (tmp_path / "mine.toml").write_text('extends = "smoke"\nname = "mine"\nartifacts = "mine"\n'
                                        "[estimator]\nbeta = 1e-3\n[estimator.n_images]\nmaps = 2\n")
    p, smoke = load_profile(tmp_path / "mine.toml"), load_profile("smoke")
    assert (p.name, p.artifacts, p.estimator.beta, p.estimator.n_images.maps) == ("mine", "mine", 1e-3, 2)
    assert p.estimator.n_images.layer_curves == smoke.estimator.n_images.layer_curves  # merged, not replaced
    assert p.training == smoke.training
    # a profile extending a file (relative to it), with dotted overrides as from a command line
    (tmp_path / "more.toml").write_text(override_text("mine.toml", ["estimator.method=linear", "seed=5"]))
    q = load_profile(tmp_path / "more.toml")
    assert (q.name, q.estimator.method, q.seed, q.estimator.beta) == ("mine", "linear", 5, 1e-3)
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(ValueError, match="in a circle"):
        load_profile(tmp_path / "loop.toml")
    with pytest.raises(ValueError, match="cannot be overridden"):
        override_text("smoke", ["name=x"])


def test_a_profile_that_requires_cuda_fails_at_once_without_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_profile("paper").device == "cuda"
    with pytest.raises(RuntimeError, match="profile 'paper' requires CUDA.*device = \"auto\""):
        load_profile("paper").torch_device()
    assert load_profile("smoke").torch_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_profile("paper").torch_device() == torch.device("cuda")


def test_an_override_given_twice_takes_its_last_value():
    from deepinfo.toolkit.profile import override_text

    text = override_text("smoke", ["seed=1", "estimator.method=linear", "seed=7"])
    assert text == 'extends = "smoke"\nseed = 7\nestimator.method = "linear"\n'
