"""The toy world: a deterministic procedural generator of small Broden-format datasets.

Network Dissection needs a densely labelled image set.  Broden itself is large and its host is
unreliable, so tests, demos and benchmarks use this generator instead.  It draws simple scenes
(streets, parks, forests, harbors, bedrooms, kitchens) out of shapes with procedural surface
materials, plus full-frame DTD-like texture images, and writes them in exactly the Broden
format of docs/method.md section 2:

- ``images/scenes/NNNNN.jpg`` (224x224) with label planes ``NNNNN_color.png``,
  ``NNNNN_object.png``, ``NNNNN_part_1.png`` (and ``NNNNN_part_2.png`` where parts of parts,
  window panes and wheel rims, are present) and ``NNNNN_material.png`` (112x112, label number
  = R + 256*G); the scene is an image-level label;
- ``images/textures/NNNNN.jpg``: one or two image-level texture labels and a color plane;
- ``index.csv`` (category columns in a non-standard order, on purpose), ``category.csv``,
  ``label.csv`` and ``c_<category>.csv`` with frequency and coverage counted from the data.

Statistics follow the reference Broden writer: per category, a label's frequency is the number
of images where it occurs in that category and its coverage the labelled pixels divided by
sh*sw summed over images (an image-level label covers its whole image).  ``label.csv`` sums
these over the categories of a label (``grass`` and ``water`` are both objects and materials,
so they appear as ``object(n);material(m)``), and ``category.csv`` gives per category the first
and last global label numbers, the number of labels and the sum of their frequencies.  Every
defined label is listed (numbers 1..L without gaps), so a very small world may list labels
with frequency 0.

Scenes are defined by a layout and a mix of objects shared between scenes with different
probabilities (street: houses and cars; park: trees, tables, chairs; bedroom: a bed; kitchen:
tables and chairs; the ground and floor vary within a scene), so a scene classifier gains from
detecting objects.  Every image is drawn from its own random generator seeded by
``(seed, index)``: the output does not depend on the number of worker processes.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image
from netdissect.errors import OutputError, SettingsError

IMAGE_SIZE = 224
LABEL_SIZE = 112
FORMAT_VERSION = 1
VAL_FRACTION = 0.2
TEXTURE_FRACTION = 0.15
MULTI_TEXTURE_FRACTION = 0.25
MANIFEST = "toyworld.json"

# ----------------------------------------------------------------------------------------
# The label vocabulary.  Numbers are assigned in this order (color, object, part, material,
# scene, texture); a name listed in several categories gets one number.
# ----------------------------------------------------------------------------------------
COLORS = ["black-c", "blue-c", "brown-c", "green-c", "grey-c", "orange-c", "pink-c",
          "purple-c", "red-c", "white-c", "yellow-c"]
OBJECTS = ["sky", "wall", "floor", "road", "grass", "water", "mountain", "house", "tree",
           "car", "lamp", "bed", "table", "chair", "boat", "sun", "cloud"]
PARTS = ["roof", "door", "window", "pane", "wheel", "rim", "trunk", "crown", "pole", "shade",
         "bulb", "headboard", "pillow", "leg", "top", "seat", "back", "hull", "sail", "mast"]
MATERIALS = ["wood", "brick", "grass", "water", "metal", "fabric", "glass", "tile", "foliage",
             "painted"]
SCENES = ["street-s", "park-s", "forest-s", "harbor-s", "bedroom-s", "kitchen-s"]
TEXTURES = ["striped", "dotted", "checkered", "zigzagged", "grid", "wavy", "spiralled",
            "marbled"]

CATEGORY_LABELS: dict[str, list[str]] = {
    "color": COLORS, "object": OBJECTS, "part": PARTS, "material": MATERIALS,
    "scene": SCENES, "texture": TEXTURES,
}
# Column order of index.csv: deliberately not the usual one, since readers must not assume it.
INDEX_COLUMNS = ["scene", "part", "color", "texture", "object", "material"]
SYNONYMS = {"car": "automobile;auto", "lamp": "light", "house": "building", "water": "sea",
            "grass": "lawn", "table": "desk", "boat": "ship",
            "crown": "treetop", "striped": "stripy"}


def _number_labels() -> dict[str, int]:
    numbers: dict[str, int] = {}
    for names in CATEGORY_LABELS.values():
        for name in names:
            numbers.setdefault(name, len(numbers) + 1)
    return numbers


LABELS: dict[str, int] = _number_labels()
"""Global label number of every toy-world label name (1..L)."""
NUM_LABELS = len(LABELS)
PIXEL_CATEGORIES = ["color", "object", "part", "material"]
IMAGE_CATEGORIES = ["scene", "texture"]
CATEGORIES = list(CATEGORY_LABELS)

# ----------------------------------------------------------------------------------------
# Shapes: continuous regions of the 224x224 image plane, in pixel units ((y, x), pixel j
# covering [j, j+1)).  They are rasterised twice: at pixel centres of the image and at pixel
# centres of the half-resolution label planes, inside their bounding box only.
# ----------------------------------------------------------------------------------------


class Shape(ABC):
    """A region of the plane with a bounding box ``(y0, x0, y1, x1)``."""

    bbox: tuple[float, float, float, float]

    @abstractmethod
    def inside(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Boolean mask of the points (y column, x row; broadcast) inside the region."""


@dataclass
class Rect(Shape):
    y0: float
    x0: float
    y1: float
    x1: float

    @property
    def bbox(self):
        return (self.y0, self.x0, self.y1, self.x1)

    def inside(self, y, x):
        return (y >= self.y0) & (y < self.y1) & (x >= self.x0) & (x < self.x1)


@dataclass
class Ellipse(Shape):
    cy: float
    cx: float
    ry: float
    rx: float

    @property
    def bbox(self):
        return (self.cy - self.ry, self.cx - self.rx, self.cy + self.ry, self.cx + self.rx)

    def inside(self, y, x):
        return ((y - self.cy) / self.ry) ** 2 + ((x - self.cx) / self.rx) ** 2 <= 1.0


@dataclass
class Polygon(Shape):
    """A convex polygon given by its vertices ``[(y, x), ...]`` in either winding order."""

    points: Sequence[tuple[float, float]]

    @property
    def bbox(self):
        ys, xs = zip(*self.points)
        return (min(ys), min(xs), max(ys), max(xs))

    def inside(self, y, x):
        pts = list(self.points)
        area = sum(p[1] * q[0] - q[1] * p[0] for p, q in zip(pts, pts[1:] + pts[:1]))
        sign = 1.0 if area >= 0 else -1.0
        mask = np.ones(np.broadcast_shapes(y.shape, x.shape), dtype=bool)
        for (ya, xa), (yb, xb) in zip(pts, pts[1:] + pts[:1]):
            mask &= sign * ((xb - xa) * (y - ya) - (yb - ya) * (x - xa)) >= 0
        return mask


@dataclass
class Union(Shape):
    shapes: Sequence[Shape]

    @property
    def bbox(self):
        boxes = np.array([s.bbox for s in self.shapes])
        return (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())

    def inside(self, y, x):
        mask = self.shapes[0].inside(y, x)
        for s in self.shapes[1:]:
            mask = mask | s.inside(y, x)
        return mask


def _raster(shape: Shape, n: int, step: float) -> tuple[int, int, np.ndarray] | None:
    """Rasterise `shape` on an n x n grid of pixels of size `step`: (row0, col0, local mask)."""
    y0, x0, y1, x1 = shape.bbox
    r0, c0 = max(0, math.floor(y0 / step)), max(0, math.floor(x0 / step))
    r1, c1 = min(n, math.ceil(y1 / step) + 1), min(n, math.ceil(x1 / step) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    ys = ((np.arange(r0, r1, dtype=np.float32) + 0.5) * step)[:, None]
    xs = ((np.arange(c0, c1, dtype=np.float32) + 0.5) * step)[None, :]
    return r0, c0, shape.inside(ys, xs)


# ----------------------------------------------------------------------------------------
# Canvas and surfaces.  A surface maps the (row, col) pixel indices of a painted region to
# RGB colours (0-255 floats); materials are surfaces with a procedural pattern.
# ----------------------------------------------------------------------------------------

Surface = Callable[["Canvas", np.ndarray, np.ndarray], np.ndarray]


def _value_noise(rng: np.random.Generator, cell: int) -> np.ndarray:
    """Smooth random field in [0, 1] with features about `cell` pixels across."""
    k = IMAGE_SIZE // cell + 2
    grid = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
    big = grid.resize((k * cell, k * cell), Image.BILINEAR)
    return np.asarray(big, dtype=np.float32)[cell // 2: cell // 2 + IMAGE_SIZE,
                                             cell // 2: cell // 2 + IMAGE_SIZE]


class Canvas:
    """The image being drawn and its label planes (object, part levels 1 and 2, material).

    `paint` works like a painter's algorithm: a shape overwrites the colour and every label
    plane inside it, so occlusion is right in all planes at once.
    """

    def __init__(self, rng: np.random.Generator):
        self.rgb = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
        self.planes = {k: np.zeros((LABEL_SIZE, LABEL_SIZE), dtype=np.int32)
                       for k in ("object", "part", "part2", "material")}
        self.fine = _value_noise(rng, 3)
        self.mid = _value_noise(rng, 8)
        self.coarse = _value_noise(rng, 32)

    def paint(self, shape: Shape, surface: Surface, obj: str | None = None,
              part: str | None = None, part2: str | None = None,
              material: str | None = None) -> None:
        """Fill `shape` with `surface` and set its object, part and material labels."""
        hit = _raster(shape, IMAGE_SIZE, 1.0)
        if hit is not None:
            r0, c0, mask = hit
            rr, cc = np.nonzero(mask)
            rr += r0
            cc += c0
            self.rgb[rr, cc] = surface(self, rr, cc)
        hit = _raster(shape, LABEL_SIZE, IMAGE_SIZE / LABEL_SIZE)
        if hit is not None:
            r0, c0, mask = hit
            h, w = mask.shape
            for plane, name in (("object", obj), ("part", part), ("part2", part2),
                                ("material", material)):
                view = self.planes[plane][r0:r0 + h, c0:c0 + w]
                view[mask] = LABELS[name] if name else 0


def _color(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float32)


def flat(color, jitter: float = 6.0) -> Surface:
    """A plain colour with a little smooth noise."""
    col = _color(color)

    def fill(cv, r, c):
        return col + jitter * (2 * cv.fine[r, c, None] - 1)
    return fill


def gradient(top, bottom, y0: float, y1: float) -> Surface:
    """A vertical blend from `top` (at y0) to `bottom` (at y1), as skies are."""
    top, bottom = _color(top), _color(bottom)

    def fill(cv, r, c):
        t = np.clip((r + 0.5 - y0) / max(y1 - y0, 1.0), 0, 1)[:, None]
        return top * (1 - t) + bottom * t + 4 * (2 * cv.mid[r, c, None] - 1)
    return fill


def wood(color, vertical: bool = False, plank: float = 0.0) -> Surface:
    """Wood grain: wavy stripes along the grain, darker seams between planks if `plank`."""
    col = _color(color)

    def fill(cv, r, c):
        across = (c if vertical else r).astype(np.float32)
        shade = (0.84 + 0.16 * np.sin(across * 0.9 + 9.0 * cv.coarse[r, c])
                 + 0.14 * (cv.fine[r, c] - 0.5))
        if plank:
            shade = np.where(across % plank < 1.2, 0.55, shade)
        return col * shade[:, None]
    return fill


def brick(color, rng: np.random.Generator, mortar=(200, 195, 185)) -> Surface:
    """Running-bond brickwork: offset rows of bricks of varying tone, light mortar joints."""
    col, mortar = _color(color), _color(mortar)
    bh = float(rng.uniform(7, 11))
    bw = bh * 2.3
    tones = rng.uniform(0.8, 1.15, size=37).astype(np.float32)

    def fill(cv, r, c):
        row = np.floor(r / bh)
        shifted = c + (row % 2) * bw / 2
        tone = tones[((row * 11 + np.floor(shifted / bw) * 5) % 37).astype(np.int64)]
        out = col * (tone * (0.9 + 0.2 * cv.fine[r, c]))[:, None]
        joint = ((r % bh) < 1.5) | ((shifted % bw) < 1.5)
        out[joint] = mortar
        return out
    return fill


def grass(color) -> Surface:
    """Grass: speckled green with darker and lighter patches."""
    col = _color(color)

    def fill(cv, r, c):
        shade = 0.55 + 0.5 * cv.fine[r, c] + 0.3 * cv.mid[r, c]
        out = col * shade[:, None]
        out[:, 1] += 12 * (cv.mid[r, c] - 0.5)
        return out
    return fill


def water(color) -> Surface:
    """Water: blue with wavy horizontal highlights."""
    col = _color(color)

    def fill(cv, r, c):
        ripple = np.sin(0.9 * r + 2.5 * np.sin(0.07 * c) + 8.0 * cv.coarse[r, c])
        out = col * (0.85 + 0.25 * cv.mid[r, c])[:, None]
        out[ripple > 0.75] += 45
        return out
    return fill


def metal(color) -> Surface:
    """Metal: a colour with a diagonal specular sheen."""
    col = _color(color)

    def fill(cv, r, c):
        sheen = np.sin((r + 0.5 * c) * 0.07) ** 8
        return col * (0.85 + 0.05 * cv.fine[r, c])[:, None] + 70 * sheen[:, None]
    return fill


def fabric(color, plaid: bool = False) -> Surface:
    """Fabric: a fine weave, optionally a plaid of darker bands."""
    col = _color(color)

    def fill(cv, r, c):
        shade = 0.9 + 0.1 * (((r // 2) + (c // 2)) % 2) + 0.08 * (cv.mid[r, c] - 0.5)
        if plaid:
            shade = shade * np.where(((r % 14) < 4) | ((c % 14) < 4), 0.72, 1.0)
        return col * shade[:, None]
    return fill


def glass(color) -> Surface:
    """Glass: a cool colour with a bright diagonal reflection."""
    col = _color(color)

    def fill(cv, r, c):
        out = col * (0.9 + 0.15 * cv.coarse[r, c])[:, None]
        out[((c + r) % 26) < 5] += 55
        return out
    return fill


def tile(color, size: float, grout=(120, 120, 118)) -> Surface:
    """Square tiles with grout lines and alternating tones."""
    col, grout = _color(color), _color(grout)

    def fill(cv, r, c):
        alt = ((r // size + c // size) % 2).astype(np.float32)
        out = col * (0.95 + 0.07 * alt + 0.04 * cv.fine[r, c])[:, None]
        out[((r % size) < 1.5) | ((c % size) < 1.5)] = grout
        return out
    return fill


def foliage(color) -> Surface:
    """Foliage: clumps of leaves, a blotchy green."""
    col = _color(color)

    def fill(cv, r, c):
        shade = (0.5 + 0.7 * cv.mid[r, c]) * (0.85 + 0.3 * cv.fine[r, c])
        return col * shade[:, None]
    return fill


def painted(color) -> Surface:
    """Painted plaster: a nearly flat colour."""
    return flat(color, jitter=4.0)


# Palettes (RGB 0-255).
SKIES = [((70, 125, 205), (160, 200, 240)), ((95, 150, 220), (185, 215, 240)),
         ((150, 155, 165), (205, 205, 210)), ((90, 90, 170), (245, 170, 110))]
FOLIAGE = [(40, 110, 40), (60, 140, 50), (85, 150, 55), (35, 85, 40), (70, 120, 45)]
AUTUMN = [(200, 120, 30), (180, 70, 30)]
GRASS = [(70, 150, 50), (90, 160, 60), (60, 125, 45), (110, 160, 70)]
TRUNK = [(100, 65, 35), (85, 55, 30), (120, 80, 45)]
WOOD = [(150, 100, 60), (120, 80, 45), (180, 130, 80), (95, 60, 35), (200, 160, 110)]
BRICK = [(165, 60, 45), (140, 75, 50), (180, 90, 60)]
HOUSE_PAINT = [(235, 230, 215), (240, 220, 140), (150, 180, 210), (150, 190, 140),
               (220, 160, 160), (180, 180, 180)]
ROOF = [(120, 40, 35), (80, 60, 50), (70, 75, 90), (150, 70, 40), (45, 45, 50)]
DOOR = [(110, 70, 40), (150, 40, 40), (40, 70, 120), (50, 100, 60), (90, 60, 30)]
WINDOW_GLASS = [(150, 200, 230), (100, 140, 190), (230, 215, 130), (60, 80, 110)]
FRAME = [(240, 240, 235), (90, 60, 35), (60, 60, 60)]
CAR = [(200, 30, 30), (30, 60, 170), (240, 200, 40), (235, 235, 235), (30, 30, 30),
       (40, 130, 60), (230, 120, 30), (120, 120, 130)]
METAL_GREY = [(120, 120, 125), (160, 160, 165), (70, 70, 75), (40, 70, 50)]
FABRIC = [(180, 40, 50), (40, 80, 160), (60, 140, 90), (230, 190, 60), (150, 60, 150),
          (240, 150, 180), (235, 235, 230), (230, 130, 50)]
SHADE = [(245, 235, 205), (240, 240, 240), (230, 200, 160), (200, 220, 240), (240, 200, 200)]
WALL = [(230, 220, 200), (200, 215, 230), (230, 200, 200), (210, 230, 200), (240, 235, 220),
        (200, 190, 220), (240, 225, 170)]
TILE = [(235, 235, 230), (200, 210, 225), (225, 215, 190), (190, 60, 50), (80, 110, 160)]
ROAD = [(95, 95, 100), (115, 112, 110), (75, 75, 80)]
WATER = [(40, 90, 160), (30, 110, 150), (50, 80, 130)]
SAIL = [(240, 240, 235), (200, 40, 40), (240, 200, 60), (235, 235, 240)]
MOUNTAIN = [(110, 110, 125), (95, 110, 140), (110, 95, 70), (80, 100, 80)]
SUN = [(250, 220, 60), (250, 170, 40), (255, 240, 190)]
TEXTURE_COLORS = [(20, 20, 20), (30, 60, 190), (120, 75, 40), (40, 150, 50), (128, 128, 128),
                  (240, 140, 20), (245, 160, 190), (120, 40, 150), (210, 30, 30),
                  (245, 245, 245), (245, 225, 40)]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------
# Objects.  Each drawer takes the base point (cx, by: bottom centre, in image pixels) and a
# scale s (about 1 in the foreground) and paints the object with its parts and materials.
# ----------------------------------------------------------------------------------------

def _window(cv: Canvas, rng, y0, x0, y1, x1, obj: str) -> None:
    """A framed window of four panes (window at part level 1, pane at level 2)."""
    cv.paint(Rect(y0, x0, y1, x1), flat(_pick(rng, FRAME)), obj, "window", None, "wood")
    bar = max(1.5, 0.1 * (x1 - x0))
    ym, xm = (y0 + y1) / 2, (x0 + x1) / 2
    surf = glass(_pick(rng, WINDOW_GLASS))
    for a, b in ((y0 + bar, ym - bar / 2), (ym + bar / 2, y1 - bar)):
        for c, d in ((x0 + bar, xm - bar / 2), (xm + bar / 2, x1 - bar)):
            cv.paint(Rect(a, c, b, d), surf, obj, "window", "pane", "glass")


def draw_house(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    w = 110 * s * rng.uniform(0.85, 1.2)
    hb = w * rng.uniform(0.55, 0.8)
    hr = w * rng.uniform(0.3, 0.5)
    top = by - hb
    if rng.random() < 0.55:
        body, mat = brick(_pick(rng, BRICK), rng), "brick"
    else:
        body, mat = wood(_pick(rng, HOUSE_PAINT), vertical=rng.random() < 0.5, plank=7.0), "wood"
    cv.paint(Rect(top, cx - w / 2, by, cx + w / 2), body, "house", None, None, mat)
    roof = Polygon([(top + 1, cx - 0.58 * w), (top + 1, cx + 0.58 * w), (top - hr, cx)])
    if rng.random() < 0.6:
        cv.paint(roof, tile(_pick(rng, ROOF), size=6.0, grout=(60, 40, 35)), "house", "roof",
                 None, "tile")
    else:
        cv.paint(roof, flat(_pick(rng, ROOF)), "house", "roof")
    dw, dh = 0.2 * w, 0.55 * hb
    dx = cx + rng.uniform(-0.3, 0.3) * w
    cv.paint(Rect(by - dh, dx - dw / 2, by, dx + dw / 2), wood(_pick(rng, DOOR), vertical=True),
             "house", "door", None, "wood")
    ww, wh = 0.22 * w, 0.3 * hb
    slots = [cx - 0.28 * w, cx + 0.28 * w]
    for sx in slots if rng.random() < 0.7 else [slots[int(rng.integers(2))]]:
        _window(cv, rng, top + 0.1 * hb, sx - ww / 2, top + 0.1 * hb + wh, sx + ww / 2, "house")


def draw_tree(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    h = 140 * s * rng.uniform(0.8, 1.25)
    conifer = rng.random() < 0.3
    tw, th = max(3.0, 0.1 * h), (0.22 if conifer else 0.42) * h
    cv.paint(Rect(by - th, cx - tw / 2, by, cx + tw / 2), wood(_pick(rng, TRUNK), vertical=True),
             "tree", "trunk", None, "wood")
    color = _pick(rng, AUTUMN if rng.random() < 0.1 else FOLIAGE)
    if conifer:
        tiers = []
        for k in range(3):
            base = by - th - k * 0.22 * h + 4
            half = 0.3 * h * (1 - 0.25 * k)
            tiers.append(Polygon([(base, cx - half), (base, cx + half), (base - 0.4 * h, cx)]))
        crown: Shape = Union(tiers)
    else:
        r = 0.3 * h
        cy = by - th - 0.75 * r
        crown = Union([Ellipse(cy, cx, r, r * 1.05),
                       Ellipse(cy + 0.25 * r, cx - 0.6 * r, 0.7 * r, 0.75 * r),
                       Ellipse(cy + 0.25 * r, cx + 0.6 * r, 0.7 * r, 0.75 * r)])
    cv.paint(crown, foliage(color), "tree", "crown", None, "foliage")


def draw_car(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    w = 95 * s * rng.uniform(0.85, 1.15)
    r = 0.12 * w
    body_top = by - r - 0.2 * w
    paint = metal(_pick(rng, CAR))
    facing = 1 if rng.random() < 0.5 else -1
    cv.paint(Rect(body_top, cx - w / 2, by - 0.5 * r, cx + w / 2), paint, "car", None, None,
             "metal")
    cab_top = body_top - 0.2 * w
    back, front = cx - facing * 0.36 * w, cx + facing * 0.3 * w
    cabin = Polygon([(body_top + 1, back), (body_top + 1, front),
                     (cab_top, cx + facing * 0.12 * w), (cab_top, cx - facing * 0.24 * w)])
    cv.paint(cabin, paint, "car", None, None, "metal")
    inset = 0.035 * w
    glass_poly = Polygon([(body_top - inset * 0.5, back + facing * inset * 1.5),
                          (body_top - inset * 0.5, front - facing * inset * 1.8),
                          (cab_top + inset, cx + facing * 0.12 * w - facing * inset),
                          (cab_top + inset, cx - facing * 0.24 * w + facing * inset)])
    cv.paint(glass_poly, glass(_pick(rng, WINDOW_GLASS[:2])), "car", "window", "pane", "glass")
    pillar = cx - facing * 0.05 * w
    cv.paint(Rect(cab_top, pillar - 0.02 * w, body_top, pillar + 0.02 * w), paint, "car", "window",
             None, "metal")
    rim = metal(_pick(rng, METAL_GREY[:2]))
    for wx in (cx - 0.3 * w, cx + 0.3 * w):
        cv.paint(Ellipse(by - r, wx, r, r), flat((28, 28, 30)), "car", "wheel")
        cv.paint(Ellipse(by - r, wx, 0.5 * r, 0.5 * r), rim, "car", "wheel", "rim", "metal")


def draw_lamp(cv: Canvas, rng, cx: float, by: float, s: float, indoor: bool,
              on_table: bool = False) -> None:
    pole_surface = metal(_pick(rng, METAL_GREY))
    if not indoor:
        h = 150 * s * rng.uniform(0.85, 1.15)
        pw = max(2.5, 0.045 * h)
        cv.paint(Rect(by - h, cx - pw / 2, by, cx + pw / 2), pole_surface, "lamp", "pole", None,
                 "metal")
        head_y = by - h
        cv.paint(Ellipse(head_y + 0.1 * h, cx, 0.07 * h, 0.09 * h), flat((255, 235, 150)),
                 "lamp", "bulb", None, "glass")
        cv.paint(Polygon([(head_y - 0.04 * h, cx - 0.07 * h), (head_y - 0.04 * h, cx + 0.07 * h),
                          (head_y + 0.1 * h, cx + 0.17 * h), (head_y + 0.1 * h, cx - 0.17 * h)]),
                 metal(_pick(rng, METAL_GREY)), "lamp", "shade", None, "metal")
        return
    h = (60 if on_table else 135) * s * rng.uniform(0.85, 1.15)
    pw = max(2.0, 0.04 * h)
    shade_h = 0.32 * h if not on_table else 0.45 * h
    cv.paint(Ellipse(by - 0.03 * h, cx, 0.03 * h + 1, 0.16 * h), pole_surface, "lamp", None, None,
             "metal")
    cv.paint(Rect(by - h + shade_h * 0.5, cx - pw / 2, by, cx + pw / 2), pole_surface, "lamp",
             "pole", None, "metal")
    top_half, bottom_half = (0.15 * h, 0.27 * h) if not on_table else (0.22 * h, 0.42 * h)
    cv.paint(Polygon([(by - h, cx - top_half), (by - h, cx + top_half),
                      (by - h + shade_h, cx + bottom_half), (by - h + shade_h, cx - bottom_half)]),
             fabric(_pick(rng, SHADE)), "lamp", "shade", None, "fabric")


def draw_bed(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    w = 175 * s * rng.uniform(0.85, 1.15)
    lh = 0.06 * w
    frame_top = by - lh - 0.12 * w
    wood_surface = wood(_pick(rng, WOOD))
    x0, x1 = cx - w / 2, cx + w / 2
    for lx in (x0 + 0.02 * w, x1 - 0.07 * w):
        cv.paint(Rect(by - lh - 1, lx, by, lx + 0.05 * w), wood_surface, "bed", "leg", None, "wood")
    cv.paint(Rect(frame_top, x0, by - lh, x1), wood_surface, "bed", None, None, "wood")
    blanket_top = frame_top - 0.1 * w
    cv.paint(Rect(blanket_top, x0 + 0.02 * w, frame_top + 0.05 * w, x1 - 0.02 * w),
             fabric(_pick(rng, FABRIC), plaid=rng.random() < 0.3), "bed", None, None, "fabric")
    left = rng.random() < 0.5
    hx = x0 if left else x1 - 0.07 * w
    cv.paint(Rect(by - lh - 0.45 * w, hx, by - lh, hx + 0.07 * w), wood(_pick(rng, WOOD)), "bed",
             "headboard", None, "wood")
    px = (x0 + 0.2 * w) if left else (x1 - 0.2 * w)
    cv.paint(Ellipse(blanket_top - 0.01 * w, px, 0.05 * w, 0.11 * w),
             fabric(_pick(rng, SHADE[:3])), "bed", "pillow", None, "fabric")


def draw_table(cv: Canvas, rng, cx: float, by: float, s: float) -> tuple[float, float]:
    """Draw a table; return (y of the top surface, half width) for things standing on it."""
    w = 115 * s * rng.uniform(0.85, 1.2)
    ht = 0.5 * w
    metallic = rng.random() < 0.25
    surface = metal(_pick(rng, METAL_GREY)) if metallic else wood(_pick(rng, WOOD))
    mat = "metal" if metallic else "wood"
    legw = 0.06 * w
    for lx in (cx - w / 2 + 0.06 * w, cx + w / 2 - 0.06 * w - legw):
        cv.paint(Rect(by - ht, lx, by, lx + legw), surface, "table", "leg", None, mat)
    top = by - ht
    cv.paint(Rect(top, cx - w / 2, top + 0.07 * w, cx + w / 2), surface, "table", "top", None, mat)
    return top, w / 2


def draw_chair(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    h = 95 * s * rng.uniform(0.85, 1.15)
    seat_y = by - 0.45 * h
    metallic = rng.random() < 0.3
    frame = metal(_pick(rng, METAL_GREY)) if metallic else wood(_pick(rng, WOOD))
    mat = "metal" if metallic else "wood"
    half = 0.22 * h
    legw = max(2.0, 0.05 * h)
    for lx in (cx - half, cx + half - legw):
        cv.paint(Rect(seat_y, lx, by, lx + legw), frame, "chair", "leg", None, mat)
    side = cx - half if rng.random() < 0.5 else cx + half - 0.07 * h
    cv.paint(Rect(by - h, side, seat_y, side + 0.07 * h), frame, "chair", "back", None, mat)
    if rng.random() < 0.35:
        cv.paint(Rect(seat_y - 0.03 * h, cx - half, seat_y + 0.07 * h, cx + half),
                 fabric(_pick(rng, FABRIC)), "chair", "seat", None, "fabric")
    else:
        cv.paint(Rect(seat_y, cx - half, seat_y + 0.07 * h, cx + half), frame, "chair", "seat",
                 None, mat)


def draw_boat(cv: Canvas, rng, cx: float, by: float, s: float) -> None:
    w = 115 * s * rng.uniform(0.85, 1.2)
    deck = by - 0.2 * w
    facing = 1 if rng.random() < 0.5 else -1
    if rng.random() < 0.5:
        hull_surface, mat = wood(_pick(rng, WOOD)), "wood"
    else:
        hull_surface, mat = metal(_pick(rng, CAR)), "metal"
    if rng.random() < 0.7:
        mast_x = cx - facing * 0.05 * w
        cv.paint(Rect(deck - 0.75 * w, mast_x - 0.015 * w - 0.5, deck, mast_x + 0.015 * w + 0.5),
                 wood(_pick(rng, WOOD), vertical=True), "boat", "mast", None, "wood")
        sail = fabric(_pick(rng, SAIL))
        near, low = mast_x + facing * 0.03 * w, deck - 0.05 * w
        cv.paint(Polygon([(deck - 0.72 * w, near), (low, near), (low, mast_x + facing * 0.4 * w)]),
                 sail, "boat", "sail", None, "fabric")
        if rng.random() < 0.5:
            near = mast_x - facing * 0.03 * w
            cv.paint(Polygon([(deck - 0.6 * w, near), (low, near),
                              (low, mast_x - facing * 0.25 * w)]), sail, "boat", "sail", None,
                     "fabric")
    else:
        cab0, cab1 = sorted((cx - facing * 0.25 * w, cx + facing * 0.1 * w))
        cv.paint(Rect(deck - 0.18 * w, cab0, deck + 1, cab1), painted((235, 235, 235)), "boat",
                 None, None, "painted")
        _window(cv, rng, deck - 0.15 * w, cab0 + 0.05 * w, deck - 0.05 * w, cab1 - 0.05 * w, "boat")
    keel = sorted((cx + facing * 0.36 * w, cx - facing * 0.42 * w))
    cv.paint(Polygon([(deck, cx - w / 2), (deck, cx + w / 2), (by, keel[1]), (by, keel[0])]),
             hull_surface, "boat", "hull", None, mat)


def draw_sun(cv: Canvas, rng, horizon: float) -> None:
    r = rng.uniform(11, 22)
    cy = rng.uniform(r + 4, max(r + 5, horizon - r - 10))
    cv.paint(Ellipse(cy, rng.uniform(20, 204), r, r), flat(_pick(rng, SUN), 3.0), "sun")


def draw_cloud(cv: Canvas, rng, horizon: float) -> None:
    w = rng.uniform(45, 100)
    cy, cx = rng.uniform(12, max(14, horizon - 25)), rng.uniform(0, 224)
    blobs = [Ellipse(cy + rng.uniform(-0.08, 0.1) * w, cx + k * 0.22 * w,
                     rng.uniform(0.14, 0.22) * w, rng.uniform(0.18, 0.28) * w)
             for k in range(-2, 3)]
    cv.paint(Union(blobs), flat((245, 245, 245) if rng.random() < 0.7 else (205, 205, 212), 5.0),
             "cloud")


def draw_mountain(cv: Canvas, rng, horizon: float) -> None:
    w = rng.uniform(100, 220)
    peak = horizon - rng.uniform(0.3, 0.65) * horizon
    px = rng.uniform(0, 224)
    base = horizon + 2
    cv.paint(Polygon([(base, px - w / 2), (base, px + w / 2), (peak, px)]),
             flat(_pick(rng, MOUNTAIN), 8.0), "mountain")
    if rng.random() < 0.4:
        f = 0.25
        cv.paint(Polygon([(peak + f * (base - peak), px - f * w / 2),
                          (peak + f * (base - peak), px + f * w / 2), (peak, px)]),
                 flat((240, 240, 245), 4.0), "mountain")


# ----------------------------------------------------------------------------------------
# Scenes: a layout (sky/ground or wall/floor proportions, ground choices) and, per object
# kind, (probability of appearing, min count, max count).
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneSpec:
    layout: str                       # "outdoor", "harbor" or "indoor"
    horizon: tuple[float, float]      # fraction of the height where sky/wall ends
    ground: dict[str, float]          # ground (outdoor) or floor material (indoor) choices
    objects: dict[str, tuple[float, int, int]]
    mountains: float = 0.0
    wall_tile: float = 0.0


SCENE_SPECS: dict[str, SceneSpec] = {
    "street-s": SceneSpec("outdoor", (0.35, 0.55), {"road": 0.75, "grass": 0.25},
                          {"house": (0.9, 1, 3), "car": (0.85, 1, 3), "lamp": (0.6, 1, 2),
                           "tree": (0.35, 1, 2), "chair": (0.05, 1, 1)}, mountains=0.05),
    "park-s": SceneSpec("outdoor", (0.3, 0.5), {"grass": 0.7, "road": 0.3},
                        {"tree": (0.9, 1, 3), "lamp": (0.5, 1, 2), "table": (0.5, 1, 2),
                         "chair": (0.45, 1, 2), "car": (0.12, 1, 1), "house": (0.15, 1, 1),
                         "pond": (0.3, 1, 1)}, mountains=0.15),
    "forest-s": SceneSpec("outdoor", (0.25, 0.45), {"grass": 0.85, "road": 0.15},
                          {"tree": (1.0, 3, 7), "house": (0.1, 1, 1), "lamp": (0.05, 1, 1)},
                          mountains=0.5),
    "harbor-s": SceneSpec("harbor", (0.3, 0.5), {"road": 0.6, "grass": 0.4},
                          {"boat": (0.95, 1, 3), "house": (0.5, 1, 3), "lamp": (0.3, 1, 2),
                           "car": (0.1, 1, 1), "tree": (0.15, 1, 1)}, mountains=0.4),
    "bedroom-s": SceneSpec("indoor", (0.45, 0.68), {"wood": 0.5, "fabric": 0.35, "tile": 0.15},
                           {"bed": (0.95, 1, 1), "lamp": (0.7, 1, 2), "table": (0.35, 1, 1),
                            "chair": (0.2, 1, 1)}, wall_tile=0.1),
    "kitchen-s": SceneSpec("indoor", (0.45, 0.68), {"tile": 0.55, "wood": 0.35, "fabric": 0.1},
                           {"table": (0.9, 1, 2), "chair": (0.85, 1, 3), "lamp": (0.45, 1, 2),
                            "bed": (0.03, 1, 1)}, wall_tile=0.4),
}


def _choice(rng, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _placements(rng, spec: SceneSpec, kinds: Sequence[str], y_lo: float, y_hi: float
                ) -> list[tuple[float, float, str]]:
    """Base points (by, cx, kind) of the objects of `kinds` present, far ones first."""
    out = []
    for kind in kinds:
        p, lo, hi = spec.objects[kind]
        if rng.random() < p:
            for _ in range(int(rng.integers(lo, hi + 1))):
                out.append((float(rng.uniform(y_lo, y_hi)), float(rng.uniform(25, 199)), kind))
    return sorted(out)


def _paint_ground(cv: Canvas, rng, kind: str, y0: float, y1: float) -> None:
    area = Rect(y0, 0, y1, IMAGE_SIZE)
    if kind == "road":
        cv.paint(area, flat(_pick(rng, ROAD), 10.0), "road")
    else:
        cv.paint(area, grass(_pick(rng, GRASS)), "grass", None, None, "grass")


def _compose_outdoor(cv: Canvas, rng, spec: SceneSpec) -> None:
    S = IMAGE_SIZE
    yh = rng.uniform(*spec.horizon) * S
    top, bottom = _pick(rng, SKIES)
    cv.paint(Rect(0, 0, yh + 1, S), gradient(top, bottom, 0, yh), "sky")
    if rng.random() < 0.45:
        draw_sun(cv, rng, yh)
    for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.6 else 0):
        draw_cloud(cv, rng, yh)
    for _ in range(int(rng.integers(1, 3)) if rng.random() < spec.mountains else 0):
        draw_mountain(cv, rng, yh)
    if spec.layout == "harbor":
        shore = yh + rng.uniform(10, 28)
        _paint_ground(cv, rng, _choice(rng, spec.ground), yh, shore)
        cv.paint(Rect(shore, 0, S, S), water(_pick(rng, WATER)), "water", None, None, "water")
        on_land = [k for k in spec.objects if k != "boat"]
        land = _placements(rng, spec, on_land, shore - 3, shore + 2)
        sea = _placements(rng, spec, ["boat"], shore + 0.3 * (S - shore), S + 4)
        for by, cx, kind in land + sea:
            s = 0.55 if kind != "boat" else 0.6 + 0.5 * (by - shore) / (S - shore)
            _draw(cv, rng, kind, cx, by, s, indoor=False)
        return
    _paint_ground(cv, rng, _choice(rng, spec.ground), yh, S)
    if "pond" in spec.objects and rng.random() < spec.objects["pond"][0]:
        py = rng.uniform(yh + 0.3 * (S - yh), S - 10)
        cv.paint(Ellipse(py, rng.uniform(30, 194), rng.uniform(8, 22), rng.uniform(35, 75)),
                 water(_pick(rng, WATER)), "water", None, None, "water")
    kinds = [k for k in spec.objects if k != "pond"]
    for by, cx, kind in _placements(rng, spec, kinds, yh + 0.12 * (S - yh), S + 4):
        s = 0.5 + 0.65 * (by - yh) / (S - yh)
        _draw(cv, rng, kind, cx, by, s, indoor=False)


def _compose_indoor(cv: Canvas, rng, spec: SceneSpec) -> None:
    S = IMAGE_SIZE
    yf = rng.uniform(*spec.horizon) * S
    if rng.random() < spec.wall_tile:
        cv.paint(Rect(0, 0, yf + 1, S), tile(_pick(rng, TILE), size=rng.uniform(9, 16)), "wall",
                 None, None, "tile")
    else:
        cv.paint(Rect(0, 0, yf + 1, S), painted(_pick(rng, WALL)), "wall", None, None, "painted")
    floor = _choice(rng, spec.ground)
    if floor == "wood":
        surface = wood(_pick(rng, WOOD), plank=rng.uniform(9, 15))
    elif floor == "tile":
        surface = tile(_pick(rng, TILE), size=rng.uniform(12, 22))
    else:
        surface = fabric(_pick(rng, FABRIC), plaid=rng.random() < 0.2)
    cv.paint(Rect(yf, 0, S, S), surface, "floor", None, None, floor)
    items = _placements(rng, spec, list(spec.objects), yf + 0.15 * (S - yf), S + 2)
    lamps = [i for i, it in enumerate(items) if it[2] == "lamp"]
    # A lamp stands on a table half of the time when there is one.
    has_table = any(k == "table" for _, _, k in items)
    on_table = {i for i in lamps if rng.random() < 0.5} if has_table else set()
    for i, (by, cx, kind) in enumerate(items):
        if i in on_table:
            continue
        s = 0.65 + 0.5 * (by - yf) / (S - yf)
        if kind == "table":
            top, half = draw_table(cv, rng, cx, by, s)
            for _ in range(len(on_table)):
                draw_lamp(cv, rng, cx + rng.uniform(-0.5, 0.5) * half, top + 1, s, indoor=True,
                          on_table=True)
            on_table = set()
        else:
            _draw(cv, rng, kind, cx, by, s, indoor=True)


def _draw(cv: Canvas, rng, kind: str, cx: float, by: float, s: float, indoor: bool) -> None:
    if kind == "lamp":
        draw_lamp(cv, rng, cx, by, s, indoor=indoor)
    elif kind == "table":
        draw_table(cv, rng, cx, by, s)
    else:
        DRAWERS[kind](cv, rng, cx, by, s)


DRAWERS = {"house": draw_house, "tree": draw_tree, "car": draw_car, "bed": draw_bed,
           "chair": draw_chair, "boat": draw_boat}


# ----------------------------------------------------------------------------------------
# Textures: full-frame DTD-like patterns (boolean masks over the image).
# ----------------------------------------------------------------------------------------

def _texture_mask(name: str, rng, y: np.ndarray, x: np.ndarray, noise: np.ndarray,
                  sparse: bool) -> np.ndarray:
    """Foreground mask of one pattern on the image grid; `sparse` thins it for overlays."""
    theta = rng.uniform(0, np.pi)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    duty = 0.25 if sparse else 0.5
    p = rng.uniform(12, 28)
    if name == "striped":
        return (u % p) < duty * p
    if name == "dotted":
        p = rng.uniform(16, 30)
        shift = (np.floor(v / p) % 2) * p / 2 if rng.random() < 0.5 else 0.0
        du, dv = (u + shift) % p - p / 2, v % p - p / 2
        return du ** 2 + dv ** 2 < (rng.uniform(0.18, 0.3) * p) ** 2
    if name == "checkered":
        return ((np.floor(u / p) + np.floor(v / p)) % 2) == 0
    if name == "zigzagged":
        lam = rng.uniform(16, 36)
        tri = np.abs((u / lam) % 1.0 - 0.5) * 2
        return ((v + rng.uniform(0.4, 0.8) * lam * tri) % p) < duty * p
    if name == "grid":
        w = rng.uniform(2.0, 4.0)
        return ((u % p) < w) | ((v % p) < w)
    if name == "wavy":
        lam = rng.uniform(30, 70)
        return ((v + rng.uniform(4, 10) * np.sin(2 * np.pi * u / lam)) % p) < duty * p
    if name == "spiralled":
        cy, cx = rng.uniform(70, 154, size=2)
        radius = np.hypot(y - cy, x - cx)
        angle = np.arctan2(y - cy, x - cx)
        arms = int(rng.integers(1, 4))
        return ((arms * angle / (2 * np.pi) + radius / p) % 1.0) < duty
    if name == "marbled":
        return np.abs(np.sin(2 * np.pi * u / (3 * p) + 10 * noise)) < (0.12 if sparse else 0.2)
    raise ValueError(f"unknown texture {name!r}")


def _compose_texture(cv: Canvas, rng) -> list[int]:
    """Paint a full-frame texture image; return its image-level texture labels."""
    count = 2 if rng.random() < MULTI_TEXTURE_FRACTION else 1
    names = [TEXTURES[i] for i in rng.choice(len(TEXTURES), size=count, replace=False)]
    colors = [_color(TEXTURE_COLORS[i]) for i in rng.choice(len(TEXTURE_COLORS), 3, replace=False)]
    y = np.arange(IMAGE_SIZE, dtype=np.float32)[:, None] + 0.5
    x = np.arange(IMAGE_SIZE, dtype=np.float32)[None, :] + 0.5
    shade = (0.88 + 0.24 * cv.mid)[..., None]
    base = _texture_mask(names[0], rng, y, x, cv.coarse, sparse=False)
    cv.rgb[:] = np.where(base[..., None], colors[0], colors[1]) * shade
    if count == 2:
        over = _texture_mask(names[1], rng, y, x, cv.mid, sparse=True)
        cv.rgb[over] = colors[2] * shade[over]
    return [LABELS[n] for n in names]


# ----------------------------------------------------------------------------------------
# Colour names per label pixel.
# ----------------------------------------------------------------------------------------

def color_codes(rgb: np.ndarray) -> np.ndarray:
    """Name the colour of every pixel of an (H, W, 3) 0-255 image: 1 + its index in COLORS.

    Achromatic pixels are black, grey or white by brightness; the others are named by hue,
    with dark oranges and reds called brown and light reds and magentas pink.  The one colour
    rule: the toy world's ground truth (`color_labels`) and the colour namer of `netdissect
    segment --colors` (netdissect.data.segment.colors) both call it.
    """
    rgb = rgb.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    v = mx
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    d = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    hue = hue * 60.0
    code = {name: i for i, name in enumerate(COLORS, start=1)}
    name = np.full(rgb.shape[:2], code["grey-c"], dtype=np.int32)
    red = (hue < 12) | (hue >= 340)
    orange = (hue >= 12) & (hue < 42)
    yellow = (hue >= 42) & (hue < 70)
    green = (hue >= 70) & (hue < 170)
    blue = (hue >= 170) & (hue < 255)
    purple = (hue >= 255) & (hue < 290)
    magenta = (hue >= 290) & (hue < 340)
    rules = [
        (red, "red-c"), (red & (v > 0.75) & (s < 0.5), "pink-c"), (red & (v < 0.5), "brown-c"),
        (orange, "orange-c"), (orange & (v < 0.7), "brown-c"),
        (yellow, "yellow-c"), (yellow & (v < 0.55), "brown-c"),
        (green, "green-c"), (blue, "blue-c"), (purple, "purple-c"),
        (magenta, "pink-c"), (magenta & (v < 0.6), "purple-c"),
    ]
    for mask, label in rules:
        name[mask] = code[label]
    achromatic = s < 0.2
    name[achromatic] = code["grey-c"]
    name[achromatic & (v > 0.82)] = code["white-c"]
    name[(v < 0.2) | (achromatic & (v < 0.3))] = code["black-c"]
    return name


_COLOR_NUMBERS = np.array([0] + [LABELS[c] for c in COLORS], dtype=np.int32)


def color_labels(rgb: np.ndarray) -> np.ndarray:
    """Name the colour of every pixel of an (H, W, 3) 0-255 image: Broden color label numbers
    of the toy world (the rule of `color_codes`)."""
    return _COLOR_NUMBERS[color_codes(rgb)]


# ----------------------------------------------------------------------------------------
# One image: render, then write its files.
# ----------------------------------------------------------------------------------------

@dataclass
class RenderedImage:
    """One generated image with its label planes (by category) and image-level labels."""

    kind: str                                   # "scenes" or "textures" (the sub-folder)
    split: str
    rgb: np.ndarray                             # (224, 224, 3) uint8
    planes: dict[str, list[np.ndarray]] = field(default_factory=dict)
    image_labels: dict[str, list[int]] = field(default_factory=dict)


def render_image(seed: int, index: int) -> RenderedImage:
    """Render image `index` of the toy world with seed `seed` (pure: same inputs, same image)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    split = "val" if rng.random() < VAL_FRACTION else "train"
    cv = Canvas(rng)
    planes: dict[str, list[np.ndarray]] = {}
    if rng.random() < TEXTURE_FRACTION:
        kind, image_labels = "textures", {"texture": _compose_texture(cv, rng)}
    else:
        scene = SCENES[int(rng.integers(len(SCENES)))]
        spec = SCENE_SPECS[scene]
        (_compose_indoor if spec.layout == "indoor" else _compose_outdoor)(cv, rng, spec)
        kind, image_labels = "scenes", {"scene": [LABELS[scene]]}
        planes["object"] = [cv.planes["object"]]
        planes["part"] = [p for p in (cv.planes["part"], cv.planes["part2"]) if p.any()]
        planes["material"] = [cv.planes["material"]] if cv.planes["material"].any() else []
    lighting = np.float32(rng.uniform(0.88, 1.12))
    pixels = cv.rgb * lighting + 3.0 * rng.standard_normal(cv.rgb.shape, dtype=np.float32)
    rgb = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    small = rgb.reshape(LABEL_SIZE, 2, LABEL_SIZE, 2, 3).astype(np.float32).mean(axis=(1, 3))
    planes["color"] = [color_labels(small)]
    return RenderedImage(kind, split, rgb, planes, image_labels)


def _encode_plane(plane: np.ndarray) -> Image.Image:
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = plane % 256
    rgb[..., 1] = plane // 256
    return Image.fromarray(rgb, mode="RGB")


def _write_image(root: Path, seed: int, index: int) -> tuple[int, dict[str, str], np.ndarray]:
    """Render and write one image; return its index.csv row and per-category pixel counts.

    Counts are an (n_categories, L+1) int64 array: labelled pixels per label in each category,
    with an image-level label counting sh*sw pixels.
    """
    img = render_image(seed, index)
    stem = f"{img.kind}/{index:05d}"
    folder = root / "images" / img.kind
    Image.fromarray(img.rgb, mode="RGB").save(folder / f"{index:05d}.jpg", quality=90)
    row = {"image": f"{stem}.jpg", "split": img.split, "ih": str(IMAGE_SIZE),
           "iw": str(IMAGE_SIZE), "sh": str(LABEL_SIZE), "sw": str(LABEL_SIZE)}
    counts = np.zeros((len(CATEGORIES), NUM_LABELS + 1), dtype=np.int64)
    for ci, cat in enumerate(CATEGORIES):
        items = []
        planes = img.planes.get(cat, [])
        for level, plane in enumerate(planes, start=1):
            suffix = f"{cat}_{level}" if len(planes) > 1 or cat == "part" else cat
            name = f"{stem}_{suffix}.png"
            _encode_plane(plane).save(root / "images" / name, compress_level=3)
            items.append(name)
            counts[ci] += np.bincount(plane.ravel(), minlength=NUM_LABELS + 1)
        for number in img.image_labels.get(cat, []):
            items.append(str(number))
            counts[ci, number] += LABEL_SIZE * LABEL_SIZE
        row[cat] = ";".join(items)
    counts[:, 0] = 0
    return index, row, counts


def _write_image_star(args: tuple[str, int, int]) -> tuple[int, dict[str, str], np.ndarray]:
    root, seed, index = args
    return _write_image(Path(root), seed, index)


# ----------------------------------------------------------------------------------------
# The dataset files.
# ----------------------------------------------------------------------------------------

def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_metadata(root: Path, rows: list[dict[str, str]], counts: np.ndarray) -> None:
    """Write index.csv, label.csv, category.csv and c_<category>.csv from the per-image data."""
    _write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw"] + INDEX_COLUMNS,
               [[r[k] for k in ("image", "split", "ih", "iw", "sh", "sw")]
                + [r[c] for c in INDEX_COLUMNS] for r in rows])
    frequency = (counts > 0).sum(axis=0)                          # (cat, L+1) images
    coverage = counts.sum(axis=0) / float(LABEL_SIZE * LABEL_SIZE)  # (cat, L+1) whole images
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    label_rows = []
    for name, number in LABELS.items():
        cats = [c for c in CATEGORIES if name in CATEGORY_LABELS[c]]
        cats.sort(key=lambda c: -frequency[cat_index[c], number])
        label_rows.append([number, name,
                           ";".join(f"{c}({frequency[cat_index[c], number]})" for c in cats),
                           int(sum(frequency[cat_index[c], number] for c in cats)),
                           f"{sum(coverage[cat_index[c], number] for c in cats):.6f}",
                           SYNONYMS.get(name, "")])
    _write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
               label_rows)
    ordered = sorted(CATEGORIES, key=lambda c: min(LABELS[n] for n in CATEGORY_LABELS[c]))
    category_rows = []
    for cat in ordered:
        ci = cat_index[cat]
        numbers = [LABELS[n] for n in CATEGORY_LABELS[cat]]
        category_rows.append([cat, min(numbers), max(numbers), len(numbers),
                              int(frequency[ci, numbers].sum())])
        dense = sorted(numbers, key=lambda n: (-frequency[ci, n], -coverage[ci, n], n))
        names = {v: k for k, v in LABELS.items()}
        _write_csv(root / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"],
                   [[code, n, names[n], int(frequency[ci, n]), f"{coverage[ci, n]:.6f}"]
                    for code, n in enumerate(dense, start=1)])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
               category_rows)


def _manifest(images: int, seed: int) -> dict:
    return {"generator": "netdissect.data.toyworld", "version": FORMAT_VERSION,
            "images": int(images), "seed": int(seed), "image_size": IMAGE_SIZE,
            "label_size": LABEL_SIZE, "labels": NUM_LABELS,
            "categories": {c: len(v) for c, v in CATEGORY_LABELS.items()},
            "scenes": SCENES, "textures": TEXTURES}


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The parameters recorded in a toy world's toyworld.json, or None if absent or unreadable."""
    try:
        return json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(out: Path, images: int, seed: int) -> bool:
    m = read_manifest(out)
    return (m is not None and m.get("version") == FORMAT_VERSION and m.get("images") == images
            and m.get("seed") == seed and m.get("generator") == "netdissect.data.toyworld")


def _progress(it: Iterator, total: int, enabled: bool) -> Iterator:
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, total=total, desc="toy world", unit="img")


def generate_toyworld(out: str | os.PathLike, images: int = 2000, seed: int = 0,
                      workers: int | None = None, progress: bool = True) -> Path:
    """Generate a toy world of `images` images into the folder `out` and return its path.

    The world is written into a temporary sibling folder and renamed into place when
    complete (toyworld.json, written last, marks it complete).  An existing `out` is replaced
    only if it is empty or a toy world; anything else raises FileExistsError.  `workers`
    processes draw images in parallel (default: the CPU count, fewer for small worlds); the
    result is the same for any number of workers.
    """
    if images < 1:
        raise SettingsError(f"--images must be at least 1, got {images}")
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None)):
        raise OutputError(f"{out}: exists and is not a toy world; remove it or choose "
                              "another output folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for kind in ("scenes", "textures"):
            (tmp / "images" / kind).mkdir(parents=True)
        if workers is None:
            workers = min(os.cpu_count() or 1, max(1, images // 40))
        jobs = [(str(tmp), seed, i) for i in range(images)]
        results: list = []
        if workers <= 1:
            results = list(_progress(map(_write_image_star, jobs), images, progress))
        else:
            with get_context().Pool(workers) as pool:
                it = pool.imap_unordered(_write_image_star, jobs, chunksize=8)
                results = list(_progress(it, images, progress))
        results.sort(key=lambda r: r[0])
        counts = np.stack([r[2] for r in results])
        _write_metadata(tmp, [r[1] for r in results], counts)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(images, seed), indent=1) + "\n",
                                    encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "world")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure_toyworld(out: str | os.PathLike, images: int = 2000, seed: int = 0,
                    workers: int | None = None, progress: bool = True) -> Path:
    """Return `out` holding a toy world of these parameters, generating it only if needed."""
    out = Path(out).expanduser().absolute()
    if _is_complete(out, images, seed):
        return out
    return generate_toyworld(out, images=images, seed=seed, workers=workers, progress=progress)
