"""The hook tool (Trace, TraceDict) and the Probe: read, edit, stop, clean up, token grids."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import make_broden
from netdissect.cli import main
from netdissect.errors import LayerError
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.trace import (StopForward, Trace, TraceDict, as_feature_map, list_layers,
                                     output_shapes, token_grid, try_forward)


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.ReLU()))
        self.lstm_like = nn.Identity()

    def forward(self, x):
        y = self.block(x)
        return self.lstm_like((y, "extra"))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_probe_reads_nested_names_and_tuple_outputs():
    torch.manual_seed(0)
    model = TupleNet()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    probe = Probe(model, ["block.1.0", "lstm_like"], Preprocess(mean=(0, 0, 0), std=(1, 1, 1)))
    out = probe(x)
    expected = torch.relu(model.block[0](x.float() / 255))
    assert torch.allclose(out["block.1.0"], expected, atol=1e-6) and torch.equal(out["lstm_like"], out["block.1.0"])
    assert _hooks(model) == 0  # hooks removed after the pass


def test_trace_reads_edits_and_stops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    with Trace(model, "0") as t:
        y = model(x)
    assert torch.equal(t.output, model[0](x)) and torch.equal(y, model(x))
    # edit_output replaces what the rest of the network sees
    with Trace(model, "1", edit_output=lambda out, layer: out * 0):
        assert torch.equal(model(x), model[2](torch.zeros(5, 3)))
    # stop ends the pass after the layer; the context swallows StopForward
    seen = []
    with Trace(model, "2", retain_output=False, edit_output=lambda o, l: seen.append(l) or o):
        with Trace(model, "0", stop=True) as t:
            model(x)
    assert seen == [] and t.output is not None
    assert _hooks(model) == 0


def test_tracedict_stops_after_the_last_layer_in_run_order():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
    ran = []
    model[3].register_forward_pre_hook(lambda m, i: ran.append("3"))
    with TraceDict(model, ["2", "0"], stop=True) as traces:  # listed out of order
        assert try_forward(model, torch.randn(1, 4)) is None
    assert traces.order == ["0", "2"] and ran == []  # layer 3 never ran
    assert _hooks(model) == 0


def test_hooks_removed_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten())
    probe = Probe(model, ["1"])
    with pytest.raises(LayerError, match="N x C x H x W"):
        probe(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    assert _hooks(model) == 0
    with pytest.raises(RuntimeError):
        with Trace(model, "0", edit_output=lambda out, layer: out.view(7)):
            model(torch.zeros(1, 3, 4, 4))
    assert _hooks(model) == 0
    assert not issubclass(StopForward, RuntimeError)


def test_unknown_layer_lists_close_matches():
    with pytest.raises(LayerError, match=r"'block.1.1'.*Close matches: block\.1\.0"):
        Probe(TupleNet(), ["block.1.1"])
    with pytest.raises(LayerError, match=r"'block.1.1' not found.*Close matches: block\.1\.0"):
        Trace(TupleNet(), "block.1.1")


def test_session_leaves_the_model_as_it_was_found():
    model = TupleNet().train()
    model.block[0].eval()  # a mixed state must come back exactly
    probe = Probe(model, ["block.1.0"])
    with probe.session("cpu"):
        assert not any(m.training for m in model.modules())
        probe(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert model.training and not model.block[0].training and model.block[1].training


def test_token_grid_values_row_by_row():
    # tokens numbered 0..T-1: a class token and 2 registers first, then a 2x3 grid
    tokens = torch.arange(3 + 6, dtype=torch.float32)[None, :, None].expand(1, 9, 2)
    grid = as_feature_map(tokens, (20, 30))
    assert grid.shape == (1, 2, 2, 3)
    assert grid[0, 0].tolist() == [[3, 4, 5], [6, 7, 8]]  # extra tokens dropped, rows in order


def test_output_shapes_on_the_meta_device():
    import torchvision

    shapes = output_shapes(lambda: torchvision.models.resnet18(), None, 64)
    assert list(shapes)[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert shapes["layer4"] == (1, 512, 2, 2) and shapes["fc"] == (1, 1000)


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
    from netdissect.engine.run import ResizeWarning

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


def test_traces_leave_no_garbage_cycle():
    """A TraceDict frees its outputs with itself (no reference cycle waiting for the garbage
    collector), so a long pass does not hold every batch's layer outputs in memory."""
    import gc

    probe = Probe(TupleNet(), ["block.1.0", "lstm_like"])
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            probe(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
        assert gc.collect() == 0
    finally:
        gc.enable()
