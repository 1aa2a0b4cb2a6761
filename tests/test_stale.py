"""No stale or mixed results: a dataset whose files change under the same names is noticed.

The scenario of issue 16: dissect into OUT, replace the images (same file names, nothing in
the CSV files changes), run the same command again.  The finished layer must be dissected
again (not reused), and a saved state of an interrupted run must be refused, naming what
changed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import netdissect
from conftest import FailingNet, TinyNet, make_broden, save_plane
from netdissect.engine.checkpoint import RecomputeWarning
from netdissect.errors import DissectError

QUIET = dict(workers=0, progress=False, report=False, batch_size=8)


@pytest.fixture()
def data(tmp_path) -> Path:
    return make_broden(tmp_path / "broden", images=24, seed=5)


def replace_images(root: Path, rows: range) -> None:
    """Other pictures under the same names (a re-export): only the image files change."""
    rng = np.random.default_rng(99)
    for i in rows:
        path = root / "images" / "gen" / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def tallies(result) -> tuple:
    r = result["conv2"]
    return r.thresholds, r.intersection, r.activation["original"], r.truth


def test_replaced_images_are_dissected_again_not_reused(data, tmp_path):
    out = tmp_path / "out"
    first = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **QUIET)
    again = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **QUIET)  # unchanged: reused
    assert again["conv2"].meta["timings"] == first["conv2"].meta["timings"]
    replace_images(data, range(0, 24, 3))
    with pytest.warns(RecomputeWarning, match="image or label files.*dissected again"):
        second = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **QUIET)
    fresh = netdissect.dissect(TinyNet(), data, ["conv2"], out=tmp_path / "fresh", **QUIET)
    assert not torch.equal(tallies(second)[0], tallies(first)[0])
    for a, b in zip(tallies(second), tallies(fresh)):
        assert torch.equal(a, b)
    assert (out / "conv2" / "tally.csv").read_bytes() == (tmp_path / "fresh" / "conv2" / "tally.csv").read_bytes()


def test_a_changed_label_plane_is_noticed_too(data, tmp_path):
    out = tmp_path / "out"
    netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **QUIET)
    plane = data / "images" / "gen" / "0000_color.png"
    save_plane(plane, np.full((16, 16), 3, dtype=np.int64))  # every pixel blue-c now
    with pytest.warns(RecomputeWarning, match="image or label files"):
        changed = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **QUIET)
    fresh = netdissect.dissect(TinyNet(), data, ["conv2"], out=tmp_path / "fresh", **QUIET)
    assert torch.equal(changed["conv2"].truth, fresh["conv2"].truth)


def test_a_saved_state_is_refused_when_files_changed_and_names_them(data, tmp_path):
    out = tmp_path / "out"
    options = dict(QUIET, checkpoint_seconds=0.0, cache_limit_gb=0.0)
    with pytest.raises(RuntimeError, match="on purpose"):
        netdissect.dissect(FailingNet(fail_at=3), data, ["conv2"], out=out, **options)
    assert list((out / ".netdissect-state").glob("state-*.pt"))
    replace_images(data, [4, 7])
    with pytest.raises(DissectError, match=r"image or label files changed since \(2 image or label "
                                           r"file\(s\) changed since the saved state, e\.g\. "
                                           r"images/gen/0004\.jpg\).*--restart"):
        netdissect.dissect(TinyNet(), data, ["conv2"], out=out, **options)
    # --restart discards the state: the numbers are those of a fresh run on the new files
    restarted = netdissect.dissect(TinyNet(), data, ["conv2"], out=out, restart=True, **options)
    fresh = netdissect.dissect(TinyNet(), data, ["conv2"], **QUIET)
    for a, b in zip(tallies(restarted), tallies(fresh)):
        assert torch.equal(a, b)


def test_the_fingerprint_reads_no_file_content(data):
    broden = netdissect.load_broden(data)
    before = broden.files_fingerprint
    assert len(broden.files) == len(broden.file_stats) and (broden.file_stats[:, 0] > 0).all()
    path = data / "images" / broden.files[1]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched only
    assert netdissect.load_broden(data).files_fingerprint != before
    assert netdissect.load_broden(data).changed_files(broden.file_stats) == [broden.files[1]]


def test_a_single_channel_label_plane_is_named_as_such(data, tmp_path):
    plane = data / "images" / "gen" / "0002_color.png"
    Image.fromarray(np.full((16, 16), 2, dtype=np.uint8), mode="L").save(plane)
    with pytest.raises(netdissect.BrodenError, match=r"0002_color\.png: a single-channel PNG "
                                                     r"\(mode L\).*R \+ 256\*G"):
        netdissect.dissect(TinyNet(), data, ["conv2"], **QUIET)
    skipped = netdissect.dissect(TinyNet(), data, ["conv2"], skip_bad=True, **QUIET)
    assert skipped["conv2"].meta["dataset"]["images_skipped"] == 1
    assert "single-channel" in skipped["conv2"].meta["dataset"]["skipped"][0]["reason"]


class CountingNet(TinyNet):
    """TinyNet counting its forward passes."""

    calls = 0

    def forward(self, x):
        CountingNet.calls += 1
        return super().forward(x)


def test_a_full_disk_leaves_the_earlier_results_and_loses_no_work(data, tmp_path, monkeypatch):
    import errno

    import netdissect.files as files
    from netdissect.errors import ResultError

    out = tmp_path / "out"
    netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], out=out, quantile=0.02, **QUIET)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    real, written = files._write_temp, []

    def disk_full_at_the_fifth_file(path, data):
        if len(written) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real(path, data)

    monkeypatch.setattr(files, "_write_temp", disk_full_at_the_fifth_file)
    with pytest.raises(ResultError, match=r"could not be written \(No space left on device\)\. The "
                                          r"files already there are unchanged.*saved state is kept"):
        netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], out=out, quantile=0.05, **QUIET)
    monkeypatch.setattr(files, "_write_temp", real)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".netdissect-state" not in p.parts}
    assert after == before  # not one file of the earlier results changed, no temporary left
    assert list((out / ".netdissect-state").glob("state-*.pt"))
    CountingNet.calls = 0
    resumed = netdissect.dissect(CountingNet(), data, ["conv1", "conv2"], out=out, quantile=0.05, **QUIET)
    assert CountingNet.calls == 0  # the passes were not redone: the saved state covered them
    assert not (out / ".netdissect-state").exists()
    fresh = netdissect.dissect(TinyNet(), data, ["conv1", "conv2"], quantile=0.05, **QUIET)
    for layer in ("conv1", "conv2"):
        assert torch.equal(resumed[layer].intersection, fresh[layer].intersection)
        assert torch.equal(resumed[layer].thresholds, fresh[layer].thresholds)
    assert (out / "conv2" / "tally.csv").read_bytes() != before[out / "conv2" / "tally.csv"]


def test_a_file_rewritten_between_the_passes_stops_the_run(data, tmp_path, monkeypatch):
    """Without the cache, pass 2 reads the images and label planes again; their content must
    be what pass 1 read (a resumed run whose dataset changed in between, even with sizes and
    times kept).  With the cache, pass 2 reads no dataset file: the result is pass 1's data."""
    from netdissect.engine import passes

    before = netdissect.dissect(TinyNet(), data, ["conv2"], **QUIET)
    plane = data / "images" / "gen" / "0005_color.png"
    stat = plane.stat()
    real = passes.Passes._tally_pass

    rewrites = []

    def rewrite_then_tally(self, *args):  # each time other content: label 1, then 2
        rewrites.append(1)
        save_plane(plane, np.full((16, 16), len(rewrites), dtype=np.int64))
        os.utime(plane, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same time: only content
        return real(self, *args)

    monkeypatch.setattr(passes.Passes, "_tally_pass", rewrite_then_tally)
    cached = netdissect.dissect(TinyNet(), data, ["conv2"], out=tmp_path / "cached", cache="always", **QUIET)
    assert cached["conv2"].meta["pass2_source"] == "cache"
    assert torch.equal(cached["conv2"].intersection, before["conv2"].intersection)
    with pytest.raises(DissectError, match=r"gen/0005\.jpg or its label planes changed since pass 1 "
                                           r"read them.*--restart"):
        netdissect.dissect(TinyNet(), data, ["conv2"], out=tmp_path / "out", cache="never", **QUIET)
