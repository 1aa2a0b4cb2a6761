"""Layer capture: nested names, tuple outputs, clear errors, transformer tokens on a grid."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import make_broden
from netdissect.cli import main
from netdissect.models.capture import LayerCapture, LayerError, list_layers, token_grid


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.ReLU()))
        self.lstm_like = nn.Identity()

    def forward(self, x):
        y = self.block(x)
        return self.lstm_like((y, "extra"))


def test_nested_names_and_tuple_outputs():
    model = TupleNet()
    x = torch.randn(2, 3, 8, 8)
    with LayerCapture(model, ["block.1.0", "lstm_like"]) as capture:
        out = capture(x)
    assert torch.equal(out["block.1.0"], torch.relu(model.block[0](x)))
    assert torch.equal(out["lstm_like"], out["block.1.0"])
    assert not model.block[1][0]._forward_hooks  # hooks removed on exit


def test_unknown_layer_lists_close_matches():
    with pytest.raises(LayerError, match=r"'block.1.1' not found.*Close matches: block\.1\.0"):
        LayerCapture(TupleNet(), ["block.1.1"])


def test_hooks_removed_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten())
    with pytest.raises(LayerError, match="N x C x H x W"):
        with LayerCapture(model, ["1"]) as capture:
            capture(torch.randn(1, 3, 4, 4))
    assert not model[1]._forward_hooks


@pytest.mark.parametrize("tokens, hw, expected", [
    (197, (224, 224), (1, 14, 14)),   # class token + 14x14 patches
    (196, (224, 224), (0, 14, 14)),   # patches only
    (201, (224, 224), (5, 14, 14)),   # class token + 4 registers
    (393, (224, 448), (1, 14, 28)),   # a wide input
    (50, (28, 28), (1, 7, 7)),
    (50, (32, 32), None),       # 7 does not divide 32: not a patch grid
])
def test_token_grid(tokens, hw, expected):
    assert token_grid(tokens, hw) == expected


def test_list_layers_marks_dissectable():
    import torchvision

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                               num_heads=2, hidden_dim=8, mlp_dim=16)
    records = {r["name"]: r for r in list_layers(vit, torch.zeros(1, 3, 32, 32))}
    assert records["conv_proj"]["dissectable"] == "yes" and records["conv_proj"]["shape"] == (1, 8, 4, 4)
    assert records["encoder.layers.encoder_layer_0"]["dissectable"] == "tokens"
    assert records["heads"]["dissectable"] == "no"


def test_vit_b_16_end_to_end_through_the_cli(tmp_path, capsys):
    data = make_broden(tmp_path / "broden", images=4, seed=2)  # 32x32 images, resized to 224
    out = tmp_path / "out"
    code = main(["dissect", "--dataset", str(data), "--model", "vit_b_16", "--weights", "random",
                 "--layers", "encoder.layers.encoder_layer_11", "--workers", "0", "--batch-size", "4",
                 "--quantile", "0.05", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "encoder.layers.encoder_layer_11" / "summary.json").read_text())
    assert summary["shape"] == [768, 14, 14]
    assert summary["settings"]["input_size"] == [224, 224]
    units = json.loads((out / "encoder.layers.encoder_layer_11" / "units.json").read_text())
    assert len(units) == 768 and all(u["threshold"] == u["threshold"] for u in units)


def test_resize_is_announced_before_the_run(tmp_path):
    import netdissect
    from conftest import TinyNet
    from netdissect.dissect import ResizeWarning

    data = make_broden(tmp_path / "broden", images=4, seed=2)  # 32x32 images
    with pytest.warns(ResizeWarning, match=r"4 of 4 images .* are not 48x48 .* resized"):
        result = netdissect.dissect(TinyNet(), data, ["conv2"], input_size=48, workers=0, progress=False)
    assert result["conv2"].top_maps.shape[-2:] == (12, 12)  # 48 / 4: the model saw 48x48 inputs


TIMM_REGISTER_VIT = """
from timm.models.vision_transformer import VisionTransformer

def build():
    # a class token and 4 register tokens before the 4x4 patch grid
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                             reg_tokens=4, num_classes=3)
"""


def test_timm_vits_end_to_end_through_the_cli(tmp_path, monkeypatch, capsys):
    pytest.importorskip("timm")
    data = make_broden(tmp_path / "broden", images=4, seed=2)
    out = tmp_path / "out"
    assert main(["dissect", "--dataset", str(data), "--model", "timm:vit_tiny_patch16_224",
                 "--layers", "blocks.11", "--workers", "0", "--quantile", "0.05", "--no-report",
                 "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "blocks.11" / "summary.json").read_text())
    assert summary["shape"] == [192, 14, 14]
    (tmp_path / "regvit.py").write_text(TIMM_REGISTER_VIT)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["dissect", "--dataset", str(data), "--model", "regvit:build", "--layers", "blocks.1",
                 "--workers", "0", "--quantile", "0.05", "--no-report", "--out", str(out / "reg"),
                 "--quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "reg" / "blocks.1" / "summary.json").read_text())
    assert summary["shape"] == [16, 4, 4]  # 1 + 4 + 16 tokens: the 5 extra ones dropped
