"""Every reuse and resume decision, judged by its effect on the numbers (issue 16, item 2).

Reuse: a finished layer in OUT is reused only when nothing that decides its numbers changed;
a change (quantile, categories, mean/std, input size, weights, top_k, skip_bad) is named in a
RecomputeWarning and the layer is dissected again, giving exactly the files of a fresh run
with the new setting.  A new IoU threshold or definition needs no pass over the data: the
layer is reused (the model is never run) and relabelled, again exactly as a fresh run.

Resume: a saved state of an interrupted run is resumed only when its key matches; a change
(quantile, categories, mean/std, input size, layer list, batch size, number of processes) is
refused naming it, the state is left as it was, and `restart=True` gives a fresh run's numbers.
An unchanged resume continues where it stopped and is bit-identical to an uninterrupted run.
(Replaced images / label planes: tests/test_stale.py; weights on resume:
tests/test_resume_distributed.py.)
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import netdissect
from conftest import FailingNet, TinyNet, make_broden
from netdissect.engine.checkpoint import RecomputeWarning
from netdissect.errors import DissectError

QUIET = dict(workers=0, progress=False, report=False, batch_size=8)
# Save after every batch and never cache activations: pass 2 runs the model again, so an
# interruption in pass 2 is one failing forward call.
SAVING = dict(QUIET, checkpoint_seconds=0.0, cache_limit_gb=0.0)
TENSORS = ("thresholds", "intersection", "truth", "top_indices", "top_values", "top_maps")


class NeverRun(TinyNet):
    """TinyNet's weights, but running it fails the test: proves a layer was reused."""

    def forward(self, x):
        raise AssertionError("the model was run, but the layer should have been reused")


class CountingNet(TinyNet):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_broden(tmp_path_factory.mktemp("reuse") / "broden", images=16, seed=3)


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    """The first run, with the default settings, into a folder that tests copy as their OUT."""
    folder = tmp_path_factory.mktemp("base") / "out"
    return netdissect.dissect(TinyNet(), data, ["conv2"], out=folder, **QUIET), folder


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory) -> Path:
    """A folder holding the saved state of an interrupted run; tests copy it as their OUT."""
    folder = tmp_path_factory.mktemp("interrupted") / "out"
    interrupt(data, folder)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(folder, out)
    return out


def tensors(result) -> list[torch.Tensor]:
    return [getattr(result, name) for name in TENSORS] + [result.activation["original"],
                                                          result.activation["lite"]]


def same_numbers(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b)))


def layer_files(out: Path, layer: str = "conv2") -> dict[str, bytes]:
    return {name: (out / layer / name).read_bytes() for name in ("tally.csv", "units.json")}


@contextlib.contextmanager
def no_recompute():
    """A block in which a RecomputeWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecomputeWarning)
        yield


# -- reuse ------------------------------------------------------------------------------------
MEAN_STD = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
REUSE_CHANGES = [
    # id, options of the second run, its model seed, the change as the warning names it,
    # whether the numbers change
    ("quantile", dict(quantile=0.05), 0, "quantile", True),
    ("categories", dict(categories=["object", "color"]), 0, "categories", True),
    ("mean-std", MEAN_STD, 0, "the input mean, the input std", True),
    ("input-size", dict(input_size=48), 0, "the input size", True),
    ("weights", {}, 1, "the model's weights", True),
    ("top-k", dict(top_k=3), 0, "top_k", True),
    ("skip-bad", dict(skip_bad=True), 0, "skip_bad", False),  # no bad image: same numbers
]


@pytest.mark.filterwarnings("ignore::netdissect.engine.run.ResizeWarning")
@pytest.mark.parametrize("change, seed, named, changes_numbers",
                         [c[1:] for c in REUSE_CHANGES], ids=[c[0] for c in REUSE_CHANGES])
def test_a_changed_setting_recomputes_the_layer_as_a_fresh_run(data, base, tmp_path, change, seed,
                                                               named, changes_numbers):
    first, out, fresh_out = base[0], copy_of(base[1], tmp_path), tmp_path / "fresh"
    first_files = layer_files(out)
    with pytest.warns(RecomputeWarning, match=rf": (.*, )?{re.escape(named)}(, .*)? changed since it "
                                              r"was dissected; layer 'conv2' is dissected again"):
        second = netdissect.dissect(TinyNet(seed=seed), data, ["conv2"], out=out, **QUIET, **change)
    fresh = netdissect.dissect(TinyNet(seed=seed), data, ["conv2"], out=fresh_out, **QUIET, **change)
    assert same_numbers(second["conv2"], fresh["conv2"])
    assert layer_files(out) == layer_files(fresh_out)
    assert same_numbers(second["conv2"], first["conv2"]) is not changes_numbers
    if changes_numbers and "top_k" not in change:  # tally.csv holds no top images
        assert layer_files(out)["tally.csv"] != first_files["tally.csv"]
    # the recomputed layer records the new setting: the same run again reuses it
    with no_recompute():
        again = netdissect.dissect(NeverRun(seed=seed), data, ["conv2"], out=out, **QUIET, **change)
    assert same_numbers(again["conv2"], fresh["conv2"])


def test_unchanged_settings_reuse_the_layer_without_running_the_model(data, tmp_path):
    out = tmp_path / "out"
    first = netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], out=out, quantile=0.02, **QUIET)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with no_recompute():
        # runtime settings (cache, checkpoints) decide nothing: still reused
        again = netdissect.dissect(NeverRun(), data, ["conv1", "conv2"], out=out, quantile=0.02,
                                   **SAVING)
    for layer in ("conv1", "conv2"):
        assert same_numbers(again[layer], first[layer])
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_only_the_new_layer_is_dissected_when_one_is_added(data, base, tmp_path):
    out = copy_of(base[1], tmp_path)
    conv2 = layer_files(out)
    model = CountingNet()
    with no_recompute():
        both = netdissect.dissect(model, data, ["conv1", "conv2"], out=out, **QUIET)
    fresh = netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], out=tmp_path / "fresh", **QUIET)
    assert model.calls > 0  # conv1 was dissected
    assert layer_files(out) == conv2 == layer_files(tmp_path / "fresh")
    for layer in ("conv1", "conv2"):
        assert same_numbers(both[layer], fresh[layer])


def _median_score(out: Path) -> float:
    scores = sorted(u["score"] for u in json.loads((out / "conv2" / "units.json").read_text()))
    return round(scores[len(scores) // 2], 6)


@pytest.mark.parametrize("setting", ["iou_threshold", "definition"])
def test_a_new_threshold_or_definition_relabels_the_reused_layer(data, base, tmp_path, setting):
    first, out, fresh_out = base[0], copy_of(base[1], tmp_path), tmp_path / "fresh"
    first_counts, first_files = first["conv2"].counts(), layer_files(out)
    change = {"iou_threshold": _median_score(out)} if setting == "iou_threshold" else {"definition": "lite"}
    with no_recompute():
        relabelled = netdissect.dissect(NeverRun(), data, ["conv2"], out=out, **QUIET, **change)
    fresh = netdissect.dissect(TinyNet(), data, ["conv2"], out=fresh_out, **QUIET, **change)
    assert same_numbers(relabelled["conv2"], fresh["conv2"])
    assert relabelled["conv2"].counts() == fresh["conv2"].counts() != first_counts
    assert layer_files(out) == layer_files(fresh_out)
    assert layer_files(out)["units.json"] != first_files["units.json"]
    if setting == "definition":  # the activation columns are the lite ones now
        assert layer_files(out)["tally.csv"] != first_files["tally.csv"]
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["settings"][setting] == change[setting]
    assert summary["detectors"] == fresh["conv2"].counts()["detectors"]


# -- resume -----------------------------------------------------------------------------------
def interrupt(data: Path, out: Path, layers=("conv2",)) -> Path:
    """An interrupted run (in pass 2) that left its saved state in OUT."""
    with pytest.raises(RuntimeError, match="on purpose"):
        netdissect.dissect(FailingNet(fail_at=3), data, list(layers), out=out, **SAVING)
    state = out / ".netdissect-state" / "state-rank0-of-1.pt"
    assert state.is_file()
    return state


RESUME_CHANGES = [
    # id, options of the resumed run, its layers, the change as the refusal names it
    ("quantile", dict(quantile=0.05), ["conv2"], "quantile"),
    ("categories", dict(categories=["object", "color"]), ["conv2"], "categories"),
    ("mean-std", MEAN_STD, ["conv2"], "the input mean, the input std"),
    ("input-size", dict(input_size=48), ["conv2"], "the input size"),
    ("layers", {}, ["conv1", "conv2"], "the layers"),
    ("batch-size", dict(batch_size=4), ["conv2"], "batch_size"),
]


@pytest.mark.filterwarnings("ignore::netdissect.engine.run.ResizeWarning")
@pytest.mark.parametrize("change, layers, named", [c[1:] for c in RESUME_CHANGES],
                         ids=[c[0] for c in RESUME_CHANGES])
def test_a_changed_setting_refuses_the_saved_state(data, interrupted, tmp_path, change, layers,
                                                  named):
    out = copy_of(interrupted, tmp_path)
    state = out / ".netdissect-state" / "state-rank0-of-1.pt"
    saved = state.read_bytes()
    options = {**SAVING, **change}
    with pytest.raises(DissectError, match=rf"a saved state of an interrupted run exists, but (.*, )?"
                                           rf"{re.escape(named)}(, [^;]*)? changed since\b.*; "
                                           r"refusing.*--restart"):
        netdissect.dissect(TinyNet(), data, layers, out=out, **options)
    assert state.read_bytes() == saved  # refused, not touched
    assert not (out / "conv2").exists()
    restarted = netdissect.dissect(TinyNet(), data, layers, out=out, restart=True, **options)
    fresh = netdissect.dissect(TinyNet(), data, layers, **{**QUIET, **change})
    for layer in layers:
        assert same_numbers(restarted[layer], fresh[layer])
    assert not (out / ".netdissect-state").exists()


# The file fingerprint covers the label planes of every category, selected or not, so
# selecting other categories is reported as just that.
def test_a_categories_change_is_not_reported_as_changed_files_on_reuse(data, base, tmp_path):
    out = copy_of(base[1], tmp_path)
    with pytest.warns(RecomputeWarning) as caught:
        netdissect.dissect(TinyNet(), data, ["conv2"], out=out, categories=["object", "color"], **QUIET)
    assert ": categories changed since it was dissected" in str(caught[0].message)


def test_a_categories_change_is_not_reported_as_changed_files_on_resume(data, interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)
    with pytest.raises(DissectError) as refused:
        netdissect.dissect(TinyNet(), data, ["conv2"], out=out, categories=["object", "color"], **SAVING)
    assert "but categories changed since; refusing" in str(refused.value)


def test_a_changed_number_of_processes_refuses_the_saved_state(data, interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)
    state = out / ".netdissect-state" / "state-rank0-of-1.pt"
    saved = torch.load(state, map_location="cpu", weights_only=True)
    assert saved["key"]["world_size"] == 1
    saved["key"]["world_size"] = 2  # as if saved by one of two torchrun processes
    torch.save(saved, state)
    with pytest.raises(DissectError, match=r"but the number of processes changed since; "
                                           r"refusing.*--restart"):
        netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **SAVING)
    restarted = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, restart=True, **SAVING)
    fresh = netdissect.dissect(TinyNet(), data, ["conv2"], **QUIET)
    assert same_numbers(restarted["conv2"], fresh["conv2"])


def test_an_unchanged_resume_continues_and_equals_an_uninterrupted_run(data, tmp_path):
    out = tmp_path / "out"
    interrupt(data, out, layers=("conv1", "conv2"))
    model = CountingNet()
    with no_recompute():
        resumed = netdissect.dissect(model, data, ["conv1", "conv2"], out=out, **SAVING)
    # 16 images in batches of 8: pass 1 (2 forward calls) was saved; pass 2 failed on its first
    # batch, so only pass 2's two batches are run again, not the whole run (4 calls).
    assert model.calls == 2
    assert not (out / ".netdissect-state").exists()
    whole = netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], out=tmp_path / "whole", **SAVING)
    for layer in ("conv1", "conv2"):
        assert same_numbers(resumed[layer], whole[layer])
        assert layer_files(out, layer) == layer_files(tmp_path / "whole", layer)
