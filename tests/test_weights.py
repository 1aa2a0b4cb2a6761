"""Tests for netdissect.models.weights: safe reading, loading and fingerprinting of weights."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from netdissect import errors
from netdissect.files import sha256_file
from netdissect.models.weights import (
    WeightsError,
    apply_state_dict,
    check_hash_prefix,
    fingerprint_state_dict,
    load_weights,
    read_state_dict,
)


def small_net(seed: int = 0) -> nn.Module:
    """A small conv net with parameters and BatchNorm buffers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).eval()


def trained_like(seed: int = 1) -> nn.Module:
    """A small net whose BatchNorm statistics are not the defaults."""
    model = small_net(seed)
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    return model


@pytest.fixture()
def image() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def test_plain_state_dict_loads_and_reproduces_outputs(tmp_path, image):
    source = trained_like()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)

    target = small_net(seed=7)
    info = load_weights(target, path)

    assert torch.equal(target(image), source(image))
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["num_tensors"] == len(source.state_dict()) == 11
    assert info["missing"] == [] and info["unexpected"] == []


@pytest.mark.parametrize("nest_key", ["state_dict", "model", "model_state_dict"])
def test_nested_checkpoint_with_dataparallel_prefix(tmp_path, image, nest_key):
    source = trained_like()
    checkpoint = {
        "epoch": 90,
        "arch": "small",
        "best_prec1": 55.5,
        nest_key: {"module." + k: v for k, v in source.state_dict().items()},
    }
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(checkpoint, path)

    state = read_state_dict(path)
    assert sorted(state) == sorted(source.state_dict())
    target = small_net(seed=3)
    load_weights(target, path)
    assert torch.equal(target(image), source(image))


def test_module_component_inside_keys_is_matched():
    """Places365 AlexNet/VGG wrap only ``features`` in DataParallel: features.module.0.weight."""

    def net() -> nn.Module:
        return nn.Sequential(
            OrderedDict(features=nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), pool=nn.Flatten())
        )

    source = net()
    state = {k.replace("features.", "features.module."): v for k, v in source.state_dict().items()}
    assert sorted(state) == ["features.module.0.bias", "features.module.0.weight"]
    target = net()
    info = apply_state_dict(target, state)
    assert info["num_tensors"] == 2
    assert torch.equal(target.features[0].weight, source.features[0].weight)


def test_safetensors_round_trip(tmp_path, image):
    source = trained_like()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    target = small_net(seed=9)
    info = load_weights(target, path)
    assert torch.equal(target(image), source(image))
    assert info["sha256"] == sha256_file(path)
    assert fingerprint_state_dict(target) == fingerprint_state_dict(source)


def test_pickled_whole_model_is_refused_with_conversion_advice(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(small_net(), path)
    with pytest.raises(WeightsError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert "torch.save(model.state_dict(), 'weights.pth')" in message
    assert "weights_only=False" in message
    assert "torch.nn.modules.container.Sequential" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(15)])
    state = model.state_dict()
    for i in range(12):  # drop the weights of 12 layers
        del state[f"{i}.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["extra.bias"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)

    with pytest.raises(WeightsError) as err:
        load_weights(nn.Sequential(*[nn.Linear(2, 2) for _ in range(15)]), path)
    message = str(err.value)
    assert "12 missing keys: 0.weight, 1.weight" in message
    assert "9.weight, ... (2 more)" in message
    assert "10.weight" not in message
    assert "2 unexpected keys: extra.weight, extra.bias" in message
    assert str(path) in message


def test_non_strict_reports_missing_and_unexpected(tmp_path):
    source = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = source.state_dict()
    del state["1.bias"]
    state["2.weight"] = torch.ones(1)
    path = tmp_path / "loose.pth"
    torch.save(state, path)

    target = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    info = load_weights(target, path, strict=False)
    assert info["missing"] == ["1.bias"]
    assert info["unexpected"] == ["2.weight"]
    assert torch.equal(target[0].weight, source[0].weight)


def test_old_files_without_batchnorm_step_counter_load(image):
    """PyTorch < 0.4.1 files (e.g. the Places365 CNNs) have no num_batches_tracked."""
    source = trained_like()
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    target = small_net(seed=2)
    info = apply_state_dict(target, state)
    assert info["missing"] == []
    assert torch.equal(target(image), source(image))


def test_shape_mismatch_is_an_error_even_when_not_strict(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(nn.Linear(2, 7).state_dict(), path)
    for strict in (True, False):
        expected = r"2 shape mismatches: weight: file \(7, 2\) vs model \(3, 2\)"
        with pytest.raises(WeightsError, match=expected):
            load_weights(nn.Linear(2, 3), path, strict=strict)


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        read_state_dict(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="could not read"):
        read_state_dict(garbage)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="safetensors"):
        read_state_dict(bad_safetensors)


def test_dict_without_tensors_or_with_mixed_values(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "arch": "resnet18"}, path)
    with pytest.raises(WeightsError, match="without tensors.*epoch, arch"):
        read_state_dict(path)
    torch.save({"w": torch.zeros(1), "step": 5}, path)
    with pytest.raises(WeightsError, match="mixes tensors with other values.*step"):
        read_state_dict(path)


def test_fingerprint_state_dict_covers_names_values_and_buffers():
    a, b = trained_like(seed=1), trained_like(seed=1)
    assert fingerprint_state_dict(a) == fingerprint_state_dict(b)
    reordered = dict(reversed(list(a.state_dict().items())))
    assert fingerprint_state_dict(a) == fingerprint_state_dict(reordered)
    assert len(fingerprint_state_dict(a)) == 64

    b[1].running_var[0] += 1e-3  # a buffer
    assert fingerprint_state_dict(a) != fingerprint_state_dict(b)
    c = trained_like(seed=1)
    with torch.no_grad():
        c[6].bias[0] = c[6].bias[0].item() + 1e-6
    assert fingerprint_state_dict(a) != fingerprint_state_dict(c)
    d = trained_like(seed=1).double()  # same names and shapes, other dtype
    assert fingerprint_state_dict(a) != fingerprint_state_dict(d)


def test_sha256_file_and_hash_prefix(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"netdissect")
    digest = hashlib.sha256(b"netdissect").hexdigest()
    assert sha256_file(path) == digest

    named = tmp_path / f"net-{digest[:8]}.pth"
    named.write_bytes(b"netdissect")
    check_hash_prefix(named, digest)
    check_hash_prefix(tmp_path / "plain.pth", digest)  # no hash in the name: nothing to check
    with pytest.raises(WeightsError, match="corrupted"):
        check_hash_prefix(tmp_path / "net-deadbeef.pth", digest)


def test_load_weights_takes_a_state_read_before_and_checks_the_hash_first(tmp_path, image):
    source = trained_like()
    state = source.state_dict()
    digest_path = tmp_path / "plain.pth"
    torch.save(state, digest_path)
    digest = sha256_file(digest_path)

    # A state the caller already read (and possibly renamed) is loaded instead of the file's.
    named = tmp_path / f"small-{digest[:8]}.pth"
    named.write_bytes(digest_path.read_bytes())
    target = small_net(seed=4)
    info = load_weights(target, named, state={"module." + k: v for k, v in state.items()})
    assert info["path"] == str(named) and info["sha256"] == digest
    assert torch.equal(target(image), source(image))

    # With check_hash (hub-cache and packaged files), a name whose hash does not match is
    # refused before anything is loaded; a user's file named by its training step is not.
    wrong = tmp_path / "small-deadbeef.pth"
    wrong.write_bytes(digest_path.read_bytes())
    untouched = small_net(seed=4)
    before = fingerprint_state_dict(untouched)
    with pytest.raises(WeightsError, match="corrupted"):
        load_weights(untouched, wrong, check_hash=True)
    assert fingerprint_state_dict(untouched) == before
    step = tmp_path / "ckpt-020000.pth"
    step.write_bytes(digest_path.read_bytes())
    assert load_weights(untouched, step)["sha256"] == digest
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(untouched, tmp_path / "nope.pth", state=state)


def test_weights_error_is_the_package_error():
    assert WeightsError is errors.WeightsError
    assert issubclass(WeightsError, errors.NetDissectError)
