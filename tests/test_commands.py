"""The commands and options a user types, end to end through the CLI, checked by their values:
`demo`, `layers`, `serve`, `relabel`, `--skip-bad`, `--top-k`, `--input-size`, `--workers`,
`--version` and the exit status of Ctrl-C."""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import netdissect
from netdissect.cli import main

# A model that can be made to stop inside a chosen forward call: with FORWARD_MARKERS set, each
# forward writes FORWARD_MARKERS/forward-NNNN and forward number BLOCK_AT_FORWARD waits there
# until FORWARD_MARKERS/release exists.  A test then signals a process known to be in that call.
MODEL_SOURCE = textwrap.dedent("""
    import os, time
    import torch
    from torch import nn

    _forwards = 0

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            markers = os.environ.get("FORWARD_MARKERS")
            if markers:
                global _forwards
                _forwards += 1
                open(os.path.join(markers, f"forward-{_forwards:04d}"), "w").close()
                if _forwards == int(os.environ.get("BLOCK_AT_FORWARD", "0")):
                    while not os.path.exists(os.path.join(markers, "release")):
                        time.sleep(0.01)
            return self.conv2(self.conv1(x))

    def build():
        return Net()
""")
MODEL = "cmdmodel:build"
RESULT_FILES = {"tally.csv", "units.json", "summary.json", "stats.pt", "index.html"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cmdmodel")
    (folder / "cmdmodel.py").write_text(MODEL_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield folder


def dissect_args(data, out, *extra, layers="conv1,conv2"):
    return ["dissect", "--dataset", str(data), "--model", MODEL, "--layers", layers,
            "--quantile", "0.02", "--batch-size", "4", "--workers", "0", "--quiet",
            "--out", str(out), *extra]


def default_sigint() -> None:
    """In a child before exec: SIGINT back to its default, so the child's Python turns it into
    KeyboardInterrupt even when this test runs in the background of a shell (which starts
    background jobs with SIGINT ignored, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def subprocess_env(model_dir, **extra):
    return {**os.environ, "PYTHONPATH": str(model_dir) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def dissected(model_dir, broden_dir, tmp_path_factory):
    """One dissection with the report, defaults otherwise (top-k 10, workers 0); read-only."""
    out = tmp_path_factory.mktemp("dissected") / "out"
    assert main(dissect_args(broden_dir, out)) == 0
    return out


def read_json(path: Path):
    return json.loads(path.read_text())


# -- --version and layers ------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"netdissect {netdissect.__version__}\n"


def layer_lines(printed: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in printed.splitlines()[1:]}


def test_layers_lists_shapes_and_all(capsys):
    assert main(["layers", "demo_cnn"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == ("demo_cnn: 224x224 input; default layers: "
                                       "conv1, conv2, conv3, conv4, conv5")
    rows = layer_lines(printed)
    expected = {"conv1": "1x32x112x112", "conv2": "1x64x56x56", "conv3": "1x128x28x28",
                "conv4": "1x128x14x14", "conv5": "1x256x14x14"}
    for name, shape in expected.items():
        assert rows[name][:3] == ["Sequential", shape, "yes"], rows[name]
    assert all(r[-1] != "no" for r in rows.values())

    assert main(["layers", "demo_cnn", "--all"]) == 0
    every = layer_lines(capsys.readouterr().out)
    extra = set(every) - set(rows)
    assert extra and set(rows) < set(every)
    assert all(every[name][-1] == "no" for name in extra)  # only the undissectable are added

    assert main(["layers", "demo_cnn", "--input-size", "112"]) == 0
    half = layer_lines(capsys.readouterr().out)
    assert half["conv1"][1] == "1x32x56x56" and half["conv5"][1] == "1x256x7x7"


# -- demo ----------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_demo_table_matches_saved_counts(tmp_path, monkeypatch, capsys):
    # The real demo (demo CNN and EfficientNet-Lite0 at 224, 9 layers, a report of ~1200 units):
    # about 70 s on 2 cores for 40 images, most of it the report's strips.
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--images", "40", "--dataset", "world", "--out", "out", "--workers", "0",
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "layer", "units", "detectors", "unique", "unique", "per",
                                "category"]
    rows = [line.split() for line in lines[1:] if not line.startswith(("results:", "report:"))]
    assert {r[0] for r in rows} == {"demo_cnn", "efficientnet_lite0"}
    assert [r[1] for r in rows if r[0] == "demo_cnn"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for model, layer, units, detectors, unique, *per_category in rows:
        summary = read_json(tmp_path / "out" / model / layer / "summary.json")
        assert summary["dataset"]["images_processed"] == 40
        assert [int(units), int(detectors), int(unique)] == [
            summary["units"], summary["detectors"], summary["unique_detectors_total"]]
        assert dict(c.split(":") for c in per_category) == {
            k: str(v) for k, v in summary["unique_detectors"].items()}
        records = read_json(tmp_path / "out" / model / layer / "units.json")
        assert sum(r["detector"] for r in records) == int(detectors)
    assert lines[-2] == f"results: {(tmp_path / 'out').resolve()}"
    assert lines[-1] == f"report:  {(tmp_path / 'out' / 'index.html').resolve()}"
    assert (tmp_path / "out" / "index.html").is_file()


# -- serve ---------------------------------------------------------------------------------------

def read_line(stream, process, timeout: float) -> str:
    """The first line of a child's stdout, or an error naming what the child said."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout} s")
    line = stream.readline()
    if not line:
        raise AssertionError(f"exited {process.wait(10)}: {process.stderr.read()}")
    return line


@pytest.mark.timeout(60)
def test_serve_answers_on_localhost(dissected, model_dir):
    process = subprocess.Popen([sys.executable, "-m", "netdissect", "serve", str(dissected),
                                "--port", "0"], env=subprocess_env(model_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        first = read_line(process.stdout, process, 30)
        match = re.fullmatch(r"serving (.+) on http://127\.0\.0\.1:(\d+)/ \(Ctrl-C stops\)\n", first)
        assert match and Path(match[1]) == dissected.resolve(), first
        base = f"http://127.0.0.1:{match[2]}/"
        for page in ("index.html", "conv2/index.html", "conv2/tally.csv"):
            with urllib.request.urlopen(base + page, timeout=10) as response:
                assert response.status == 200
                assert response.read() == (dissected / page).read_bytes()
        # The server answered, so it is inside serve_forever: Ctrl-C ends it cleanly.
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        process.kill()
        process.communicate()


# -- relabel -------------------------------------------------------------------------------------

def headline(page: Path) -> str:
    match = re.search(r'<p class="headline" id="headline">(.*?)</p>', page.read_text())
    return html.unescape(match[1])


def expected_headline(records: list[dict], threshold: float) -> str:
    """From units.json's per-category IoUs (original definition): detector if its best IoU
    reaches the threshold; concepts: distinct labels of the detectors."""
    best = [max(r["categories"].values(), key=lambda c: c["iou"]) for r in records]
    detectors = [b for b in best if b["iou"] >= threshold]
    return (f"{len(detectors)} of {len(records)} units are detectors, covering "
            f"{len({b['label'] for b in detectors})} concepts (IoU >= {threshold:g})")


def test_relabel_refreshes_report(dissected, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(dissected, out)
    records = read_json(out / "conv2" / "units.json")
    before = headline(out / "conv2" / "index.html")
    assert before == expected_headline(records, 0.04)
    # A threshold between the scores, so that some units stop being detectors.
    scores = sorted(max(c["iou"] for c in r["categories"].values()) for r in records)
    threshold = float(f"{scores[len(scores) // 2]:.4g}")
    assert main(["relabel", str(out), "--iou-threshold", str(threshold)]) == 0
    after = headline(out / "conv2" / "index.html")
    assert after == expected_headline(records, threshold) and after != before
    summary = read_json(out / "conv2" / "summary.json")
    assert summary["iou_threshold"] == threshold
    assert after.startswith(f"{summary['detectors']} of 16 units")
    assert [r["detector"] for r in read_json(out / "conv2" / "units.json")] == [
        max(c["iou"] for c in r["categories"].values()) >= threshold for r in records]
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[1:4] for row in table if row[:2] == ["cmdmodel:build", "conv2"]] == [
        ["conv2", "16", str(summary["detectors"])]]


# -- dissect options -----------------------------------------------------------------------------

def without_indices(records: list[dict]) -> list[dict]:
    """units.json with the dataset row numbers of the top images left out."""
    return [{**r, "top_images": [{k: v for k, v in t.items() if k != "index"} for t in r["top_images"]]}
            for r in records]


def test_skip_bad_equals_run_without_the_image(model_dir, make_dataset, tmp_path, capsys):
    data = make_dataset(tmp_path / "bad", images=20)
    index = (data / "index.csv").read_text().splitlines()
    bad = index[8].split(",")[0]  # row 7, in the middle of the second batch
    (data / "images" / bad).write_bytes(b"not an image")
    clean = tmp_path / "clean"
    shutil.copytree(data, clean)
    (clean / "index.csv").write_text("\n".join(index[:8] + index[9:]) + "\n")

    assert main(dissect_args(data, tmp_path / "stop", "--no-report")) == 2
    assert bad in capsys.readouterr().err
    assert main(dissect_args(data, tmp_path / "skipped", "--no-report", "--skip-bad")) == 0
    assert main(dissect_args(clean, tmp_path / "reference", "--no-report")) == 0
    for layer in ("conv1", "conv2"):
        skipped, reference = tmp_path / "skipped" / layer, tmp_path / "reference" / layer
        dataset = read_json(skipped / "summary.json")["dataset"]
        assert dataset["images_skipped"] == 1 and dataset["images_processed"] == 19
        assert len(dataset["skipped"]) == 1 and bad in str(dataset["skipped"][0])
        assert (skipped / "tally.csv").read_bytes() == (reference / "tally.csv").read_bytes()
        assert without_indices(read_json(skipped / "units.json")) == \
            without_indices(read_json(reference / "units.json"))


def test_top_k_keeps_the_first_k(dissected, broden_dir, tmp_path):
    assert main(dissect_args(broden_dir, tmp_path / "out", "--top-k", "3", "--no-report",
                             layers="conv2")) == 0
    three = read_json(tmp_path / "out" / "conv2" / "units.json")
    ten = read_json(dissected / "conv2" / "units.json")
    assert len(three) == 16
    for short, full in zip(three, ten):
        assert len(short["top_images"]) == 3 and len(full["top_images"]) == 10
        assert short["top_images"] == full["top_images"][:3]
        activations = [t["activation"] for t in short["top_images"]]
        assert activations == sorted(activations, reverse=True)
    assert read_json(tmp_path / "out" / "conv2" / "summary.json")["settings"]["top_k"] == 3


def test_input_size_scales_the_layer_shape(dissected, broden_dir, tmp_path):
    assert read_json(dissected / "conv1" / "summary.json")["shape"] == [8, 16, 16]  # 32 px images
    assert read_json(dissected / "conv2" / "summary.json")["shape"] == [16, 8, 8]
    assert main(dissect_args(broden_dir, tmp_path / "out", "--input-size", "64", "--no-report")) == 0
    assert read_json(tmp_path / "out" / "conv1" / "summary.json")["shape"] == [8, 32, 32]
    assert read_json(tmp_path / "out" / "conv2" / "summary.json")["shape"] == [16, 16, 16]


@pytest.mark.timeout(120)
def test_workers_give_identical_results(dissected, broden_dir, tmp_path, monkeypatch):
    import torch.utils.data

    workers = []

    class Recording(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            workers.append(kwargs.get("num_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    # dissect_args says --workers 0; the later --workers 2 wins.
    assert main(dissect_args(broden_dir, tmp_path / "out", "--no-report", "--workers", "2")) == 0
    assert workers and set(workers) == {2}  # both passes loaded with 2 worker processes
    for layer in ("conv1", "conv2"):
        for name in ("tally.csv", "units.json"):
            assert (tmp_path / "out" / layer / name).read_bytes() == (dissected / layer / name).read_bytes()


# -- Ctrl-C --------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_ctrl_c_exits_130_without_results(model_dir, broden_dir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    env = subprocess_env(model_dir, FORWARD_MARKERS=str(markers), BLOCK_AT_FORWARD="2")
    process = subprocess.Popen([sys.executable, "-m", "netdissect", *dissect_args(broden_dir, out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        # The second forward call of pass 1 waits for a file that never comes: the run is in
        # pass 1 for as long as the test needs.
        while not (markers / "forward-0002").exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "netdissect dissect: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in markers.iterdir()) == ["forward-0001", "forward-0002"]
    written = {p.name for p in out.rglob("*") if p.is_file()} if out.exists() else set()
    assert not written & RESULT_FILES, written
