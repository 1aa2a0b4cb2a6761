"""Every bad input of issue 2 gives a clear error naming the file/row/unit, or a counted skip."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import netdissect
from conftest import TinyNet, make_broden, save_plane
from netdissect.cli import main
from netdissect.data.broden import BrodenError


@pytest.fixture
def data(tmp_path):
    return make_broden(tmp_path / "broden", images=12, seed=5)


def rows(root):
    with open(root / "index.csv", newline="") as f:
        return list(csv.reader(f))


def write_rows(root, table):
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(table)


def run(data, **kw):
    return netdissect.dissect(TinyNet(), data, ["conv2"], workers=0, progress=False, **kw)


def test_malformed_row_names_file_and_row(data):
    table = rows(data)
    table[3] = table[3][:4]
    write_rows(data, table)
    with pytest.raises(BrodenError, match=r"index\.csv, row 4: 4 fields"):
        netdissect.load_broden(data)


def test_non_integer_size_names_column(data):
    table = rows(data)
    table[2][2] = "big"
    write_rows(data, table)
    with pytest.raises(BrodenError, match=r"row 3: column 'ih' should be an integer"):
        netdissect.load_broden(data)


def test_missing_image_found_up_front_or_skipped(data, tmp_path):
    (data / "images" / "gen" / "0003.jpg").unlink()
    with pytest.raises(BrodenError, match=r"1 file\(s\).*missing.*gen/0003\.jpg.*--skip-bad"):
        run(data)
    out = tmp_path / "out"
    result = run(data, skip_bad=True, out=out)
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["dataset"]["images_processed"] == 11
    assert summary["dataset"]["images_skipped"] == 1
    assert summary["dataset"]["skipped"][0]["row"] == 3


def test_corrupt_jpeg_named_and_skipped_image_left_out(data, tmp_path):
    (data / "images" / "gen" / "0002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(BrodenError, match=r"0002\.jpg: cannot read the image"):
        run(data)
    skipped = run(data, skip_bad=True)["conv2"]
    assert skipped.meta["dataset"]["images_skipped"] == 1
    # Skipping equals dissecting the dataset without that row.
    table = rows(data)
    write_rows(data, table[:3] + table[4:])
    without = run(data)["conv2"]
    assert torch.equal(skipped.thresholds, without.thresholds)
    assert torch.equal(skipped.intersection, without.intersection)
    assert torch.equal(skipped.activation["original"], without.activation["original"])


def test_corrupt_png_names_the_file(data):
    (data / "images" / "gen" / "0001_color.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(BrodenError, match=r"0001_color\.png: cannot read the label plane"):
        run(data)


def test_label_absent_from_label_csv(data):
    save_plane(data / "images" / "gen" / "0004_color.png", np.full((16, 16), 99, dtype=np.int64))
    with pytest.raises(BrodenError, match=r"0004_color\.png: label number\(s\) \[99\] are not in label\.csv"):
        run(data)
    table = rows(data)
    col = table[0].index("scene")
    table[1][col] = "77"
    write_rows(data, table)
    with pytest.raises(BrodenError, match=r"row 2: label 77 in column 'scene' is not in label\.csv"):
        netdissect.load_broden(data)


def test_path_escaping_the_dataset_is_refused(data):
    table = rows(data)
    table[1][0] = "../../../etc/passwd"
    write_rows(data, table)
    with pytest.raises(BrodenError, match=r"row 2: path '../../../etc/passwd' leaves the dataset"):
        netdissect.load_broden(data)
    table[1][0] = "/etc/passwd"
    write_rows(data, table)
    with pytest.raises(BrodenError, match=r"leaves the dataset"):
        netdissect.load_broden(data)


def test_symbolic_links_out_of_the_dataset_are_refused(data, tmp_path):
    """A file or a folder inside images/ that links outside is refused; `..` is resolved
    after the links, as the file system does; links that stay inside are fine."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    good = rows(data)[1][0]
    (outside / "sub" / "x.jpg").write_bytes((data / "images" / good).read_bytes())
    images = data / "images"
    (images / "leak.jpg").symlink_to(outside / "sub" / "x.jpg")
    (images / "leakdir").symlink_to(outside / "sub")
    (images / "inner.jpg").symlink_to(images / good)
    for path in ("leak.jpg", "leakdir/x.jpg", "leakdir/../sub/x.jpg"):
        table = rows(data)
        table[1][0] = path
        write_rows(data, table)
        with pytest.raises(BrodenError, match=rf"row 2: path '{path}' leaves the dataset"):
            netdissect.load_broden(data)
    for path in ("inner.jpg", f"leakdir/../../{data.name}/images/{good}"):
        table = rows(data)
        table[1][0] = path
        write_rows(data, table)
        assert netdissect.load_broden(data).rows[0].image == path


def test_empty_dataset(data):
    write_rows(data, rows(data)[:1])
    with pytest.raises(BrodenError, match=r"index\.csv: no image rows"):
        netdissect.load_broden(data)


def test_missing_csv_says_what_a_broden_folder_holds(data):
    (data / "label.csv").unlink()
    with pytest.raises(BrodenError, match=r"label\.csv: missing\. A Broden dataset folder holds"):
        netdissect.load_broden(data)


def test_unknown_category(data):
    with pytest.raises(BrodenError, match=r"--categories: unknown category animal"):
        netdissect.load_broden(data, ["object", "animal"])


class PoisonUnit(nn.Module):
    """Sets unit 5 at one position to NaN, as a diverged layer would."""

    def forward(self, x):
        x = x.clone()
        x[:, 5, 0, 0] = float("nan")
        return x


class NaNNet(TinyNet):
    def __init__(self):
        super().__init__()
        self.conv1.append(PoisonUnit())


def test_nan_activation_names_layer_unit_and_image(data):
    with pytest.raises(netdissect.DissectError, match=r"layer 'conv1', unit 5: NaN or inf activation on image 'gen/0000\.jpg'"):
        netdissect.dissect(NaNNet(), data, ["conv1"], workers=0, progress=False)


def test_failed_run_writes_no_result_files(data, tmp_path, monkeypatch):
    (tmp_path / "nanmodel.py").write_text(
        "import torch\nfrom conftest import TinyNet\n"
        "class M(TinyNet):\n"
        "    def forward(self, x):\n"
        "        return self.conv2(self.conv1(x) * float('inf'))\n"
        "def build():\n    return M()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    code = main(["dissect", "--dataset", str(data), "--model", "nanmodel:build", "--layers",
                 "conv1,conv2", "--workers", "0", "--out", str(out), "--quiet"])
    assert code == 2
    assert not out.exists() or not any(out.rglob("*.csv"))
