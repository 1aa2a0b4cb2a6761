"""Reader for Broden-format datasets (docs/method.md section 2).

`Broden` reads and checks the CSV files up front (index.csv, label.csv, category.csv,
c_<cat>.csv), decides each label's primary category among the selected categories, and
confines every path of the index to the dataset's `images/` folder.  `BrodenImages` is the
torch `Dataset` that loads, inside DataLoader workers, the image (as uint8, resized to the
model's input size when needed) and/or the label planes of one row; `collate_samples` stacks
a batch and sets bad images aside.
"""
from __future__ import annotations

import csv
import functools
import io
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from netdissect.data.images import load_rgb
from netdissect.errors import BrodenError
from netdissect.files import confined

__all__ = ["Broden", "IndexRow", "BrodenImages", "collate_samples", "load_broden", "BrodenError"]

FIXED_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw"]


@dataclass
class IndexRow:
    """One image of index.csv: its path and, per selected category, planes and image labels."""

    image: str
    split: str
    ih: int
    iw: int
    planes: list[str] = field(default_factory=list)  # PNG paths relative to images/
    image_labels: list[int] = field(default_factory=list)  # global label numbers


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise BrodenError(f"{path}: missing. A Broden dataset folder holds index.csv, label.csv, "
                          "category.csv, c_<category>.csv and images/.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise BrodenError(f"{path}: empty file (a header row is expected).")
    return rows[0], rows[1:]


def _int(value: str, path: Path, row: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BrodenError(f"{path}, row {row}: column '{column}' should be an integer, "
                          f"found {value!r}.") from None


def _float(value: str, path: Path, row: int, column: str) -> float:
    try:
        return float(value) if value != "" else 0.0
    except ValueError:
        raise BrodenError(f"{path}, row {row}: column '{column}' should be a number, "
                          f"found {value!r}.") from None


def _columns(header: list[str], needed: list[str], path: Path) -> dict[str, int]:
    missing = [c for c in needed if c not in header]
    if missing:
        raise BrodenError(f"{path}: header lacks column(s) {', '.join(missing)}; "
                          f"found {', '.join(header)}.")
    return {name: i for i, name in enumerate(header)}


class Broden:
    """The metadata of a Broden-format dataset, checked, for a chosen subset of categories.

    Attributes a newcomer will use: `categories` (selected, in category.csv order),
    `label_names` (index = global label number, 0 = unlabelled), `label_category` (index of
    each label's primary category in `categories`, -1 when not scored), `rows` (IndexRow per
    image), `label_size` (sh, sw), `fingerprint` (sha256 of the CSV files), `files_fingerprint`
    (of every image and plane's size and modification time).
    """

    def __init__(self, root: str | os.PathLike, categories: list[str] | None = None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise BrodenError(f"{self.root}: not a directory. Pass the folder that holds "
                              "index.csv (for example broden1_224/).")
        self.images_dir = self.root / "images"
        self._read_categories(categories)
        self._read_labels()
        self._read_index()

    # -- metadata -------------------------------------------------------------------------
    def _read_categories(self, wanted: list[str] | None) -> None:
        path = self.root / "category.csv"
        header, rows = _read_csv(path)
        col = _columns(header, ["name"], path)
        all_categories = [r[col["name"]] for r in rows if r]
        if not all_categories:
            raise BrodenError(f"{path}: lists no category.")
        if wanted:
            unknown = [c for c in wanted if c not in all_categories]
            if unknown:
                raise BrodenError(f"--categories: unknown category {', '.join(unknown)}; "
                                  f"{path} has {', '.join(all_categories)}.")
            self.categories = [c for c in all_categories if c in wanted]
        else:
            self.categories = all_categories
        self.all_categories = all_categories

    def _read_labels(self) -> None:
        path = self.root / "label.csv"
        header, rows = _read_csv(path)
        col = _columns(header, ["number", "name"], path)
        names: dict[int, str] = {}
        for i, r in enumerate(rows, start=2):
            if not r:
                continue
            number = _int(r[col["number"]], path, i, "number")
            if number <= 0:
                raise BrodenError(f"{path}, row {i}: label numbers start at 1 (0 means unlabelled).")
            names[number] = r[col["name"]]
        if not names:
            raise BrodenError(f"{path}: lists no label.")
        n = max(names) + 1
        self.label_names = [""] * n
        self.label_known = np.zeros(n, dtype=bool)
        for number, name in names.items():
            self.label_names[number] = name
            self.label_known[number] = True

        # Primary category: largest c_<cat>.csv coverage among the selected categories, ties
        # going to the category that comes later in category order (docs/method.md section 2).
        best = np.full(n, -1, dtype=np.int64)
        best_coverage = np.full(n, -np.inf)
        for ci, cat in enumerate(self.categories):
            cpath = self.root / f"c_{cat}.csv"
            cheader, crows = _read_csv(cpath)
            ccol = _columns(cheader, ["number"], cpath)
            for i, r in enumerate(crows, start=2):
                if not r:
                    continue
                number = _int(r[ccol["number"]], cpath, i, "number")
                if not (0 < number < n and self.label_known[number]):
                    raise BrodenError(f"{cpath}, row {i}: label {number} is not in label.csv.")
                coverage = (_float(r[ccol["coverage"]], cpath, i, "coverage")
                            if "coverage" in ccol else 0.0)
                if coverage >= best_coverage[number]:
                    best_coverage[number] = coverage
                    best[number] = ci
        self.label_category = best

    def _read_index(self) -> None:
        path = self.root / "index.csv"
        header, rows = _read_csv(path)
        col = _columns(header, FIXED_COLUMNS, path)
        missing = [c for c in self.categories if c not in col]
        if missing:
            raise BrodenError(f"{path}: no column for category {', '.join(missing)} "
                              "(category.csv lists it).")
        self.rows: list[IndexRow] = []
        self._all_files: list[str] = []
        self._resolved: dict[str, str] = {}  # folders resolved once while the paths are checked
        indexed = [c for c in self.all_categories if c in col]
        label_size: tuple[int, int] | None = None
        for i, r in enumerate(rows, start=2):
            if not r:
                continue
            if len(r) != len(header):
                raise BrodenError(f"{path}, row {i}: {len(r)} fields, the header has "
                                  f"{len(header)}. Fix or remove the row.")
            sh, sw = (_int(r[col[c]], path, i, c) for c in ("sh", "sw"))
            if label_size is None:
                label_size = (sh, sw)
            elif (sh, sw) != label_size:
                raise BrodenError(f"{path}, row {i}: label size {sh}x{sw} differs from the "
                                  f"first row's {label_size[0]}x{label_size[1]}; netdissect "
                                  "needs one label-map size per dataset.")
            row = IndexRow(image=self._confined(r[col["image"]], path, i), split=r[col["split"]],
                           ih=_int(r[col["ih"]], path, i, "ih"), iw=_int(r[col["iw"]], path, i, "iw"))
            self._all_files.append(row.image)
            for cat in indexed:
                for item in r[col[cat]].split(";"):
                    item = item.strip()
                    if not item:
                        continue
                    if cat not in self.categories:  # fingerprinted, never read
                        if not item.isdigit():
                            self._all_files.append(self._confined(item, path, i))
                        continue
                    if item.isdigit():
                        number = int(item)
                        if not (0 < number < len(self.label_names) and self.label_known[number]):
                            raise BrodenError(f"{path}, row {i}: label {number} in column "
                                              f"'{cat}' is not in label.csv.")
                        row.image_labels.append(number)
                    else:
                        row.planes.append(self._confined(item, path, i))
                        self._all_files.append(row.planes[-1])
            self.rows.append(row)
        self._resolved.clear()
        if not self.rows:
            raise BrodenError(f"{path}: no image rows. Point --dataset at a populated Broden folder.")
        self.label_size = label_size

    def _confined(self, relative: str, path: Path, row: int) -> str:
        """Return `relative` if it names a file inside images/, else raise BrodenError."""
        try:
            confined(self.images_dir, relative, self._resolved)
        except ValueError:
            raise BrodenError(f"{path}, row {row}: path {relative!r} leaves the dataset's "
                              "images/ folder; refusing to read it.") from None
        return relative

    # -- derived values -------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Size of the label axis: global numbers 0..L (0 is unlabelled)."""
        return len(self.label_names)

    def scene_images(self, split: str | None = None) -> list[tuple[int, str]]:
        """(row, scene label name) of every image with an image-level label of category
        `scene` (its first), optionally of one split: the classes of a scene classifier."""
        if "scene" not in self.categories:
            raise BrodenError(f"{self.root}: the scene category is not selected or not in "
                              "category.csv; scene labels are needed here.")
        scene = self.categories.index("scene")
        items = []
        for i, row in enumerate(self.rows):
            if split is not None and row.split != split:
                continue
            scenes = [n for n in row.image_labels if self.label_category[n] == scene]
            if scenes:
                items.append((i, self.label_names[scenes[0]]))
        return items

    def check_files(self) -> list[str]:
        """Paths of index rows whose image or planes (of the selected categories) are missing on
        disk (cheap, up front)."""
        used = {rel for row in self.rows for rel in (row.image, *row.planes)}
        return [rel for rel, (size, _) in zip(self.files, self.file_stats.tolist())
                if size < 0 and rel in used]

    @property
    def files(self) -> list[str]:
        """Every image and label plane the index names, of every category (selected or not),
        in row order (paths under images/): what the file fingerprint covers."""
        return self._all_files

    @functools.cached_property
    def file_stats(self) -> np.ndarray:
        """(files, 2) int64: each file's size and modification time (ns), -1 when missing; one
        stat per file, read once."""
        stats = np.full((len(self.files), 2), -1, dtype=np.int64)
        for i, rel in enumerate(self.files):
            try:
                st = os.stat(self.images_dir / rel)
            except OSError:
                continue
            stats[i] = st.st_size, st.st_mtime_ns
        return stats

    @functools.cached_property
    def files_fingerprint(self) -> str:
        """sha256 over the size and modification time of every image and label plane: a
        replaced picture under the same name changes it, without reading the files."""
        h = hashlib.sha256("\n".join(self.files).encode())
        h.update(self.file_stats.tobytes())
        return h.hexdigest()

    def changed_files(self, saved_stats: np.ndarray) -> list[str]:
        """The files whose size or modification time differ from `saved_stats` (an earlier
        `file_stats` of the same index)."""
        if saved_stats.shape != self.file_stats.shape:
            return list(self.files)
        return [self.files[i] for i in np.flatnonzero((saved_stats != self.file_stats).any(axis=1))]

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the CSV files that define the dataset's labels and images (computed once;
        the images and label planes themselves are not hashed)."""
        h = hashlib.sha256()
        names = ["index.csv", "label.csv", "category.csv"] + [f"c_{c}.csv" for c in self.all_categories]
        for name in names:
            p = self.root / name
            h.update(name.encode())
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()



def load_broden(root: str | os.PathLike, categories: list[str] | None = None) -> Broden:
    """Read and check a Broden-format dataset folder."""
    return Broden(root, categories)


class BrodenImages(torch.utils.data.Dataset):
    """Per-row samples for the dissection passes, loaded in DataLoader workers.

    `images=True` yields the image as uint8 (3, H, W), resized to `input_size` when the file's
    size differs; `labels=True` yields the label planes of the selected categories as int64
    (planes, sh, sw), with labels that are not scored set to 0, a label repeated in several
    planes at one pixel kept once, and the image-level labels (int64 vector).  Each file is read
    once; `image_digest` / `labels_digest` are content hashes of the bytes read (so the passes
    can tell whether a file changed between them).  A file that cannot be read gives a sample
    with `bad` set to the reason.
    """

    def __init__(self, broden: Broden, images: bool = True, labels: bool = True,
                 input_size: tuple[int, int] | None = None):
        self.broden = broden
        self.images = images
        self.labels = labels
        self.input_size = input_size
        self.scored = broden.label_category >= 0

    def __len__(self) -> int:
        return len(self.broden.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.broden.rows[index]
        sample: dict = {"index": index, "bad": "", "image_digest": 0, "labels_digest": 0}
        try:
            if self.images:
                sample["image"], sample["image_digest"] = self._load_image(row.image)
            if self.labels:
                sample["planes"], sample["image_labels"], sample["labels_digest"] = self._load_labels(row)
        except BrodenError as e:
            sample["bad"] = str(e)
        return sample

    def _read(self, rel: str, what: str) -> bytes:
        path = self.broden.images_dir / rel
        try:
            return path.read_bytes()
        except OSError as e:
            raise BrodenError(f"{path}: cannot read the {what} ({e}). Replace the file, or pass "
                              "--skip-bad to skip and count such images.") from None

    def _load_image(self, rel: str) -> tuple[torch.Tensor, int]:
        data = self._read(rel, "image")
        try:
            return load_rgb(self.broden.images_dir / rel, self.input_size, data), _digest([data])
        except ValueError as e:
            raise BrodenError(f"{e} Replace the file, or pass --skip-bad to skip and count such "
                              "images.") from None

    def _load_labels(self, row: IndexRow) -> tuple[torch.Tensor, torch.Tensor]:
        sh, sw = self.broden.label_size
        known, scored = self.broden.label_known, self.scored
        planes = np.zeros((len(row.planes), sh, sw), dtype=np.int32)
        files = [self._read(rel, "label plane") for rel in row.planes]
        for j, (rel, data) in enumerate(zip(row.planes, files)):
            path = self.broden.images_dir / rel
            try:
                with Image.open(io.BytesIO(data)) as im:
                    mode = im.mode
                    rgb = np.asarray(im) if mode in ("RGB", "RGBA") else None
            except (OSError, ValueError, SyntaxError) as e:
                raise BrodenError(f"{path}: cannot read the label plane ({e}). Replace the file, "
                                  "or pass --skip-bad to skip and count such images.") from None
            if rgb is None:
                raise BrodenError(
                    f"{path}: a single-channel PNG (mode {mode}), the usual encoding of "
                    "ADE20K-style segmentations; Broden label planes are RGB with the label number "
                    "= R + 256*G (blue unused). Convert it, e.g. labels = np.asarray(Image.open(f)); "
                    "rgb = np.stack([labels % 256, labels // 256, 0 * labels], -1).astype('uint8'); "
                    "Image.fromarray(rgb).save(f) (with the numbers of label.csv).")
            if rgb.shape[:2] != (sh, sw):
                raise BrodenError(f"{path}: label plane is {rgb.shape[0]}x{rgb.shape[1]}, "
                                  f"index.csv says {sh}x{sw}.")
            plane = rgb[..., 0].astype(np.int32) | (rgb[..., 1].astype(np.int32) << 8)
            present = np.flatnonzero(np.bincount(plane.ravel()))  # the labels in the plane
            present = present[present > 0]
            if len(present) and (present[-1] >= len(known) or not known[present].all()):
                bad = [int(n) for n in present if n >= len(known) or not known[n]]
                raise BrodenError(f"{path}: label number(s) {bad[:5]} are not in label.csv. Fix "
                                  "the plane or label.csv, or pass --skip-bad.")
            planes[j] = plane if scored[present].all() else np.where(scored[plane], plane, 0)
        image_labels = np.unique([n for n in row.image_labels if scored[n]]).astype(np.int64)
        # One label at one pixel counts once, however many planes repeat it (the first keeps
        # it), and not at all in a plane when it is a label of the whole image.
        for j in range(1, len(planes)):
            for i in range(j):
                planes[j][planes[j] == planes[i]] = 0
        for n in image_labels:
            planes[planes == n] = 0
        return torch.from_numpy(planes.astype(np.int64)), torch.from_numpy(image_labels), _digest(files)


def _digest(contents: list[bytes]) -> int:
    """A 63-bit content hash of some files' bytes (never 0, which means "not read")."""
    h = hashlib.blake2b(digest_size=8)
    for data in contents:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return (int.from_bytes(h.digest(), "little") >> 1) or 1


def collate_samples(samples: list[dict]) -> dict:
    """Stack a batch: `index` (B,), `image` (B,3,H,W) uint8, `planes` (B,P,sh,sw) zero-padded,
    `image_labels` (B,M) zero-padded, and `bad` [(index, reason)] for the samples set aside."""
    bad = [(s["index"], s["bad"]) for s in samples if s["bad"]]
    good = [s for s in samples if not s["bad"]]
    batch: dict = {"bad": bad, "index": torch.tensor([s["index"] for s in good], dtype=torch.int64)}
    for key in ("image_digest", "labels_digest"):  # content hashes of the files read, 0: not read
        batch[key] = torch.tensor([s[key] for s in good], dtype=torch.int64)
    if good and "image" in good[0]:
        batch["image"] = torch.stack([s["image"] for s in good])
    if good and "planes" in good[0]:
        depth = max(s["planes"].shape[0] for s in good)
        sh, sw = good[0]["planes"].shape[1:]
        planes = torch.zeros((len(good), depth, sh, sw), dtype=torch.int64)
        for i, s in enumerate(good):
            planes[i, : s["planes"].shape[0]] = s["planes"]
        width = max(len(s["image_labels"]) for s in good)
        image_labels = torch.zeros((len(good), width), dtype=torch.int64)
        for i, s in enumerate(good):
            image_labels[i, : len(s["image_labels"])] = s["image_labels"]
        batch["planes"], batch["image_labels"] = planes, image_labels
    return batch
