"""Tests of --weights imagenet / places365 (netdissect.models.fetch) and the stop without weights.

All traffic goes to a local HTTP server (127.0.0.1, a free port) that honours Range requests, can
cut the connection once after some bytes, and records every request; TORCH_HOME points into
tmp_path, so the real torch hub cache is never touched.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import make_broden
from netdissect.cli.main import main
from netdissect.errors import DownloadError, ModelError, WeightsError
from netdissect.models import fetch
from netdissect.models.builders import torchvision as tv_builder
from netdissect.models.registry import RandomWeightsWarning
from netdissect.models.zoo import build_model

PLACES_NAME = "resnet18_places365.pth.tar"


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    """A torch hub cache in tmp_path, no proxy, no user-set mirror."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(fetch.TORCHVISION_MIRROR_ENV, raising=False)
    monkeypatch.delenv(fetch.PLACES365_URL_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Checkpoints in the published formats


@pytest.fixture(scope="module")
def imagenet_resnet18() -> tuple[torch.nn.Module, bytes]:
    """A ResNet-18 and its state dict as torchvision publishes it (a plain state dict)."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18().eval()
    return model, _saved(model.state_dict())


@pytest.fixture(scope="module")
def places_resnet18() -> tuple[torch.nn.Module, bytes]:
    """A 365-class ResNet-18 saved like the CSAIL Places365 checkpoints: DataParallel keys
    under 'state_dict', no BatchNorm step counters (PyTorch 0.3)."""
    torch.manual_seed(2)
    model = torchvision.models.resnet18(num_classes=365).eval()
    state = {"module." + k: v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    return model, _saved({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7, "state_dict": state})


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _serve_imagenet(server, monkeypatch, data: bytes, prefix: str) -> str:
    """Serve ``data`` as torchvision's resnet18-PREFIX.pth through the mirror variable; the
    candidate list names that file. Returns the file name."""
    name = f"resnet18-{prefix}.pth"
    server.files["/models/" + name] = data
    monkeypatch.setenv(fetch.TORCHVISION_MIRROR_ENV, server.base + "models/")
    monkeypatch.setattr(tv_builder, "_imagenet_candidates",
                        lambda arch: [f"{fetch.TORCHVISION_BASE_URL}/{name}"])
    return name


# ----------------------------------------------------------------------------------------------
# weights="imagenet"


def test_torchvision_url_uses_the_mirror(monkeypatch):
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert fetch.torchvision_url(url) == url
    monkeypatch.setenv(fetch.TORCHVISION_MIRROR_ENV, "http://mirror.local/tv/")
    assert fetch.torchvision_url(url) == "http://mirror.local/tv/resnet18-f37072fd.pth"


def test_imagenet_is_downloaded_hash_checked_loaded_then_used_from_the_cache(
        server, monkeypatch, imagenet_resnet18):
    reference, data = imagenet_resnet18
    name = _serve_imagenet(server, monkeypatch, data, _sha(data)[:8])
    probe = build_model("resnet18", weights="imagenet")
    path = fetch.checkpoints_dir() / name
    assert probe.weights == str(path) and path.read_bytes() == data
    assert probe.weights_fingerprint == _sha(data)
    assert probe.preset == "imagenet" and _same_outputs(probe.model, reference)
    assert [r["path"] for r in server.requests] == ["/models/" + name]
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [name]

    # Cached now: no --weights uses it silently, and nothing is fetched again.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        again = build_model("resnet18")
        assert build_model("resnet18", weights="imagenet").weights == str(path)
    assert again.weights_fingerprint == _sha(data) and len(server.requests) == 1


def test_imagenet_with_a_wrong_hash_is_refused_and_not_kept(server, monkeypatch, imagenet_resnet18):
    _, data = imagenet_resnet18
    wrong = "0" * 8 if not _sha(data).startswith("0" * 8) else "1" * 8
    name = _serve_imagenet(server, monkeypatch, data, wrong)
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", weights="imagenet")
    message = str(err.value)
    assert f"not torchvision's {name}" in message and wrong in message
    assert "deleted" in message and fetch.TORCHVISION_MIRROR_ENV in message
    folder = fetch.checkpoints_dir()
    assert not [p for p in folder.iterdir() if not p.name.startswith(".")]  # no file, no .part
    with pytest.raises(WeightsError, match="no weights given"):
        build_model("resnet18")  # still nothing cached


def test_pretrained_cache_only_false_downloads_without_weights(server, monkeypatch,
                                                               imagenet_resnet18):
    _, data = imagenet_resnet18
    name = _serve_imagenet(server, monkeypatch, data, _sha(data)[:8])
    probe = build_model("resnet18", pretrained_cache_only=False)
    assert probe.weights == str(fetch.checkpoints_dir() / name)


def test_imagenet_from_an_unreachable_host_names_the_mirror_variable(server, monkeypatch):
    monkeypatch.setenv(fetch.TORCHVISION_MIRROR_ENV, server.base + "nothing-here/")
    with pytest.raises(DownloadError) as err:
        build_model("resnet18", weights="imagenet")
    message = str(err.value)
    assert "HTTP 404" in message and fetch.TORCHVISION_MIRROR_ENV in message
    assert "resnet18-f37072fd.pth" in message  # the real first candidate


# ----------------------------------------------------------------------------------------------
# weights="places365"


def _places_folder() -> Path:
    return fetch.checkpoints_dir() / "places365"


def _manifest() -> dict:
    return json.loads((_places_folder() / fetch.MANIFEST).read_text())


def test_places365_is_downloaded_recorded_and_then_used_from_the_cache(
        server, monkeypatch, places_resnet18):
    reference, data = places_resnet18
    server.files["/p365/" + PLACES_NAME] = data
    monkeypatch.setenv(fetch.PLACES365_URL_ENV, server.base + "p365")
    probe = build_model("resnet18", weights="places365")
    path = _places_folder() / PLACES_NAME
    assert probe.weights == str(path) and probe.weights_fingerprint == _sha(data)
    assert probe.preset == "places365" and probe.model.fc.out_features == 365
    assert _same_outputs(probe.model, reference)
    record = _manifest()[PLACES_NAME]
    assert record["sha256"] == _sha(data) and record["size"] == len(data)
    assert record["url"] == server.base + "p365/" + PLACES_NAME and record["how"] == "downloaded"
    assert len(server.requests) == 1
    assert sorted(p.name for p in _places_folder().iterdir() if not p.name.startswith(".")) == [
        fetch.MANIFEST, PLACES_NAME]

    again = build_model("resnet18", weights="places365", layers=["layer4"])
    assert again.weights_fingerprint == _sha(data) and len(server.requests) == 1
    assert _manifest()[PLACES_NAME] == record


def test_places365_default_url_is_the_authors_site():
    assert fetch.places365_url("resnet18") == (
        "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar")
    assert fetch.places365_url("densenet161").endswith("/densenet161_places365.pth.tar")


def test_places365_resumes_an_interrupted_download_with_a_range_request(
        server, monkeypatch, places_resnet18):
    _, data = places_resnet18
    server.files["/" + PLACES_NAME] = data
    monkeypatch.setenv(fetch.PLACES365_URL_ENV, server.base)
    part = _places_folder() / (PLACES_NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])  # left by a process that was killed
    server.cut_after = 5000  # and this transfer breaks too, then resumes
    probe = build_model("resnet18", weights="places365")
    assert probe.weights_fingerprint == _sha(data) and not part.exists()
    assert [r.get("range") for r in server.requests] == ["bytes=1000-", "bytes=6000-"]
    assert _manifest()[PLACES_NAME]["sha256"] == _sha(data)


def test_places365_file_changed_after_download_is_refused(server, monkeypatch, places_resnet18):
    _, data = places_resnet18
    server.files["/" + PLACES_NAME] = data
    monkeypatch.setenv(fetch.PLACES365_URL_ENV, server.base)
    build_model("resnet18", weights="places365")
    path = _places_folder() / PLACES_NAME
    changed = bytearray(data)
    changed[-10] ^= 0xFF
    path.write_bytes(bytes(changed))
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", weights="places365")
    message = str(err.value)
    assert str(path) in message and _sha(data) in message and _sha(bytes(changed)) in message
    assert "expected" in message and f"Delete {path} to download it again" in message

    path.unlink()  # as the message says: the next use downloads it again
    assert build_model("resnet18", weights="places365").weights_fingerprint == _sha(data)
    assert len(server.requests) == 2


def test_places365_file_found_without_a_record_is_recorded(places_resnet18):
    _, data = places_resnet18
    path = _places_folder() / PLACES_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert build_model("resnet18", weights="places365").weights == str(path)
    assert _manifest()[PLACES_NAME]["sha256"] == _sha(data)
    assert _manifest()[PLACES_NAME]["how"] == "found in the cache"


def test_places365_error_page_is_refused_and_not_kept(server, monkeypatch):
    server.files["/" + PLACES_NAME] = b"<html>moved</html>"
    monkeypatch.setenv(fetch.PLACES365_URL_ENV, server.base)
    with pytest.raises(DownloadError, match="did not send a PyTorch checkpoint"):
        build_model("resnet18", weights="places365")
    assert not [p for p in _places_folder().iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("spec", ["vgg16", "resnet34"])
def test_places365_for_other_torchvision_models_lists_the_four(spec):
    with pytest.raises(ModelError) as err:
        build_model(spec, weights="places365")
    assert "alexnet, resnet18, resnet50, densenet161" in str(err.value)


@pytest.mark.parametrize("weights", ["imagenet", "places365"])
def test_download_keywords_do_not_apply_to_other_builders(weights):
    with pytest.raises(ModelError, match="torchvision models only|densenet161 only"):
        build_model("demo_cnn", weights=weights)


# ----------------------------------------------------------------------------------------------
# No weights and nothing cached


def test_no_weights_and_nothing_cached_lists_the_four_choices():
    with pytest.raises(WeightsError) as err:
        build_model("resnet18")
    message = str(err.value)
    for choice in ("'imagenet'", "'places365'", "FILE", "'random'", "resnet18-f37072fd.pth"):
        assert choice in message
    assert not (Path(torch.hub.get_dir()) / "checkpoints").exists()


def test_demo_models_keep_their_shipped_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        assert build_model("demo_cnn").weights is not None


def test_cli_dissect_without_weights_stops_with_the_choices(tmp_path, capsys):
    data = make_broden(tmp_path / "b", images=4, size=32, seed=1)
    code = main(["dissect", "--dataset", str(data), "--model", "resnet18", "--layers", "layer4",
                 "--workers", "0", "--out", str(tmp_path / "o"), "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    for choice in ("imagenet", "places365", "FILE", "random"):
        assert choice in lines[0]
    assert not (tmp_path / "o" / "layer4").exists()
