"""Shared fixtures: small generated Broden-format datasets, tiny models, a local HTTP server."""
from __future__ import annotations

import csv
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Global label numbers of the generated datasets: number -> (name, {category: coverage}).
LABELS = {
    1: ("red-c", {"color": 5.0}), 2: ("green-c", {"color": 4.0}), 3: ("blue-c", {"color": 3.0}),
    4: ("box", {"object": 6.0}), 5: ("ball", {"object": 5.0}), 6: ("stick", {"object": 2.0}),
    7: ("lid", {"part": 1.0}), 8: ("handle", {"part": 1.0}), 9: ("rim", {"part": 0.5}),
    10: ("fabric", {"material": 2.0, "object": 1.0}),  # primary: material (larger coverage)
    11: ("metal", {"material": 1.0, "object": 1.0}),  # tie: material comes later, so material
    12: ("beach-s", {"scene": 3.0}), 13: ("room-s", {"scene": 2.0}),
    14: ("striped", {"texture": 1.0}), 15: ("dotted", {"texture": 1.0}),
}
# category.csv order; index.csv deliberately uses another column order.
CATEGORIES = ["object", "part", "scene", "material", "texture", "color"]
INDEX_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw", "texture", "color", "scene", "part",
                 "material", "object"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def save_plane(path: Path, plane: np.ndarray) -> None:
    """A label plane as Broden stores it: number = R + 256*G."""
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = plane % 256
    rgb[..., 1] = plane // 256
    Image.fromarray(rgb).save(path)


def write_metadata(root: Path, labels: dict = LABELS, categories: list[str] = CATEGORIES) -> None:
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
              [[n, name, ";".join(f"{c}({1})" for c in cats), 1, sum(cats.values()), ""]
               for n, (name, cats) in labels.items()])
    cat_rows = []
    for cat in categories:
        members = [(n, name, cats[cat]) for n, (name, cats) in labels.items() if cat in cats]
        write_csv(root / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"],
                  [[i + 1, n, name, 1, cov] for i, (n, name, cov) in enumerate(members)])
        cat_rows.append([cat, 1, len(members), len(members), 1])
    write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"], cat_rows)


def make_broden(root: Path, images: int = 60, size: int = 32, label_size: int = 16, seed: int = 0,
                image_format: str = "jpg") -> Path:
    """A random Broden-format dataset exercising every feature of the format.

    Pixel categories: color and object (one plane), part (one or two planes, sometimes
    repeating a label of the other plane), material (one plane); image-level: scene (one
    label) or texture (one or two labels, on their own images).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images" / "gen").mkdir(parents=True, exist_ok=True)
    write_metadata(root)
    rows = []
    for i in range(images):
        name = f"gen/{i:04d}"
        # Smooth-ish random images so conv units have structure.
        small = rng.integers(0, 256, size=(size // 4, size // 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        img.save(root / "images" / f"{name}.{image_format}")
        cells = {c: "" for c in INDEX_COLUMNS[6:]}

        def plane(tag: str, values: list[int], p_empty: float = 0.2) -> str:
            blocks = rng.choice(values + [0], size=(label_size // 4, label_size // 4),
                                p=None if not p_empty else
                                [(1 - p_empty) / len(values)] * len(values) + [p_empty])
            arr = np.kron(blocks, np.ones((4, 4), dtype=np.int64))
            fname = f"{name}_{tag}.png"
            save_plane(root / "images" / fname, arr)
            return fname

        cells["color"] = plane("color", [1, 2, 3], 0.0)
        if i % 5 == 4:
            textures = [14] if rng.random() < 0.6 else [14, 15]
            cells["texture"] = ";".join(str(t) for t in textures)
        else:
            cells["object"] = plane("object", [4, 5, 6, 10])
            parts = [plane("part", [7, 8, 9])]
            if rng.random() < 0.5:
                parts.append(plane("part2", [7, 8]))
            cells["part"] = ";".join(parts)
            if rng.random() < 0.7:
                cells["material"] = plane("material", [10, 11], 0.5)
            cells["scene"] = str(int(rng.choice([12, 13])))
        rows.append([f"{name}.{image_format}", "train", size, size, label_size, label_size]
                    + [cells[c] for c in INDEX_COLUMNS[6:]])
    write_csv(root / "index.csv", INDEX_COLUMNS, rows)
    return root


class TinyNet(nn.Module):
    """Two conv stages with random weights: `conv1` (8 units, H/2) and `conv2` (16 units, H/4)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        return self.head(x.mean(dim=(2, 3)))


def tiny_net() -> nn.Module:
    """Entry point for `--model conftest:tiny_net`-style import paths in CLI tests."""
    return TinyNet()


@pytest.fixture(scope="session")
def broden_dir(tmp_path_factory) -> Path:
    return make_broden(tmp_path_factory.mktemp("broden") / "broden", images=60)


@pytest.fixture
def make_dataset():
    """`make_broden`, for tests that need a dataset of their own (without importing conftest)."""
    return make_broden


HOSTILE = "<script>alert(1)</script>"


def hostile_report(root: Path):
    """Dissect TinyNet on a generated dataset whose object labels are all named HOSTILE
    (so every unit's best object label is that name), then write the report into OUT; returns
    OUT and the Dissection (the report tests and the browser tests share it)."""
    import netdissect
    from netdissect.report import write_report

    dataset = make_broden(root / "broden", images=40)
    labels = {n: ((HOSTILE, cats) if "object" in cats and n in (4, 5, 6) else (name, cats))
              for n, (name, cats) in LABELS.items()}
    write_metadata(dataset, labels)
    # A random net scores IoUs near 0.003: a low IoU threshold gives the charts detectors.
    result = netdissect.dissect(TinyNet(), dataset, ["conv1", "conv2"], out=root / "out",
                                iou_threshold=0.002, batch_size=20, workers=0, progress=False)
    write_report(root / "out", progress=False)
    return root / "out", result


class FailingNet(TinyNet):
    """TinyNet that fails at its `fail_at`-th forward pass (an interrupted run)."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("interrupted on purpose")
        return super().forward(x)


# -- a local HTTP server for download tests (127.0.0.1 only) ------------------------------
class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` ({path: bytes}), honouring Range (unless `ignore_range`),
    recording each request and, once, cutting the body after `cut_after` bytes."""

    def log_message(self, format, *args):  # noqa: A002 - silence the request log
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        range_header = self.headers.get("Range")
        if range_header and not srv.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[: srv.cut_after], None  # Drop the connection once.
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server():
    """A Range-aware HTTP server on 127.0.0.1; yields it with ``.base`` (its URL ending in /)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.cut_after, srv.ignore_range = {}, [], None, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
