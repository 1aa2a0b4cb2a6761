"""`segment_images`: run a segmenter over a folder of images and write a Broden-format dataset.

PNAS 2020's "segment once, dissect anything": the concepts come from a segmentation model
instead of hand labels, and the result is an ordinary Broden folder (docs/method.md section
2), so dissect, explain, the report and the experiments work on it unchanged.

Input: every .jpg/.jpeg/.png file (any case) under the folder, nested folders allowed, in
sorted order of their relative paths; names starting with '.' are ignored, links to folders
are not followed and a link to a file outside the folder is skipped.  Each image is resized
so that its shorter side is `size` (bilinear) and centre-cropped to size x size; a JPEG that
already is size x size RGB is copied byte for byte.  Unreadable files are skipped and counted.

Output (`out`):

- ``images/<relative path without suffix>.jpg`` (size x size, JPEG quality 90) and its label
  planes ``images/<same>_<category>.png`` (``_<category>_<level>`` when a category has several
  planes, and always for parts, as the toy world names them), label_size x label_size, label
  number = R + 256*G.  A segmenter plane that mixes categories is split per category; a
  category empty in an image gets no file there.  Planes are resized to label_size with
  nearest neighbour.
- ``index.csv`` (image, split, ih, iw, sh, sw, one column per category; the split is
  "train" for every image), ``label.csv`` (numbers 1..L, one per distinct name: a name in two
  categories gets one number and ``object(n);material(m)`` in its category column),
  ``category.csv``, ``c_<category>.csv``, with frequency (images) and coverage (pixels / (sh*sw)
  summed over images) counted as the toy world counts them.  Label numbers: the segmenter's
  labels by category (color, object, part, material) in the order of `labels()`, then the
  scene labels.  Every label is listed, also one that never occurs.
- With ``scenes_from="folders"``: an image's folder, relative to the input folder
  (``kitchen``, ``a/abbey``), plus ``-s`` (Broden's suffix of scene names) is an image-level
  ``scene`` label; images directly in the input folder get none.
- ``segment.json``: the segmenter, its labels, sizes, counts, skipped files and reasons, timings.
- ``.netdissect-segment.json``: the progress record (settings, finished images and their
  pixel counts, written atomically every few seconds and when the run stops, error or not).
  A rerun with the same settings segments only the images not finished (images added to the
  folder since are segmented too, images removed are left out of index.csv); with other
  settings it is refused.  The CSV files and segment.json are written together at the end.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from netdissect.data.segment.base import PIXEL_CATEGORIES, Segmenter, SegmenterLabel
from netdissect.data.segment.checks import check_labels, check_planes, segmenter_name
from netdissect.data.segment.colors import resize_planes, with_colors
from netdissect.errors import OutputError, SettingsError
from netdissect.files import atomic_write_files, atomic_write_json, confined, csv_bytes, json_bytes

__all__ = ["segment_images", "list_images", "read_image", "RECORD", "SUMMARY", "JPEG_QUALITY",
           "SCENES_FROM"]

RECORD = ".netdissect-segment.json"
SUMMARY = "segment.json"
FORMAT = "netdissect segment"
VERSION = 1
JPEG_QUALITY = 90
SUFFIXES = (".jpg", ".jpeg", ".png")
SCENES_FROM = ("folders",)
SCENE_SUFFIX = "-s"
RECORD_SECONDS = 10.0  # how often the progress record is rewritten during a run
FIXED_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw"]


def segment_images(images: str | os.PathLike, segmenter: str | Segmenter, out: str | os.PathLike,
                   *, size: int = 224, label_size: int = 112, batch_size: int = 16,
                   device: str | torch.device = "cpu", colors: bool = False,
                   scenes_from: str | None = None, weights: str | os.PathLike | None = None,
                   progress: bool = True) -> dict:
    """Segment every image under `images` with `segmenter` (a spec for `load_segmenter`, or a
    Segmenter) and write the Broden-format dataset `out` (see the module docstring).

    `colors` adds the colour namer's plane; `weights` goes to `load_segmenter` (specs only);
    `device` is where the images (and a segmenter loaded from a spec) go.  Returns the
    summary also written to out/segment.json.  Errors (netdissect.errors) name the option,
    file or segmenter and what to do.
    """
    from netdissect.models.probe import check_device

    start = time.perf_counter()
    for option, value in (("--size", size), ("--label-size", label_size),
                          ("--batch-size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SettingsError(f"{option} must be a whole number of at least 1, got {value!r}")
    if label_size > size:
        raise SettingsError(f"--label-size {label_size} is larger than --size {size}; label maps "
                            "are at most the image size (Broden: half of it).")
    if scenes_from is not None and scenes_from not in SCENES_FROM:
        raise SettingsError(f"--scenes-from {scenes_from!r}: the choices are "
                            f"{', '.join(SCENES_FROM)}.")
    device = check_device(device)
    root = Path(images).expanduser()
    out = Path(out).expanduser()
    if not root.is_dir():
        raise SettingsError(f"--images {root}: not a folder; pass the folder that holds the "
                            "jpg/png images.")
    _check_apart(root, out)
    inputs, skipped_links = list_images(root)
    if not inputs:
        raise SettingsError(f"--images {root}: no jpg/png images under {root} (files ending in "
                            f".jpg, .jpeg or .png, any case, in any sub-folder).")
    stems = _output_stems(inputs, root)
    record = _open_record(out)

    if isinstance(segmenter, str):
        from netdissect.data.segment.specs import load_segmenter

        segmenter = load_segmenter(segmenter, weights=weights, device=device)
    elif weights is not None:
        raise SettingsError("--weights applies to a segmenter spec; load the weights into your "
                            "segmenter object yourself.")
    if colors:
        segmenter = with_colors(segmenter, label_size)
    labels = check_labels(segmenter)
    settings = {"segmenter": segmenter_name(segmenter),
                "weights_sha256": getattr(segmenter, "weights_sha256", None),
                "labels": [[lab.name, lab.category] for lab in labels], "size": size,
                "label_size": label_size, "colors": bool(colors), "scenes_from": scenes_from}
    record = _check_record(record, settings, out)
    vocabulary = _Vocabulary(labels, [_scene(rel) for rel in inputs] if scenes_from else [])

    done: dict = record["done"]
    todo = [rel for rel in inputs if rel not in done]
    reused = len(inputs) - len(todo)
    skipped: dict[str, str] = dict(skipped_links)
    timings = {"read": 0.0, "segment": 0.0, "write": 0.0}
    saved_at = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="segment", unit="img")
    try:
        for batch, consumed in _batches(root, todo, size, batch_size, skipped, timings):
            if not batch:  # the last inputs were all unreadable
                if bar is not None:
                    bar.update(consumed)
                continue
            t = time.perf_counter()
            pixels = torch.from_numpy(np.stack([image for _, image, _ in batch]))
            x = pixels.permute(0, 3, 1, 2).to(device, torch.float32) / 255.0
            with torch.no_grad():
                planes = check_planes(segmenter.segment(x), segmenter, len(batch))
            planes = resize_planes(planes, (label_size, label_size)).cpu().numpy()
            timings["segment"] += time.perf_counter() - t
            t = time.perf_counter()
            for (rel, image, jpeg), image_planes in zip(batch, planes):
                done[rel] = _write_image(out, stems[rel], image, jpeg, image_planes, vocabulary,
                                         _scene(rel) if scenes_from else None)
            timings["write"] += time.perf_counter() - t
            if bar is not None:
                bar.update(consumed)
            if time.perf_counter() - saved_at >= RECORD_SECONDS:
                _save_record(out, record)
                saved_at = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
        record["skipped"] = {k: v for k, v in skipped.items() if k not in done}
        _save_record(out, record)

    finished = [rel for rel in inputs if rel in done]
    skipped_files = [{"file": rel, "reason": reason} for rel, reason in sorted(skipped.items())]
    if not finished:
        first = skipped_files[0] if skipped_files else {"file": "", "reason": ""}
        raise SettingsError(f"--images {root}: none of the {len(inputs)} image(s) could be read "
                            f"(e.g. {first['file']}: {first['reason']}). Replace the files and "
                            "run the same command again.")
    timings["total"] = time.perf_counter() - start
    summary = {
        "out": str(out.resolve()), "images_folder": str(root.resolve()),
        "segmenter": settings["segmenter"], "weights_sha256": settings["weights_sha256"],
        "size": size, "label_size": label_size, "colors": bool(colors),
        "scenes_from": scenes_from,
        "categories": vocabulary.categories, "labels": vocabulary.label_records(),
        "images": len(inputs) + len(skipped_links), "segmented": len(finished),
        "new": len(finished) - reused, "reused": reused, "skipped": len(skipped_files),
        "skipped_files": skipped_files,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    _write_dataset(out, [(rel, stems[rel], done[rel]) for rel in finished], vocabulary, summary)
    return summary


# -- the input folder ----------------------------------------------------------------------

def list_images(root: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """The images under `root` (relative POSIX paths, sorted) and the links skipped because
    they lead out of `root` ({path: reason}).  Hidden names are ignored, links to folders not
    followed."""
    root = Path(root)
    found: list[str] = []
    skipped: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            rel = Path(folder, name).relative_to(root).as_posix()
            try:
                confined(root, rel)
            except ValueError:
                skipped[rel] = f"a link that leaves {root}; not read"
                continue
            found.append(rel)
    return sorted(found), skipped


def read_image(path: str | os.PathLike, size: int) -> tuple[np.ndarray, bytes | None]:
    """The image at `path` as (size, size, 3) uint8 RGB (shorter side resized to `size`,
    bilinear, then centre-cropped), and its bytes when they can be kept as they are (a
    size x size RGB JPEG).  ValueError naming the reason when it cannot be read."""
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            keep = im.format == "JPEG" and im.mode == "RGB" and im.size == (size, size)
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read the image ({e})") from None
    w, h = rgb.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        rgb = rgb.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8), data if keep else None


def _check_apart(root: Path, out: Path) -> None:
    """SettingsError when the output folder and the input folder contain one another."""
    a, b = root.resolve(), out.resolve()
    if b.is_relative_to(a) or a.is_relative_to(b):
        raise SettingsError(f"--out {out} and --images {root} overlap; write the dataset to a "
                            "folder outside the images' folder.")


def _output_stems(inputs: list[str], root: Path) -> dict[str, str]:
    """Input path -> output stem (the path without its suffix, ';' made '_': index.csv
    separates plane names with ';'); SettingsError when two inputs share a stem."""
    stems: dict[str, str] = {}
    owner: dict[str, str] = {}
    for rel in inputs:
        stem = str(PurePosixPath(rel).with_suffix("")).replace(";", "_")
        if stem in owner:
            raise SettingsError(f"--images {root}: {owner[stem]} and {rel} would both be written "
                                f"as images/{stem}.jpg; rename one of them.")
        owner[stem] = rel
        stems[rel] = stem
    return stems


def _scene(rel: str) -> str | None:
    """The scene label of an input from its folder (None directly in the input folder)."""
    parent = str(PurePosixPath(rel).parent)
    if parent in ("", "."):
        return None
    return parent if parent.endswith(SCENE_SUFFIX) else parent + SCENE_SUFFIX


def _batches(root: Path, todo: list[str], size: int, batch_size: int, skipped: dict[str, str],
             timings: dict[str, float]
             ) -> Iterator[tuple[list[tuple[str, np.ndarray, bytes | None]], int]]:
    """Batches of readable images (path, pixels, bytes to keep), each with the number of
    inputs it used up; unreadable ones are put into `skipped` with the reason."""
    batch, consumed = [], 0
    t = time.perf_counter()
    for rel in todo:
        consumed += 1
        try:
            pixels, keep = read_image(root / rel, size)
        except ValueError as e:
            skipped[rel] = str(e)
            continue
        batch.append((rel, pixels, keep))
        if len(batch) == batch_size:
            timings["read"] += time.perf_counter() - t
            yield batch, consumed
            batch, consumed = [], 0
            t = time.perf_counter()
    timings["read"] += time.perf_counter() - t
    if batch or consumed:
        yield batch, consumed


# -- labels and numbers --------------------------------------------------------------------

@dataclass
class _Vocabulary:
    """Global label numbers (one per distinct name) and the categories of the dataset."""

    labels: list[SegmenterLabel]
    scenes: list[str | None]

    def __post_init__(self) -> None:
        used = {lab.category for lab in self.labels}
        self.categories = [c for c in PIXEL_CATEGORIES if c in used]
        self.numbers: dict[str, int] = {}
        self.members: dict[str, list[str]] = {c: [] for c in self.categories}
        for category in self.categories:
            for lab in self.labels:
                if lab.category == category:
                    self._add(lab.name, category)
        scene_names = sorted({s for s in self.scenes if s})
        if scene_names:
            self.categories.append("scene")
            self.members["scene"] = []
            for name in scene_names:
                self._add(name, "scene")
        # segmenter code -> global number, and -> index of its category
        self.code_number = np.array([0] + [self.numbers[lab.name] for lab in self.labels])
        self.code_category = np.array([-1] + [self.categories.index(lab.category)
                                              for lab in self.labels])

    def _add(self, name: str, category: str) -> None:
        self.numbers.setdefault(name, len(self.numbers) + 1)
        if name not in self.members[category]:
            self.members[category].append(name)

    def label_records(self) -> list[dict]:
        """Every label: number, name and categories (for segment.json)."""
        return [{"number": n, "name": name,
                 "categories": [c for c in self.categories if name in self.members[c]]}
                for name, n in self.numbers.items()]


# -- one image -------------------------------------------------------------------------------

def _encode_plane(plane: np.ndarray) -> bytes:
    """A label plane as Broden stores it (number = R + 256*G), PNG bytes."""
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = plane % 256
    rgb[..., 1] = plane // 256
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _write_image(out: Path, stem: str, image: np.ndarray, jpeg: bytes | None,
                 planes: np.ndarray, vocabulary: _Vocabulary, scene: str | None) -> dict:
    """Write one image and its label planes (all or none) and return its record: the plane
    files per category and the labelled pixels per category and global label number."""
    if jpeg is None:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        jpeg = buffer.getvalue()
    files = {out / "images" / f"{stem}.jpg": jpeg}
    numbers = vocabulary.code_number[planes]          # (P, h, w) global label numbers
    categories = vocabulary.code_category[planes]     # (P, h, w) category index, -1: none
    entry: dict = {"planes": {}, "counts": {}, "scene": scene}
    for ci, category in enumerate(vocabulary.categories):
        split = [np.where(categories[p] == ci, numbers[p], 0) for p in range(len(planes))
                 if (categories[p] == ci).any()]
        if not split:
            continue
        names = []
        counts = np.zeros(len(vocabulary.numbers) + 1, dtype=np.int64)
        for level, plane in enumerate(split, start=1):
            suffix = f"{category}_{level}" if len(split) > 1 or category == "part" else category
            name = f"{stem}_{suffix}.png"
            files[out / "images" / name] = _encode_plane(plane)
            names.append(name)
            counts += np.bincount(plane.ravel(), minlength=len(counts))
        entry["planes"][category] = names
        entry["counts"][category] = {str(n): int(counts[n]) for n in np.flatnonzero(counts) if n}
    atomic_write_files(files)
    return entry


# -- the record and the output folder --------------------------------------------------------

def _open_record(out: Path) -> dict | None:
    """The progress record of `out` (None for a new or empty folder); OutputError when `out`
    holds something other than a segment output."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder; choose another --out.")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    path = out / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"--out {out}: exists and holds something other than a `netdissect "
                          "segment` output; choose another --out, or remove it.") from None
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: cannot read the progress record ({e}); remove {out} (or "
                          "choose another --out) and run again.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise OutputError(f"{path}: not a `netdissect segment` progress record; choose another "
                          "--out, or remove it.")
    return record


def _check_record(record: dict | None, settings: dict, out: Path) -> dict:
    """A new record for `settings`, or the existing one when it was made with them;
    OutputError naming what differs otherwise."""
    if record is None:
        record = {"format": FORMAT, "version": VERSION, "settings": settings, "done": {},
                  "skipped": {}}
        out.mkdir(parents=True, exist_ok=True)
        _save_record(out, record)
        return record
    saved = record.get("settings", {})
    if record.get("version") != VERSION:
        changed = ["version"]
    else:
        changed = [k for k in settings if saved.get(k) != settings[k]]
    if changed:
        raise OutputError(f"--out {out}: was segmented with other settings ({', '.join(changed)} "
                          "differ); choose another --out, or remove it to segment again.")
    record.setdefault("done", {})
    return record


def _save_record(out: Path, record: dict) -> None:
    atomic_write_json(out / RECORD, record, indent=None)


def _write_dataset(out: Path, finished: list[tuple[str, str, dict]], vocabulary: _Vocabulary,
                   summary: dict) -> None:
    """index.csv, label.csv, category.csv, c_<category>.csv and segment.json, written as one."""
    categories = vocabulary.categories
    n = len(vocabulary.numbers) + 1
    area = summary["label_size"] ** 2
    pixels = np.zeros((len(categories), n), dtype=np.int64)
    frequency = np.zeros((len(categories), n), dtype=np.int64)
    rows = []
    for _, stem, entry in finished:
        row = {"image": f"{stem}.jpg", "split": "train", "ih": summary["size"],
               "iw": summary["size"], "sh": summary["label_size"], "sw": summary["label_size"]}
        for ci, category in enumerate(categories):
            if category == "scene":
                scene = entry.get("scene")
                row[category] = str(vocabulary.numbers[scene]) if scene else ""
                counts = {vocabulary.numbers[scene]: area} if scene else {}
            else:
                row[category] = ";".join(entry["planes"].get(category, []))
                counts = {int(k): v for k, v in entry["counts"].get(category, {}).items()}
            for number, count in counts.items():
                pixels[ci, number] += count
                frequency[ci, number] += count > 0
        rows.append(row)
    coverage = pixels / float(area)
    names = {number: name for name, number in vocabulary.numbers.items()}
    label_rows = []
    for name, number in vocabulary.numbers.items():
        cats = [ci for ci, c in enumerate(categories) if name in vocabulary.members[c]]
        cats.sort(key=lambda ci: -frequency[ci, number])
        label_rows.append({
            "number": number, "name": name,
            "category": ";".join(f"{categories[ci]}({frequency[ci, number]})" for ci in cats),
            "frequency": int(sum(frequency[ci, number] for ci in cats)),
            "coverage": f"{sum(coverage[ci, number] for ci in cats):.6f}", "syns": ""})
    files = {out / "index.csv": csv_bytes(rows, FIXED_COLUMNS + categories),
             out / "label.csv": csv_bytes(label_rows, ["number", "name", "category", "frequency",
                                                      "coverage", "syns"])}
    category_rows = []
    for ci, category in enumerate(categories):
        numbers = [vocabulary.numbers[name] for name in vocabulary.members[category]]
        category_rows.append({"name": category, "first": min(numbers, default=0),
                              "last": max(numbers, default=0), "count": len(numbers),
                              "frequency": int(frequency[ci, numbers].sum())})
        dense = sorted(numbers, key=lambda k: (-frequency[ci, k], -coverage[ci, k], k))
        files[out / f"c_{category}.csv"] = csv_bytes(
            [{"code": code, "number": k, "name": names[k], "frequency": int(frequency[ci, k]),
              "coverage": f"{coverage[ci, k]:.6f}"} for code, k in enumerate(dense, start=1)],
            ["code", "number", "name", "frequency", "coverage"])
    files[out / "category.csv"] = csv_bytes(category_rows, ["name", "first", "last", "count",
                                                            "frequency"])
    files[out / SUMMARY] = json_bytes(summary)
    atomic_write_files(files)
