"""The shape the redesign promised: a light command line, settings that derive everything,
statistics that merge through their state, and the caller's model left as it was."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import torch

import netdissect
from conftest import TinyNet
from netdissect.cli.main import build_parser
from netdissect.engine.settings import (Settings, fingerprint_components, setting_fields,
                                        state_key, summary_settings)
from netdissect.stats import CombinedStat, IoUTally, TopImages, TopQuantile


def test_help_and_version_import_no_heavy_library():
    code = ("import sys\n"
            "from netdissect.cli.main import build_parser\n"
            "build_parser().format_help()\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'pandas', 'jinja2') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    version = subprocess.run([sys.executable, "-m", "netdissect", "--version"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == f"netdissect {netdissect.__version__}"


def test_every_setting_is_an_option_of_dissect_with_its_default_kept():
    args = build_parser().parse_args(["dissect", "--dataset", "d", "--model", "m", "--out", "o"])
    for f in setting_fields("numbers", "labels", "state", "runtime"):
        assert hasattr(args, f.name), f.name
    assert Settings.from_options(vars(args)) == Settings()
    args = build_parser().parse_args(["dissect", "--data", "d", "--model", "m", "--out", "o",
                                      "--quantile", "0.01", "--categories", "object,part",
                                      "--skip-bad", "--definition", "lite"])
    s = Settings.from_options(vars(args))
    assert (args.dataset, s.quantile, s.categories, s.skip_bad, s.definition) == \
        ("d", 0.01, ["object", "part"], True, "lite")


def test_roles_decide_the_fingerprint_the_state_key_and_the_summary():
    base = Settings()
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [32, 32]}

    def components(s):
        return fingerprint_components(s, "data", ["object"], "weights", pre, "files")

    changes = {"quantile": 0.01, "top_k": 3, "skip_bad": True, "null": 10, "bootstrap": 5}
    assert {f.name for f in setting_fields("numbers")} == {*changes, "categories", "resample_seed"}
    for name, value in changes.items():  # each changes the fingerprint
        assert components(dataclasses.replace(base, **{name: value})) != components(base), name
    # the resampling seed matters only when there is a null or a bootstrap to seed
    assert components(dataclasses.replace(base, resample_seed=3)) == components(base)
    with_null = dataclasses.replace(base, null=10)
    assert components(dataclasses.replace(with_null, resample_seed=3)) != components(with_null)
    assert components(dataclasses.replace(with_null, fdr=0.1)) == components(with_null)
    # the null's permutations are drawn within batches: with a null, the batch size counts
    assert components(dataclasses.replace(with_null, batch_size=8)) != components(with_null)
    assert components(dataclasses.replace(base, batch_size=8)) == components(base)
    # the categories recorded are those the dataset selected, whatever was asked
    assert components(dataclasses.replace(base, categories=["object"]))["categories"] == ["object"]
    for name, value in (("iou_threshold", 0.1), ("definition", "lite"), ("workers", 3)):
        assert components(dataclasses.replace(base, **{name: value})) == components(base)
    key = state_key(components(base), base, ["conv1"], 2)
    assert key["batch_size"] == 32 and key["world_size"] == 2 and key["layers"] == ["conv1"]
    assert state_key(components(base), dataclasses.replace(base, batch_size=8), ["conv1"], 2) != key
    block = summary_settings(base, ["object"], pre)
    assert "workers" not in block and "checkpoint_seconds" not in block
    assert block["categories"] == ["object"] and block["input_size"] == [32, 32]


def test_combined_statistics_merge_through_their_state():
    torch.manual_seed(0)
    values = torch.randn(3, 400)

    def stats():
        return CombinedStat(quantile=TopQuantile(3, 0.05, 400), top=TopImages(3, 2))

    whole, a, b = stats(), stats(), stats()
    whole.quantile.update(values)
    whole.top.update(values[:, :10].t(), torch.arange(10))
    a.quantile.update(values[:, :150])
    a.top.update(values[:, :4].t(), torch.arange(4))
    b.quantile.update(values[:, 150:])
    b.top.update(values[:, 4:10].t(), torch.arange(4, 10))
    restored = stats()
    restored.load_state_dict(b.state_dict())
    a.merge(restored)
    assert torch.equal(a.quantile.thresholds(), whole.quantile.thresholds())
    assert torch.equal(a.top.indices, whole.top.indices)
    expected = torch.from_numpy(__import__("numpy").quantile(values.double().numpy(), 0.95, axis=1)).float()
    assert torch.equal(whole.quantile.thresholds(), expected)
    tally = IoUTally(3, torch.tensor([-1, 0]), 1)
    assert set(tally.state_dict()) == {"intersection", "activation_original", "activation_lite", "activation_pnas",
                                       "truth", "images"}


def test_an_unknown_option_is_refused_not_ignored(broden_dir):
    import pytest

    from netdissect.errors import SettingsError

    with pytest.raises(SettingsError, match="unknown option.*quantlie"):
        netdissect.dissect(TinyNet(), broden_dir, ["conv2"], quantlie=0.01, progress=False)


def test_dissect_leaves_the_model_as_it_was_found(broden_dir):
    model = TinyNet().train()
    model.conv1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    netdissect.dissect(model, broden_dir, ["conv2"], workers=0, progress=False, device="cpu")
    assert model.training and not model.conv1.training and model.conv2.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
