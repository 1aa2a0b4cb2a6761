"""The engine against the brute-force reference (tests/reference.py) on broader data than the
square, one-size, all-categories dataset of conftest: non-square images and label maps, images
of several sizes, a subset of categories, labels that are both image-level and per-pixel in
one image; and torchrun on uneven shards, interrupted and resumed (issue 16, item 5)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import netdissect
from netdissect.engine.run import ResizeWarning
from conftest import TinyNet
from reference import reference_dissect, reference_iou

# -- a Broden-format generator of its own ----------------------------------------------------

# number -> (name, {category: coverage}). Several labels belong to more than one category, so
# that a subset of categories moves them (docs/method.md section 2, "primary category"):
#   9 rim:    part 3 > object 1           -> part; without part: object
#   10 fabric: material 2 > object 1      -> material; without material: object
#   11 metal: material 1 = object 1 (tie) -> material (later in category.csv); without: object
#   16 wood:  color 2 > material 1        -> color; without color: material
#   17 glass: object 1 = part 1 = material 1 -> material; without it: part; object alone: object
LABELS = {
    1: ("red-c", {"color": 5.0}), 2: ("green-c", {"color": 4.0}), 3: ("blue-c", {"color": 3.0}),
    4: ("box", {"object": 6.0}), 5: ("ball", {"object": 5.0}), 6: ("stick", {"object": 2.0}),
    7: ("lid", {"part": 1.0}), 8: ("handle", {"part": 1.0}), 9: ("rim", {"part": 3.0, "object": 1.0}),
    10: ("fabric", {"material": 2.0, "object": 1.0}),
    11: ("metal", {"material": 1.0, "object": 1.0}),
    12: ("beach-s", {"scene": 3.0}), 13: ("room-s", {"scene": 2.0}),
    14: ("striped", {"texture": 1.0}), 15: ("dotted", {"texture": 1.0}),
    16: ("wood", {"color": 2.0, "material": 1.0}),
    17: ("glass", {"object": 1.0, "part": 1.0, "material": 1.0}),
}
CATEGORIES = ["object", "part", "scene", "material", "texture", "color"]  # category.csv order
INDEX_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw", "color", "texture", "material", "scene",
                 "part", "object"]  # another order on purpose


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _save_plane(path: Path, plane: np.ndarray) -> None:
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = plane % 256
    rgb[..., 1] = plane // 256
    Image.fromarray(rgb).save(path)


def make_dataset(root: Path, images: int, sizes: list[tuple[int, int]], label_size: tuple[int, int],
                 seed: int = 0) -> Path:
    """A Broden-format dataset: image i has size sizes[i % len(sizes)] (H, W), every label map
    `label_size` (H, W). Color, object, part (one or two planes) and material are pixel
    categories; scene and texture are image-level, and texture sometimes also has a plane in
    which its image-level label appears again (a label both image-level and per-pixel). The
    object plane sometimes holds the image's own scene label too."""
    rng = np.random.default_rng(seed)
    sh, sw = label_size
    (root / "images" / "gen").mkdir(parents=True, exist_ok=True)
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               [[n, name, ";".join(f"{c}(1)" for c in cats), 1, sum(cats.values()), ""]
                for n, (name, cats) in LABELS.items()])
    for cat in CATEGORIES:
        members = [(n, name, cats[cat]) for n, (name, cats) in LABELS.items() if cat in cats]
        _write_csv(root / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"],
                   [[i + 1, n, name, 1, cov] for i, (n, name, cov) in enumerate(members)])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
               [[cat, 1, 1, 1, 1] for cat in CATEGORIES])
    rows = []
    for i in range(images):
        name = f"gen/{i:04d}"
        h, w = sizes[i % len(sizes)]
        # Smooth-ish random images, so conv units have structure.
        small = rng.integers(0, 256, size=(max(h // 4, 2), max(w // 4, 2), 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(root / "images" / f"{name}.png")
        cells = {c: [] for c in INDEX_COLUMNS[6:]}

        def plane(tag: str, values: list[int], p_empty: float = 0.2) -> str:
            # 2x2 blocks on a non-square grid: a transposed plane would not even fit.
            p = [(1 - p_empty) / len(values)] * len(values) + [p_empty]
            blocks = rng.choice(values + [0], size=(sh // 2, sw // 2), p=p)
            arr = np.kron(blocks, np.ones((2, 2), dtype=np.int64))
            fname = f"{name}_{tag}.png"
            _save_plane(root / "images" / fname, arr)
            return fname

        cells["color"].append(plane("color", [1, 2, 3, 16], 0.0))
        if i % 4 == 3:
            textures = [14] if rng.random() < 0.6 else [14, 15]
            cells["texture"] += [str(t) for t in textures]
            if rng.random() < 0.7:
                # The same label image-level and in a plane (docs/method.md section 6).
                cells["texture"].append(plane("texture", [14, 15], 0.3))
        else:
            scene = int(rng.choice([12, 13]))
            cells["scene"].append(str(scene))
            objects = [4, 5, 6, 9, 10, 11, 17]
            if i % 3 == 0:
                objects.append(scene)  # image-level and per-pixel, in another category's plane
            cells["object"].append(plane("object", objects))
            cells["part"].append(plane("part", [7, 8, 9, 17]))
            if rng.random() < 0.5:
                cells["part"].append(plane("part2", [7, 8]))
            if rng.random() < 0.7:
                cells["material"].append(plane("material", [10, 11, 16, 17], 0.5))
        rows.append([f"{name}.png", "train", h, w, sh, sw]
                    + [";".join(cells[c]) for c in INDEX_COLUMNS[6:]])
    _write_csv(root / "index.csv", INDEX_COLUMNS, rows)
    return root


def assert_equals_reference(result, ref: dict) -> None:
    """Every count of the engine's layer result equal to the reference's (as test_engine)."""
    np.testing.assert_allclose(result.thresholds.numpy(), ref["thresholds"], rtol=1e-6, atol=0)
    L = ref["I"].shape[1]
    truth, inter = result.truth.numpy(), result.intersection.numpy()
    assert np.array_equal(truth[:L], ref["G"])
    assert np.array_equal(inter[:, :L], ref["I"])
    assert not truth[L:].any() and not inter[:, L:].any()
    assert inter.sum() > 0
    for definition in ("original", "lite"):
        assert np.array_equal(result.activation[definition].numpy(), ref["A"][definition]), definition
        np.testing.assert_allclose(result.iou(definition).numpy()[:, :L], reference_iou(ref, definition),
                                   rtol=1e-12, atol=0)
    # The scored labels and their primary categories, label by label.
    assert result.labels.categories == ref["categories"]
    engine_primary = {n: result.labels.categories[c] for n, c in enumerate(result.labels.category)
                      if c >= 0}
    assert engine_primary == ref["primary"]


def dissect(root, layers, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ResizeWarning where images are resized on purpose
        return netdissect.dissect(TinyNet(seed=1), root, layers, batch_size=8, workers=0,
                                  progress=False, **kw)


# -- (a) non-square images and label maps ----------------------------------------------------

@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """24x40 images (H x W) with 12x20 label maps."""
    return make_dataset(tmp_path_factory.mktemp("wide") / "broden", 36, [(24, 40)], (12, 20), seed=5)


@pytest.mark.parametrize("cache", ["always", "never"])
def test_non_square_images_and_label_maps(wide, cache):
    result = dissect(wide, ["conv1", "conv2"], quantile=0.05, cache=cache)
    for layer in ("conv1", "conv2"):
        r = result[layer]
        assert tuple(r.top_maps.shape[-2:]) == {"conv1": (12, 20), "conv2": (6, 10)}[layer]
        ref = reference_dissect(wide, TinyNet(seed=1), layer, q=0.05)
        assert_equals_reference(r, ref)
    # Both definitions differ on this data, and labels both image-level and per-pixel occur.
    assert not np.array_equal(ref["A"]["original"], ref["A"]["lite"])
    assert "14;" in (wide / "index.csv").read_text() and "_texture.png" in (wide / "index.csv").read_text()


# -- (b) images of several sizes in one dataset -----------------------------------------------

@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    sizes = [(24, 40), (32, 32), (30, 50), (16, 20), (40, 24)]
    return make_dataset(tmp_path_factory.mktemp("mixed") / "broden", 30, sizes, (12, 20), seed=6)


def test_images_of_several_sizes_are_resized_for_the_model(mixed):
    with pytest.warns(ResizeWarning, match="resized bilinearly"):
        result = netdissect.dissect(TinyNet(seed=1), mixed, ["conv1", "conv2"], quantile=0.1,
                                    batch_size=8, workers=0, progress=False, input_size=(24, 40))
    for layer in ("conv1", "conv2"):
        ref = reference_dissect(mixed, TinyNet(seed=1), layer, q=0.1, input_size=(24, 40))
        assert_equals_reference(result[layer], ref)
    # Without resizing (each image at its own size) the reference would differ: the resize matters.
    unresized = reference_dissect(mixed, TinyNet(seed=1), "conv2", q=0.1, input_size=(32, 32))
    assert not np.array_equal(unresized["I"], ref["I"])


def test_input_size_defaults_to_the_first_images_size(mixed):
    # The first row is 24x40; another input size (here the second row's 32x32) also works.
    default = dissect(mixed, ["conv2"], quantile=0.1)["conv2"]
    assert_equals_reference(default, reference_dissect(mixed, TinyNet(seed=1), "conv2", q=0.1))
    square = dissect(mixed, ["conv2"], quantile=0.1, input_size=32)["conv2"]
    assert tuple(square.top_maps.shape[-2:]) == (8, 8)
    assert_equals_reference(square, reference_dissect(mixed, TinyNet(seed=1), "conv2", q=0.1,
                                                      input_size=(32, 32)))


# -- (c) a subset of categories ----------------------------------------------------------------

@pytest.mark.parametrize("categories, moved", [
    (["object", "material"], {9: "object", 10: "material", 11: "material", 16: "material", 17: "material"}),
    (["material", "object"], {9: "object", 10: "material", 11: "material", 16: "material", 17: "material"}),
    (["object", "part"], {9: "part", 10: "object", 11: "object", 17: "part"}),
    (["object"], {9: "object", 10: "object", 11: "object", 17: "object"}),
    (["color", "texture", "scene"], {16: "color"}),
], ids=["object+material", "material+object", "object+part", "object", "color+texture+scene"])
def test_subset_of_categories(wide, categories, moved):
    result = dissect(wide, ["conv2"], quantile=0.05, categories=categories)["conv2"]
    ref = reference_dissect(wide, TinyNet(seed=1), "conv2", q=0.05, categories=categories)
    assert ref["categories"] == [c for c in CATEGORIES if c in categories]  # category.csv order
    for n, cat in moved.items():
        assert ref["primary"][n] == cat, (n, ref["primary"])  # the generator's intent, in the oracle
    assert_equals_reference(result, ref)
    # Labels of no selected category count nothing (their pixels are cleared).
    unscored = [n for n in LABELS if n not in ref["primary"]]
    assert unscored and not result.truth.numpy()[unscored].any()
    assert ref["G"][list(moved)].all()


# -- (d) a label both image-level and per-pixel in one image ---------------------------------

def test_label_both_image_level_and_per_pixel_counts_once(tmp_path):
    """Hand-made: one 8x8 image whose texture cell is `14;plane` with 14 in half the plane and
    15 in a quarter; scene 12 image-level and 12 again in part of the object plane."""
    root = make_dataset(tmp_path / "broden", 4, [(16, 16)], (8, 8), seed=7)
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    tex = np.zeros((8, 8), np.int64)
    tex[:4] = 14
    tex[4:6, :4] = 15
    _save_plane(root / "images" / "gen" / "both_texture.png", tex)
    obj = np.zeros((8, 8), np.int64)
    obj[:, :3] = 12
    obj[:, 3:5] = 4
    _save_plane(root / "images" / "gen" / "both_object.png", obj)
    for row in rows[1:]:
        cells = dict(zip(header, row))
        for cat in CATEGORIES:
            cells[cat] = ""
        cells["texture"] = "14;gen/both_texture.png"
        cells["scene"] = "12;12"  # listed twice: counts once
        cells["object"] = "gen/both_object.png"
        row[:] = [cells[c] for c in header]
    _write_csv(root / "index.csv", header, rows[1:])
    result = dissect(root, ["conv1"], quantile=0.05)["conv1"]
    ref = reference_dissect(root, TinyNet(seed=1), "conv1", q=0.05)
    assert_equals_reference(result, ref)
    # Each image adds sh*sw = 64 for an image-level label, whatever its planes say.
    G = result.truth.numpy()
    assert G[14] == 4 * 64 and G[12] == 4 * 64  # not 64 + 32 (pixels) nor 2 * 64 (listed twice)
    assert G[15] == 4 * 8 and G[4] == 4 * 16
    # Texture is present in every image, so I[:, 14] is every masked pixel of the dataset.
    on = ref["A"]["original"][:, CATEGORIES.index("texture")]
    assert np.array_equal(result.intersection.numpy()[:, 14], on) and on.sum() > 0


# -- (e), (f) torchrun: uneven shards, interrupted and resumed --------------------------------
# Helpers copied from test_resume_distributed.py (not imported: no test module depends on
# another's import), with markers per rank.

MODEL_SOURCE = textwrap.dedent("""
    import os, signal, time
    import torch
    from torch import nn

    _forwards = 0

    def _note_sigterm(markers, rank):
        # Chain netdissect's SIGTERM handler with one that leaves a marker, so that the test
        # knows the signal has arrived (no timing window).
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            if callable(previous):
                previous(signum, frame)
            open(os.path.join(markers, f"sigterm-r{rank}"), "w").close()
        signal.signal(signal.SIGTERM, handler)

    class Net(nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            # FORWARD_MARKERS: each call writes FORWARD_MARKERS/forward-r<rank>-NNNN; call number
            # BLOCK_AT_FORWARD_R<rank> waits there until FORWARD_MARKERS/release exists.
            markers = os.environ.get("FORWARD_MARKERS")
            if markers:
                global _forwards
                _forwards += 1
                rank = os.environ.get("RANK", "0")
                if _forwards == int(os.environ.get(f"BLOCK_AT_FORWARD_R{rank}", "0")):
                    _note_sigterm(markers, rank)
                    open(os.path.join(markers, f"blocked-r{rank}"), "w").close()
                    while not os.path.exists(os.path.join(markers, "release")):
                        time.sleep(0.01)
                open(os.path.join(markers, f"forward-r{rank}-{_forwards:04d}"), "w").close()
            return self.conv2(self.conv1(x))

    def build():
        return Net(0)
""")

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
IMAGES = 25  # shards of 12 and 13 images: 3 and 4 batches of 4, the last one of a single image
STATE_DIR = ".netdissect-state"


def command(data, out, *extra):
    return ["-m", "netdissect", "dissect", "--dataset", str(data), "--model", "resumemodel:build",
            "--layers", "conv1,conv2", "--quantile", "0.05", "--batch-size", "4", "--workers", "0",
            "--no-report", "--quiet", "--out", str(out), *extra]


def run(args, env):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


def assert_identical(a, b, layers=("conv1", "conv2")):
    for layer in layers:
        assert (a / layer / "tally.csv").read_bytes() == (b / layer / "tally.csv").read_bytes()
        assert (a / layer / "units.json").read_bytes() == (b / layer / "units.json").read_bytes()
        sa = torch.load(a / layer / "stats.pt", weights_only=True)
        sb = torch.load(b / layer / "stats.pt", weights_only=True)
        assert sa.keys() == sb.keys()
        for key, value in sa.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, sb[key]), (layer, key)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A 25-image non-square dataset, a model module, and its 1-process dissection."""
    folder = tmp_path_factory.mktemp("uneven")
    data = make_dataset(folder / "broden", IMAGES, [(24, 40)], (12, 20), seed=8)
    (folder / "resumemodel.py").write_text(MODEL_SOURCE)
    env = {**os.environ, "PYTHONPATH": str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    env.pop("FORWARD_MARKERS", None)
    # The 1-process run in this process (a subprocess would cost another torch import): the
    # same model source and the settings of `command`.
    namespace: dict = {}
    exec(compile(MODEL_SOURCE, str(folder / "resumemodel.py"), "exec"), namespace)
    netdissect.dissect(namespace["build"](), data, ["conv1", "conv2"], out=folder / "single",
                       report=False, progress=False, quantile=0.05, batch_size=4, workers=0)
    return data, env, folder / "single"


@pytest.mark.timeout(120)
def test_torchrun_uneven_shards_bit_identical(uneven, tmp_path):
    data, env, single = uneven
    out = tmp_path / "out"
    done = run([*TORCHRUN, *command(data, out)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_identical(single, out)
    import json
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["dataset"]["images_processed"] == IMAGES


def wait_for(paths, process, timeout=90):
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert process.poll() is None, f"the run ended first: {process.communicate()}"
        assert time.monotonic() < deadline, f"not there after {timeout} s: {paths}"
        time.sleep(0.02)


# With --cache never and batches of 4, rank 0 (12 images) runs forward calls 1-3 in pass 1 and
# 4-6 in pass 2; rank 1 (13 images) calls 1-4 and 5-8. Blocking both at call 2 stops both in
# pass 1 after batch 2, so the resume restores each rank's partial pass 1 and then merges them.
# (The same test blocking at calls 5 and 6, i.e. in pass 2, also passes; it is left out because
# every torchrun run costs three torch imports, about 12 s on 2 cores.)
@pytest.mark.timeout(120)
def test_torchrun_interrupted_and_resumed_bit_identical(uneven, tmp_path):
    phase, block = 1, (2, 2)
    data, env, single = uneven
    out, markers = tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    blocked = {**env, "FORWARD_MARKERS": str(markers), "BLOCK_AT_FORWARD_R0": str(block[0]),
               "BLOCK_AT_FORWARD_R1": str(block[1])}
    args = [*TORCHRUN, *command(data, out, "--checkpoint-seconds", "0", "--cache", "never")]
    states = [out / STATE_DIR / f"state-rank{r}-of-2.pt" for r in (0, 1)]
    process = subprocess.Popen([sys.executable, *args], env=blocked, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # Both ranks wait inside their forward call, each with a state saved after batch 1.
        wait_for([markers / "blocked-r0", markers / "blocked-r1", *states], process)
        process.send_signal(signal.SIGTERM)  # the launcher passes it on to both workers
        wait_for([markers / "sigterm-r0", markers / "sigterm-r1"], process)
        (markers / "release").touch()  # each rank finishes its batch, saves and stops
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert "run the same command again to resume" in err, err[-3000:]
    for rank, path in enumerate(states):
        state = torch.load(path, weights_only=True)
        assert state["phase"] == phase and state["done"] == 2, (rank, state["phase"], state["done"])
    assert not (out / "conv1" / "tally.csv").exists()
    assert not (markers / f"forward-r1-{block[1] + 1:04d}").exists()  # stopped after that batch
    done = run(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / STATE_DIR).exists()
    assert_identical(single, out)
