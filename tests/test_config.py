"""Config registry, file overrides, validation, round trip, diff, and model building."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.net import pool_input
from rfcx.train.config import AugmentConfig, ModelSpec, TrainConfig, get_config, list_configs
from rfcx.train.models import build_model


def test_registry() -> None:
    assert {"seed", "cpu", "tiny"} <= set(list_configs())
    seed = get_config("seed")
    assert seed.folds == 4 and seed.epochs == 60 and seed.batches_per_epoch == 200
    assert [(m.backbone, m.crop_seconds) for m in seed.backbones] == [
        ("rexnet_200", 4.0),
        ("efficientnet_b3", 4.0),
        ("rexnet_150", 8.0),
        ("efficientnet_b1", 8.0),
    ]
    assert seed.in_chans == 2 and seed.optimizer == "adamw" and seed.schedule == "cosine"
    assert seed.mixup_alpha == 0.5 and seed.pseudo_hop_seconds == 0.5 and seed.tp_fp_p == 0.5
    cpu = get_config("cpu")
    assert cpu.input_pool == (2, 2) and cpu.backbones[0].crop_seconds == 4.0
    assert get_config("cpu") == cpu  # fresh but equal
    # rounds >= 1 and the oracle learn from every window's labels and train longer than round 0
    assert (cpu.epochs_of(0), cpu.epochs_of(1), cpu.epochs_of(2)) == (16, 96, 96) and cpu.tp_box_share == 0.5
    assert cpu.pseudo_templates and not get_config("seed").pseudo_templates
    assert get_config("seed").pseudo_templates_combine == "max"
    with pytest.raises(ValueError, match="pseudo_templates_combine"):
        cpu.replace(pseudo_templates_combine="sum")
    assert cpu.replace(oracle=True).epochs_of(0) == 96 and cpu.replace(pseudo_epochs=0).epochs_of(1) == 16
    assert seed.epochs_of(1) == seed.epochs == 60
    with pytest.raises(ValueError, match="'cpu'"):
        get_config("cpuu")


def test_toml_override(tmp_path: Path) -> None:
    p = tmp_path / "short.toml"
    p.write_text(
        'base = "cpu"\nepochs = 2\nlr = 1\ninput_pool = [1, 2]\n'
        "[augment]\nmixup_p = 0.25\n"
        '[[backbones]]\nbackbone = "mobilenetv3_small_050"\ncrop_seconds = 8\n'
    )
    cfg = get_config(str(p))
    base = get_config("cpu")
    assert cfg.name == "short" and cfg.epochs == 2 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.input_pool == (1, 2)
    assert cfg.augment.mixup_p == 0.25 and cfg.augment.noise_p == base.augment.noise_p
    assert cfg.backbones == (ModelSpec("mobilenetv3_small_050", 8.0),)
    assert cfg.batch_size == base.batch_size


def test_yaml_override(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("base: seed\nname: seed-short\nfolds: 2\naugment:\n  gain_db: 3\n")
    cfg = get_config(p)
    assert cfg.name == "seed-short" and cfg.folds == 2 and cfg.augment.gain_db == 3.0
    assert cfg.backbones == get_config("seed").backbones
    assert set(cfg.diff(get_config("seed"))) == {"name", "folds", "augment.gain_db"}


def test_full_file_without_base(tmp_path: Path) -> None:
    p = tmp_path / "full.json.yaml"
    p.write_text(json.dumps(get_config("tiny").to_dict()))  # JSON is valid YAML
    assert get_config(p) == get_config("tiny")
    p.write_text("epochs: 3\n")
    with pytest.raises(ValueError, match="incomplete"):
        get_config(p)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('base = "cpu"\nepoch = 3\n', r"'epoch'.*'epochs'"),
        ('base = "cpu"\n[augment]\nmixup_prob = 0.1\n', r"augment\.mixup_prob.*mixup_p"),
        (
            'base = "cpu"\n[[backbones]]\nbackbone = "rexnet_20"\ncrop_seconds = 4\n',
            r"backbones\[0\]: backbone .rexnet_20.*rexnet_200",
        ),
        ('base = "cpux"\n', r"cpux.*'cpu'"),
        ('base = "cpu"\nepochs = "3"\n', r"epochs must be of type int"),
        ('base = "cpu"\noptimizer = "adamm"\n', r"adamw"),
        ('base = "cpu"\ntp_fp_p = 1.5\n', r"tp_fp_p"),
        ('base = "cpu"\nfreq_channel = 1\n', r"freq_channel must be of type bool"),
    ],
)
def test_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        get_config(p)


def test_round_trip_and_diff() -> None:
    for name in list_configs():
        cfg = get_config(name)
        d = cfg.to_dict()
        assert json.loads(json.dumps(d)) == d  # builtins only
        assert TrainConfig.from_dict(d) == cfg
        assert cfg.diff(cfg) == {}
    cpu = get_config("cpu")
    other = cpu.replace(epochs=cpu.epochs + 1, augment={"noise_p": 0.1})  # a mapping: merged field by field
    assert other.diff(cpu) == {"epochs": (cpu.epochs + 1, cpu.epochs), "augment.noise_p": (0.1, cpu.augment.noise_p)}
    whole = cpu.replace(augment=AugmentConfig(noise_p=0.1))  # a dataclass: the whole section (defaults elsewhere)
    assert whole.augment == AugmentConfig(noise_p=0.1)
    with pytest.raises(AttributeError):
        cpu.epochs = 3  # type: ignore[misc]


def test_build_model_forward_cpu_backbone() -> None:
    cfg = get_config("cpu")
    model = build_model(cfg.backbones[0], n_classes=24, in_chans=cfg.in_chans, channels_last=True).eval()
    x = pool_input(torch.randn(2, cfg.in_chans, 256, 376), cfg.input_pool)
    assert x.shape == (2, 2, 128, 188)
    with torch.no_grad():
        y = model(x.contiguous(memory_format=torch.channels_last))
    assert y.shape == (2, 24)
    tiny = build_model("test_efficientnet", n_classes=3, in_chans=1)
    assert tiny(torch.randn(2, 1, 32, 40)).shape == (2, 3)


def test_set_takes_augment_fields_by_dotted_name() -> None:
    from rfcx.errors import ConfigError
    from rfcx.train.config import apply_overrides

    cfg = apply_overrides(get_config("cpu"), ["epochs=96", "augment.pitch_shift_p=0.5", "augment.time_warp_p=0.25"])
    assert (cfg.epochs, cfg.augment.pitch_shift_p, cfg.augment.time_warp_p) == (96, 0.5, 0.25)
    assert cfg.augment.freq_mask_p == get_config("cpu").augment.freq_mask_p  # the other fields as they were
    assert set(get_config("cpu").diff(cfg)) == {"epochs", "augment.pitch_shift_p", "augment.time_warp_p"}
    with pytest.raises(ConfigError, match="unknown config field 'augment.pitch'"):
        apply_overrides(get_config("cpu"), ["augment.pitch=0.5"])
    with pytest.raises(ConfigError, match="only the augment section"):
        apply_overrides(get_config("cpu"), ["lr.x=1"])
    both = apply_overrides(get_config("cpu"), ["augment={mixup_p: 0.5}", "augment.noise_p=0.25"])
    assert (both.augment.mixup_p, both.augment.noise_p) == (0.5, 0.25)
    with pytest.raises(ConfigError, match="cannot be combined"):
        apply_overrides(get_config("cpu"), ["augment=3", "augment.noise_p=0.5"])
