"""The exact counts behind every formula's IoU, gathered in one pass (docs/method.md section 13).

Every pixel of the dataset (at the label resolution) carries a set of labels: the labels of
its planes plus the image-level labels of its image.  Pixels with the same set are
interchangeable for any formula, so they are counted together as one *atom*: a sorted row
of label numbers (0-padded) and how many pixels have it.  A dataset of millions of pixels
has a few thousand to a few hundred thousand atoms.  For each unit the pass also counts how
many of its mask pixels fall on each atom.  Every count a formula's IoU needs is then a sum
over atoms:

    |F| = sum over atoms a where F(a) of pixels(a)
    |U AND F| = sum over atoms a where F(a) of unit_pixels(U, a)

`ConceptAtoms` is a statistic like those of `netdissect.stats`: `update` per batch, `merge`,
`state_dict` / `load_state_dict`; its int64 counts make any split of the data exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from netdissect.stats.labelsets import pixel_label_sets, unique_rows
from netdissect.stats.tally import unit_masks

__all__ = ["ConceptAtoms", "AtomTable"]

# Merge the per-batch tables into one when they hold more rows than this.
CONSOLIDATE_ROWS = 1 << 21


@dataclass
class AtomTable:
    """The counts of one layer, consolidated.

    atoms (A, K) int64: each atom's labels, ascending, 0-padded on the left;
    pixels (A,) int64: pixels with exactly that label set;
    unit, atom, count (E,) int64: unit `unit[e]` has `count[e]` mask pixels on atom `atom[e]`,
    sorted by unit then atom.
    """

    atoms: torch.Tensor
    pixels: torch.Tensor
    unit: torch.Tensor
    atom: torch.Tensor
    count: torch.Tensor


def _pad_left(rows: torch.Tensor, width: int) -> torch.Tensor:
    if rows.shape[1] == width:
        return rows
    return torch.cat([rows.new_zeros((rows.shape[0], width - rows.shape[1])), rows], dim=1)


class ConceptAtoms:
    """Atoms of the images seen, and each unit's mask pixels per atom, for one layer."""

    def __init__(self, units: int, thresholds: torch.Tensor, device: torch.device | str = "cpu"):
        self.units = units
        self.thresholds = thresholds.to(device)
        self.device = torch.device(device)
        self.images = 0
        self._rows: list[torch.Tensor] = []  # atom rows of each part, not yet merged
        self._pixels: list[torch.Tensor] = []
        self._entries: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # unit, atom, count
        self._size = 0  # rows in the parts

    def update(self, activations: torch.Tensor, planes: torch.Tensor, image_labels: torch.Tensor,
               sets: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """One batch: activations (B, units, h, w), planes (B, P, sh, sw), image_labels (B, M);
        `sets`: `pixel_label_sets(planes, image_labels)` when the caller has it (layers share it)."""
        planes = planes.to(self.device)
        rows, inverse = sets if sets is not None else pixel_label_sets(planes, image_labels.to(self.device))
        pixels = torch.bincount(inverse, minlength=len(rows))
        per_image = planes.shape[-2] * planes.shape[-1]
        units, atoms, counts = [], [], []
        for b, k, mask in unit_masks(activations, self.thresholds, planes.shape[-2:], self.device):
            i, p = torch.nonzero(mask, as_tuple=True)
            key = k[i] * len(rows) + inverse[b[i] * per_image + p]
            key, count = torch.unique(key, return_counts=True)
            units.append(key // len(rows))
            atoms.append(key % len(rows))
            counts.append(count)
        self.images += planes.shape[0]
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._add(rows, pixels, (torch.cat(units) if units else empty,
                                 torch.cat(atoms) if atoms else empty,
                                 torch.cat(counts) if counts else empty))

    def _add(self, rows, pixels, entries) -> None:
        unit, atom, count = entries
        self._entries.append((unit, atom + self._size, count))
        self._rows.append(rows)
        self._pixels.append(pixels)
        self._size += len(rows)
        if self._size > CONSOLIDATE_ROWS:
            self._consolidate()

    def _consolidate(self) -> None:
        """Merge the parts into one table: equal atoms become one, their counts summed."""
        if len(self._rows) <= 1:
            return
        width = max(r.shape[1] for r in self._rows)
        rows = torch.cat([_pad_left(r, width) for r in self._rows])
        pixels = torch.cat(self._pixels)
        unit = torch.cat([e[0] for e in self._entries])
        atom = torch.cat([e[1] for e in self._entries])
        count = torch.cat([e[2] for e in self._entries])
        if width:
            rows, inverse = unique_rows(rows)
        else:
            rows, inverse = rows[:1], torch.zeros(len(rows), dtype=torch.int64, device=rows.device)
        pixels = torch.zeros(len(rows), dtype=torch.int64, device=rows.device).index_add_(0, inverse, pixels)
        key, where = torch.unique(unit * len(rows) + inverse[atom], return_inverse=True)
        count = torch.zeros(len(key), dtype=torch.int64, device=rows.device).index_add_(0, where, count)
        self._rows, self._pixels = [rows], [pixels]
        self._entries = [(key // len(rows), key % len(rows), count)]
        self._size = len(rows)

    def table(self) -> AtomTable:
        """Everything seen so far, consolidated (atoms in ascending row order)."""
        if not self._rows:
            z = torch.zeros(0, dtype=torch.int64, device=self.device)
            return AtomTable(torch.zeros((0, 0), dtype=torch.int64, device=self.device), z, z, z, z)
        self._rows.append(self._rows[0][:0])  # forces one consolidation, which also sorts
        self._pixels.append(self._pixels[0][:0])
        empty = self._pixels[0][:0]
        self._entries.append((empty, empty, empty))
        self._consolidate()
        unit, atom, count = self._entries[0]
        return AtomTable(self._rows[0], self._pixels[0], unit, atom, count)

    # -- merging and saving ---------------------------------------------------------------
    def merge(self, other: "ConceptAtoms") -> None:
        t = other.table()
        self._add(t.atoms.to(self.device), t.pixels.to(self.device),
                  (t.unit.to(self.device), t.atom.to(self.device), t.count.to(self.device)))
        self.images += other.images

    def state_dict(self) -> dict:
        t = self.table()
        return {"atoms": t.atoms.cpu(), "pixels": t.pixels.cpu(), "unit": t.unit.cpu(),
                "atom": t.atom.cpu(), "count": t.count.cpu(), "images": self.images,
                "thresholds": self.thresholds.cpu()}

    def load_state_dict(self, state: dict) -> None:
        d = self.device
        self.thresholds = state["thresholds"].to(d)
        self._rows, self._pixels, self._entries, self._size = [], [], [], 0
        self._add(state["atoms"].to(d), state["pixels"].to(d),
                  (state["unit"].to(d), state["atom"].to(d), state["count"].to(d)))
        self.images = int(state["images"])
