"""``pretrained``: a member's backbone from a local weights file (first conv adapted to the 2 input channels,
the classifier head left to the member), or timm's ImageNet weights, which fail at once offline."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from timm.models._manipulate import adapt_input_conv

from rfcx.train.config import get_config
from rfcx.train.models import build_classifier, check_pretrained


def _weights(tmp_path, suffix: str = ".pth", name: str = "test_efficientnet") -> tuple:
    torch.manual_seed(123)
    source = timm.create_model(name, pretrained=False, in_chans=3, num_classes=1000)
    state = source.state_dict()
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_local_weights_file_is_loaded_into_the_backbone(tmp_path, suffix: str) -> None:
    path, state = _weights(tmp_path, suffix)
    cfg = get_config("tiny").replace(pretrained=str(path))
    spec = cfg.backbones[0]
    net = build_classifier(cfg, spec, pretrained=True)
    mine = net.backbone.state_dict()
    conv = "blocks.0.0.conv.weight"
    assert torch.equal(mine[conv], state[conv])  # an inner conv: the file's
    assert torch.equal(mine["bn1.running_mean"], state["bn1.running_mean"])
    assert mine["conv_stem.weight"].shape[1] == 2 == cfg.in_chans  # the first conv adapted to 2 channels
    torch.testing.assert_close(mine["conv_stem.weight"], adapt_input_conv(2, state["conv_stem.weight"]))
    assert mine["classifier.weight"].shape[0] == 24  # the head: the member's own (24 classes, random)
    assert net(torch.full((2, 256, 188), -60.0)).shape == (2, 24)
    # without pretrained=True (a checkpoint's weights come next: export, scoring) the backbone stays random
    plain = build_classifier(cfg, spec).backbone.state_dict()
    assert not torch.equal(plain[conv], state[conv])
    check_pretrained(cfg)  # fits: no error
    one = build_classifier(cfg.replace(freq_channel=False), spec, pretrained=True).backbone.state_dict()
    torch.testing.assert_close(one["conv_stem.weight"], state["conv_stem.weight"].sum(1, keepdim=True))


def test_bad_weights_files_are_clear_errors(tmp_path) -> None:
    cfg = get_config("tiny")
    with pytest.raises(ValueError, match=r"pretrained = '.*nowhere.pth': weights file not found"):
        check_pretrained(cfg.replace(pretrained=str(tmp_path / "nowhere.pth")))
    other, _ = _weights(tmp_path, name="test_resnet")  # weights of another backbone
    with pytest.raises(
        ValueError,
        match=r"test_resnet.pth: the weights do not fit the backbone test_efficientnet "
        r"\(missing keys: conv_stem.weight, .*unexpected keys: conv1.0.weight",
    ):
        check_pretrained(cfg.replace(pretrained=str(other)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    with pytest.raises(ValueError, match="junk.pt: not a readable weights file"):
        check_pretrained(cfg.replace(pretrained=str(junk)))
    for bad in (True, "", 3):
        with pytest.raises(ValueError, match=r"pretrained = .* must be false, 'imagenet' .* or the path"):
            cfg.replace(pretrained=bad)
    assert cfg.replace(pretrained="imagenet").pretrained == "imagenet"
    assert get_config("tiny").pretrained is False


def test_imagenet_offline_fails_at_once_naming_the_fix(tmp_path, monkeypatch) -> None:
    """No network: ``pretrained = "imagenet"`` stops before any training with the fix (a local file)."""
    import time

    import huggingface_hub.constants as hf_constants

    def no_network(*_args, **_kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)  # no connection is made (nor tried)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # weights not cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    assert not hf_constants.is_offline_mode()  # offline is found out (the hub does not answer), not told
    from rfcx.train.rounds import train_rounds

    cfg = get_config("tiny").replace(pretrained="imagenet")
    started = time.perf_counter()
    with pytest.raises(ValueError) as err:
        train_rounds(str(tmp_path / "store.zarr"), tmp_path / "runs", cfg, 0, progress=False, echo=lambda *_: None)
    assert time.perf_counter() - started < 10  # not huggingface_hub's half a minute of retries per file
    assert not hf_constants.is_offline_mode()  # restored
    text = str(err.value)
    assert "pretrained = 'imagenet': could not get timm's pretrained weights of test_efficientnet" in text
    assert "set pretrained to a local weights file" in text
    assert "timm.create_model('test_efficientnet', pretrained=True).state_dict()" in text
    assert not (tmp_path / "runs").exists()  # nothing started
