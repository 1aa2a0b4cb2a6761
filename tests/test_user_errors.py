"""A user's mistake ends in one line on stderr and exit status 2, never a traceback (issue 16,
item 11); a layer that runs more than once in a forward pass is refused, naming the
alternatives, and `netdissect layers` marks it (issue 16, item 9)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from conftest import make_broden
from netdissect.cli import main
from netdissect.errors import LayerError, SettingsError
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe, check_device
from netdissect.models.trace import list_layers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_broden(tmp_path_factory.mktemp("user_errors") / "broden", images=8, seed=3)


def dissect_args(data, out, *extra):
    return ["dissect", "--dataset", str(data), "--model", "conftest:tiny_net", "--layers", "conv2",
            "--workers", "0", "--out", str(out), "--quiet", "--no-report", *extra]


def one_line_error(capsys, argv, *words):
    """Run the CLI; assert exit status 2 and one line on stderr naming each of `words`."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def argparse_error(capsys, argv, *words):
    """argparse's own refusal: SystemExit 2, its last line naming `words`, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err.strip().splitlines()[-1], (word, err)


# -- item 11: --device ------------------------------------------------------------------------
def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


@pytest.mark.parametrize("device", ["banana", "cuda:99", "cuda:0:1", "meta",
                                    pytest.param("mps", marks=pytest.mark.skipif(
                                        _mps_available(), reason="this machine has MPS"))])
def test_unusable_device_is_one_line_naming_the_usable_ones(data, tmp_path, capsys, device):
    line = one_line_error(capsys, dissect_args(data, tmp_path / "o", "--device", device),
                          "--device", device, "cpu")
    if torch.cuda.is_available():
        assert "cuda:0" in line
    assert not (tmp_path / "o").exists()


def test_cuda_without_cuda_names_cpu(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_line_error(capsys, dissect_args(data, tmp_path / "o", "--device", "cuda"),
                          "--device cuda", "CUDA is not available", "cpu")
    assert "cuda:0" not in line


@pytest.mark.parametrize("command", ["rotate", "ablate"])
def test_device_checked_by_the_experiments(data, tmp_path, capsys, command):
    one_line_error(capsys, [command, "--dataset", str(data), "--model", "conftest:tiny_net",
                            "--layer", "conv2", "--workers", "0", "--out", str(tmp_path / "o"),
                            "--quiet", "--device", "banana"], "--device banana", "cpu")


def test_device_checked_by_the_api():
    probe = Probe(nn.Sequential(nn.Conv2d(3, 2, 1)), ["0"])
    with pytest.raises(SettingsError, match=r"--device banana: .*cpu"):
        with probe.session("banana"):
            pass
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    assert check_device(None).type in ("cpu", "cuda")


def test_demo_device(tmp_path, capsys):
    one_line_error(capsys, ["demo", "--images", "6", "--dataset", str(tmp_path / "world"),
                            "--out", str(tmp_path / "demo"), "--workers", "0", "--quiet",
                            "--device", "banana"], "--device banana")


# -- item 11: numbers out of range --------------------------------------------------------------
@pytest.mark.parametrize("option, value", [
    ("--quantile", "2"), ("--quantile", "0"), ("--batch-size", "0"), ("--top-k", "0"),
    ("--workers", "-1"), ("--input-size", "0"),
    ("--iou-threshold", "-1"), ("--iou-threshold", "1.5"),
])
def test_number_out_of_range(data, tmp_path, capsys, option, value):
    one_line_error(capsys, dissect_args(data, tmp_path / "o", option, value), option, value)
    assert not (tmp_path / "o").exists()


def test_ablate_batch_size_out_of_range(data, tmp_path, capsys):
    one_line_error(capsys, ["ablate", "--dataset", str(data), "--model", "conftest:tiny_net",
                            "--layer", "conv2", "--out", str(tmp_path / "o"), "--quiet",
                            "--batch-size", "0"], "--batch-size", "0")


def test_not_a_number_is_refused_by_argparse(data, tmp_path, capsys):
    argparse_error(capsys, dissect_args(data, tmp_path / "o", "--batch-size", "many"),
                   "--batch-size", "many")


def test_layers_input_size(capsys):
    one_line_error(capsys, ["layers", "conftest:tiny_net", "--input-size", "0"], "--input-size", "0")


# -- item 11: --mean / --std --------------------------------------------------------------------
@pytest.mark.parametrize("option, value, words", [
    ("--std", "0,0,0", ["--std", "above 0"]),
    ("--std", "1,-1,1", ["--std", "above 0"]),
    ("--mean", "nan", ["--mean", "finite"]),
    ("--std", "inf", ["--std", "finite"]),
])
def test_mean_std_values(data, tmp_path, capsys, option, value, words):
    one_line_error(capsys, dissect_args(data, tmp_path / "o", option, value), *words)


@pytest.mark.parametrize("option, value", [("--mean", "1,2"), ("--std", "a,b,c"), ("--mean", "")])
def test_malformed_mean_std(data, tmp_path, capsys, option, value):
    argparse_error(capsys, dissect_args(data, tmp_path / "o", option, value), option)


# -- item 11: names and files -------------------------------------------------------------------
def test_unknown_categories(data, tmp_path, capsys):
    one_line_error(capsys, dissect_args(data, tmp_path / "o", "--categories", "object,bogus"),
                   "--categories", "bogus", "object")


def test_unknown_layers(data, tmp_path, capsys):
    argv = dissect_args(data, tmp_path / "o")
    argv[argv.index("conv2")] = "conv3"
    one_line_error(capsys, argv, "'conv3'", "conv2")


@pytest.mark.parametrize("model", ["nosuchmodel", "nosuchmodule:build", "conftest:no_such_callable"])
def test_unknown_model(data, tmp_path, capsys, model):
    argv = dissect_args(data, tmp_path / "o")
    argv[argv.index("conftest:tiny_net")] = model
    one_line_error(capsys, argv, model.split(":")[-1] if ":" in model else model)
    one_line_error(capsys, ["layers", model], model.split(":")[-1] if ":" in model else model)


def test_missing_dataset_folder(tmp_path, capsys):
    one_line_error(capsys, dissect_args(tmp_path / "nothere", tmp_path / "o"), "nothere")


def test_missing_weights_file(data, tmp_path, capsys):
    missing = tmp_path / "nofile.pt"
    one_line_error(capsys, dissect_args(data, tmp_path / "o", "--weights", str(missing)), str(missing))
    one_line_error(capsys, ["layers", "conftest:tiny_net", "--weights", str(missing)], str(missing))


def test_unknown_preset(data, tmp_path, capsys):
    argparse_error(capsys, dissect_args(data, tmp_path / "o", "--preset", "bogus"), "--preset", "bogus")


def test_missing_result_folders(tmp_path, capsys):
    one_line_error(capsys, ["relabel", str(tmp_path / "nothere")], "nothere")
    one_line_error(capsys, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                            "--out", str(tmp_path / "c")], str(tmp_path / "a"))


def test_report_of_a_missing_folder(tmp_path, capsys):
    one_line_error(capsys, ["report", str(tmp_path / "nothere")], "nothere")


def test_serve_a_missing_folder(tmp_path, capsys):
    one_line_error(capsys, ["serve", str(tmp_path / "nothere")], "nothere")


def test_serve_port_out_of_range(tmp_path, capsys):
    (tmp_path / "index.html").write_text("<html></html>")
    one_line_error(capsys, ["serve", str(tmp_path), "--port", "99999"], "--port", "99999")


def test_toyworld_images_out_of_range(tmp_path, capsys):
    one_line_error(capsys, ["toyworld", "--out", str(tmp_path / "w"), "--images", "0", "--quiet"],
                   "--images", "0")


def test_toyworld_into_another_folder(data, capsys):
    one_line_error(capsys, ["toyworld", "--out", str(data), "--images", "4", "--quiet"], str(data))


# -- item 9: a layer that runs more than once --------------------------------------------------
def _resnet18_probe(layers):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    return Probe(model, layers, Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, size=(32, 32)),
                 name="resnet18")


def _images(n=2):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_a_module_called_twice_is_refused_with_alternatives():
    probe = _resnet18_probe(["layer4.1.relu"])
    with pytest.raises(LayerError) as info:
        probe(_images())
    message = str(info.value)
    assert "'layer4.1.relu'" in message and "runs 2 times" in message
    assert "'layer4.1'" in message and "'layer4.1.bn2'" in message and "'layer4.1.bn1'" in message
    # refused again on the next batch, and by the copies `select` makes
    with pytest.raises(LayerError, match="runs 2 times"):
        probe(_images())
    with pytest.raises(LayerError, match="runs 2 times"):
        probe.select(["layer4.1.relu", "layer3"])(_images())
    # the suggested alternatives work, and the block's output is the second call's output
    maps = probe.select(["layer4.1", "layer4.1.bn2"])(_images())
    assert torch.equal(maps["layer4.1"], maps["layer4.1"].clamp(min=0))


def test_the_check_keeps_the_early_stop():
    probe = _resnet18_probe(["layer2"])
    ran = []
    probe.model.fc.register_forward_pre_hook(lambda module, inputs: ran.append(1))
    first = probe(_images())["layer2"]
    assert probe.layer_calls == {"layer2": 1}
    ran.clear()
    second = probe(_images())["layer2"]
    assert ran == []  # later batches stop after the last layer needed: fc never runs
    assert torch.equal(first, second)
    assert probe.select(["layer2"]).layer_calls is probe.layer_calls


def test_counting_pass_survives_a_head_that_does_not_fit():
    # the head only fits 8x8 inputs; the stopping passes never reach it, nor may the check
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    probe = Probe(model, ["1"], Preprocess(mean=(0, 0, 0), std=(1, 1, 1)))
    out = probe(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    assert out["1"].shape == (1, 2, 16, 16) and probe.layer_calls == {"1": 1}


def test_list_layers_counts_calls():
    model = torchvision.models.resnet18(weights=None)
    records = {r["name"]: r for r in list_layers(model, torch.zeros(1, 3, 32, 32))}
    assert records["layer4.1.relu"]["calls"] == 2 and records["layer4.1.relu"]["dissectable"] == "yes"
    assert records["layer4.1.bn2"]["calls"] == 1 and records["relu"]["calls"] == 1


def test_layers_command_marks_modules_that_run_twice(capsys):
    assert main(["layers", "resnet18", "--weights", "random", "--input-size", "32"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "no (runs 2x)" in rows["layer4.1.relu"]
    assert " yes " in rows["layer4.1.bn2"] and "runs" not in rows["layer4.1.bn2"]
    assert "runs" not in rows["relu"]


def test_cli_dissect_of_a_module_called_twice_is_one_line(tmp_path, capsys):
    data = make_broden(tmp_path / "b", images=4, size=32, seed=1)
    one_line_error(capsys, ["dissect", "--dataset", str(data), "--model", "resnet18", "--weights",
                            "random", "--input-size", "32", "--layers", "layer4.1.relu", "--workers", "0",
                            "--out", str(tmp_path / "o"), "--quiet", "--no-report"],
                   "layer4.1.relu", "runs 2 times", "layer4.1.bn2")
    assert not (tmp_path / "o" / "layer4.1.relu").exists()


@pytest.mark.parametrize("option, value", [("--draws", "-1"), ("--memory-mb", "0")])
def test_ablate_numbers_out_of_range(data, tmp_path, capsys, option, value):
    one_line_error(capsys, ["ablate", "--dataset", str(data), "--model", "conftest:tiny_net",
                            "--layer", "conv2", "--out", str(tmp_path / "a"), "--quiet", option,
                            value], option, value)


def test_download_timeout_out_of_range(tmp_path, capsys):
    one_line_error(capsys, ["download", "broden", "--dest", str(tmp_path), "--timeout", "0",
                            "--quiet"], "--timeout", "0")
