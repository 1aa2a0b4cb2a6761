"""Beam search for each unit's best formula, from exact counts (docs/method.md section 13).

Every candidate `F OR L`, `F AND L`, `F AND NOT L` of a formula F in a unit's beam is scored
for every label L at once.  Besides the counts known before the step (|U|, |L|, |U AND L|,
and |F|, |U AND F| of the beam), only two new counts are needed per (F, L):
|F AND L| over the whole dataset and |U AND F AND L| over the unit's mask.  Both are sums
over the atoms of `atoms.AtomTable` where F holds, computed for all labels in one sparse
product (exact: integer sums below 2**53 in float64) and one `index_add_`.

    OR:      |U AND (F OR L)|  = |U AND F| + |U AND L| - |U AND F AND L|;  |F OR L| = |F| + |L| - |F AND L|
    AND:     |U AND (F AND L)| = |U AND F AND L|;                          |F AND L|
    AND NOT: |U AND F AND NOT L| = |U AND F| - |U AND F AND L|;           |F AND NOT L| = |F| - |F AND L|

IoU = |U AND G| / (|U| + |G| - |U AND G|), ranked after multiplying by penalty**(length - 1);
ties go to the shorter formula, then to the smaller text.  The selection of the beam is a
short loop over units on a few dozen candidates each; all counting is vectorised.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from netdissect.compositional.atoms import AtomTable
from netdissect.compositional.formula import OP_LENGTH, OPS, Formula

__all__ = ["Explanation", "beam_search", "Counts"]

# Formulas whose truth over all atoms is held at once: about this many booleans.
TRUTH_BUDGET = 1 << 27
# Unit mask entries expanded at once when counting |U AND F AND L|.
ENTRY_BUDGET = 1 << 24


@dataclass
class Explanation:
    """One unit's result: the best formula (None: nothing overlaps the unit), its IoU and its
    ranking score, the best single label, and the best IoU with at most n leaves (n = 1..)."""

    unit: int  # 0-based
    formula: Formula | None
    iou: float
    score: float
    single: int  # label number, 0 for none
    single_iou: float
    iou_by_length: list[float] = field(default_factory=list)


@dataclass
class _Item:
    """A formula of a unit's beam with its counts: inter = |U AND F|, size = |F|."""

    formula: Formula
    inter: int
    size: int
    iou: float
    score: float


class Counts:
    """The per-label and per-unit counts of an `AtomTable`, for a set of candidate labels."""

    def __init__(self, table: AtomTable, units: int, labels: torch.Tensor):
        device = table.atoms.device
        self.table = table
        self.units = units
        self.labels = labels.to(device)  # (nL,) label numbers; column j of every matrix
        nL, nA = len(labels), len(table.pixels)
        top = max(int(table.atoms.max()) if table.atoms.numel() else 0, int(labels.max()) if nL else 0)
        lut = torch.full((top + 1,), -1, dtype=torch.int64, device=device)
        lut[self.labels] = torch.arange(nL, device=device)
        lut[0] = -1
        self.lut = lut
        self.columns = lut[table.atoms]  # (nA, K) column of each atom's labels, -1: none
        rows, slots = torch.nonzero(self.columns >= 0, as_tuple=True)
        cols = self.columns[rows, slots]
        self.label_pixels = torch.zeros(nL, dtype=torch.int64, device=device).index_add_(
            0, cols, table.pixels[rows])
        # label -> its atoms (to build a label's truth over atoms)
        order = torch.argsort(cols, stable=True)
        self.label_atoms = rows[order]
        self.label_ptr = _ptr(torch.bincount(cols, minlength=nL))
        # |F AND L| for all L = W^T (truth * pixels): W (nL x nA) holds each atom's labels
        values = table.pixels[rows].to(torch.float64)
        self.weights = torch.sparse_coo_tensor(torch.stack([cols, rows]), values, (nL, nA),
                                               check_invariants=False).coalesce()
        # per unit: its mask pixels, its atoms (CSR), and |U AND L|
        self.unit_pixels = torch.zeros(units, dtype=torch.int64, device=device).index_add_(
            0, table.unit, table.count)
        self.unit_ptr = _ptr(torch.bincount(table.unit, minlength=units))
        self.unit_label = self._unit_label_counts(table.unit, table.atom, table.count)

    def _unit_label_counts(self, unit, atom, count) -> torch.Tensor:
        nL = len(self.labels)
        cols = self.columns[atom]
        valid = cols >= 0
        out = torch.zeros(self.units * nL, dtype=torch.int64, device=cols.device)
        flat = (unit[:, None] * nL + cols)[valid]
        out.index_add_(0, flat, count[:, None].expand_as(cols)[valid])
        return out.reshape(self.units, nL)

    def member(self, label: int) -> torch.Tensor:
        """(nA,) bool: the atoms holding `label`."""
        truth = torch.zeros(len(self.table.pixels), dtype=torch.bool, device=self.lut.device)
        j = int(self.lut[label]) if label < len(self.lut) else -1
        if j >= 0:
            truth[self.label_atoms[self.label_ptr[j]:self.label_ptr[j + 1]]] = True
        return truth

    def formula_label_counts(self, truths: torch.Tensor) -> torch.Tensor:
        """|F AND L| (c, nL) int64 for formulas given by their truth (c, nA) bool."""
        product = torch.sparse.mm(self.weights, truths.T.to(torch.float64))
        return product.T.round().to(torch.int64)

    def unit_formula_label_counts(self, units: torch.Tensor, formulas: torch.Tensor,
                                  truths: torch.Tensor) -> torch.Tensor:
        """|U AND F AND L| (p, nL) int64 for pairs (units[i], the formula whose truth over the
        atoms is truths[formulas[i]])."""
        nL = len(self.labels)
        out = torch.zeros(len(units) * nL, dtype=torch.int64, device=truths.device)
        starts, lengths = self.unit_ptr[units], self.unit_ptr[units + 1] - self.unit_ptr[units]
        total = int(lengths.sum())
        if total == 0:
            return out.reshape(len(units), nL)
        pair = torch.repeat_interleave(torch.arange(len(units), device=truths.device), lengths)
        offset = torch.arange(total, device=truths.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths)
        entry = starts[pair] + offset
        atom = self.table.atom[entry]
        hold = truths[formulas[pair], atom]
        pair, atom, count = pair[hold], atom[hold], self.table.count[entry[hold]]
        cols = self.columns[atom]
        valid = cols >= 0
        out.index_add_(0, (pair[:, None] * nL + cols)[valid], count[:, None].expand_as(cols)[valid])
        return out.reshape(len(units), nL)


def _ptr(counts: torch.Tensor) -> torch.Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _iou(inter: torch.Tensor, unit: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    union = (unit + size - inter).to(torch.float64)
    return torch.where(union > 0, inter.to(torch.float64) / union.clamp(min=1), torch.zeros_like(union))


def beam_search(table: AtomTable, units: int, labels: torch.Tensor, names: list[str], *,
                length: int = 3, beam: int = 5, penalty: float = 1.0) -> list[Explanation]:
    """Each unit's best formula of at most `length` leaves (`length - 1` beam steps) over the
    candidate `labels` (label numbers; `names[number]` is the text of a label)."""
    counts = Counts(table, units, labels)
    nL = len(counts.labels)
    label_numbers = counts.labels.tolist()
    # Text order among candidates that differ only by their last label: name + ")".
    label_rank = _rank([names[n] + ")" for n in label_numbers])
    beams, results = _primitives(counts, names, beam, _rank([names[n] for n in label_numbers]))
    history = [[b[0].iou if b else 0.0] for b in beams]
    for _ in range(length - 1):
        beams = _step(counts, beams, names, beam, penalty, label_rank)
        for u, b in enumerate(beams):
            history[u].append(b[0].iou if b else 0.0)
    for u, b in enumerate(beams):
        results[u].iou_by_length = history[u]
        if b:
            results[u].formula, results[u].iou, results[u].score = b[0].formula, b[0].iou, b[0].score
    return results


def _rank(texts: list[str]) -> torch.Tensor:
    """The position of each text in sorted order."""
    rank = torch.empty(len(texts), dtype=torch.int64)
    rank[sorted(range(len(texts)), key=texts.__getitem__)] = torch.arange(len(texts))
    return rank


def _primitives(counts: Counts, names, beam, name_rank):
    ious = _iou(counts.unit_label, counts.unit_pixels[:, None], counts.label_pixels[None])
    ious = torch.where(ious > 0, ious, torch.full_like(ious, -1.0)).cpu()
    unit_label, label_pixels = counts.unit_label.cpu(), counts.label_pixels.cpu()
    numbers = counts.labels.tolist()
    beams, results = [], []
    for u in range(counts.units):
        chosen = _select(ious[u], beam, lambda c: 1, lambda c: names[numbers[c]],
                         lambda cs: (name_rank[cs], torch.zeros_like(cs)))
        items = [_Item(Formula(numbers[j]), int(unit_label[u, j]), int(label_pixels[j]),
                       float(ious[u, j]), float(ious[u, j])) for j in chosen]
        beams.append(items)
        best = items[0] if items else None
        results.append(Explanation(u, best.formula if best else None, best.iou if best else 0.0,
                                   best.score if best else 0.0,
                                   best.formula.first if best else 0, best.iou if best else 0.0))
    return beams, results


def _step(counts: Counts, beams: list[list[_Item]], names, beam, penalty, label_rank):
    """One beam step for every unit: score all extensions, keep the best `beam` per unit."""
    nL = len(counts.labels)
    device = counts.lut.device
    formulas = list(dict.fromkeys(item.formula for b in beams for item in b))
    index = {f: i for i, f in enumerate(formulas)}
    pairs = [(u, index[item.formula]) for u, b in enumerate(beams) for item in b]
    inter_new = torch.zeros((len(pairs), 3, nL), dtype=torch.int64)
    size_new = torch.zeros((len(pairs), 3, nL), dtype=torch.int64)
    nA = max(1, len(counts.table.pixels))
    chunk = max(1, TRUTH_BUDGET // nA)
    pair_unit = torch.tensor([u for u, _ in pairs], dtype=torch.int64)
    pair_formula = torch.tensor([f for _, f in pairs], dtype=torch.int64)
    parent = [item for b in beams for item in b]  # the formula each pair extends
    for start in range(0, len(formulas), chunk):
        truths = torch.stack([f.evaluate(counts.member) for f in formulas[start:start + chunk]])
        fl = counts.formula_label_counts(truths).cpu()  # |F AND L|
        selected = torch.nonzero((pair_formula >= start) & (pair_formula < start + chunk)).flatten()
        for part in _entry_chunks(counts, pair_unit[selected]):
            p = selected[part]
            ufl = counts.unit_formula_label_counts(pair_unit[p].to(device),
                                                   (pair_formula[p] - start).to(device), truths).cpu()
            f_size = torch.tensor([parent[int(i)].size for i in p], dtype=torch.int64)[:, None]
            uf = torch.tensor([parent[int(i)].inter for i in p], dtype=torch.int64)[:, None]
            ul = counts.unit_label.cpu()[pair_unit[p]]
            lp = counts.label_pixels.cpu()[None]
            flp = fl[pair_formula[p] - start]
            inter_new[p, 0], size_new[p, 0] = uf + ul - ufl, f_size + lp - flp  # OR
            inter_new[p, 1], size_new[p, 1] = ufl, flp  # AND
            inter_new[p, 2], size_new[p, 2] = uf - ufl, f_size - flp  # AND NOT
    unit_pixels = counts.unit_pixels.cpu()
    iou_new = _iou(inter_new, unit_pixels[pair_unit][:, None, None], size_new)
    op_length = torch.tensor([OP_LENGTH[op] for op in OPS], dtype=torch.int64)
    numbers = counts.labels.tolist()
    new_beams = []
    first_pair = 0
    for u, old in enumerate(beams):
        mine = range(first_pair, first_pair + len(old))
        first_pair += len(old)
        if not old:
            new_beams.append([])
            continue
        lengths = torch.tensor([old[i].formula.length for i in range(len(old))])[:, None, None] + op_length[None, :, None]
        scores = iou_new[mine.start:mine.stop] * penalty ** (lengths - 1).to(torch.float64)
        _drop_repeats(scores, old, counts)
        flat = scores.reshape(-1)
        n_old = len(old)
        every = torch.cat([torch.tensor([it.score for it in old], dtype=torch.float64), flat])

        def decode(c, old=old):
            i, rest = divmod(c - n_old, 3 * nL)
            o, j = divmod(rest, nL)
            return i, o, j

        def length_of(c, old=old):
            if c < n_old:
                return old[c].formula.length
            i, o, _ = decode(c)
            return old[i].formula.length + OP_LENGTH[OPS[o]]

        def text_of(c, old=old):
            if c < n_old:
                return old[c].formula.text(names)
            i, o, j = decode(c)
            return old[i].formula.extend(OPS[o], numbers[j]).text(names)

        def rank_of(cs: torch.Tensor, n_old=n_old) -> torch.Tensor:
            # within one parent and one operator, text order is label order; group by both
            group = torch.where(cs < n_old, -1 - cs, (cs - n_old) // nL)
            new = cs >= n_old
            return torch.where(new, label_rank[(cs - n_old).clamp(min=0) % nL], 0), group

        chosen = _select(every, beam, length_of, text_of, rank_of)
        items = []
        for c in chosen:
            if c < n_old:
                items.append(old[c])
                continue
            i, o, j = decode(c)
            p = mine.start + i
            items.append(_Item(old[i].formula.extend(OPS[o], numbers[j]), int(inter_new[p, o, j]),
                               int(size_new[p, o, j]), float(iou_new[p, o, j]), float(flat[c - n_old])))
        new_beams.append(items)
    return new_beams


def _entry_chunks(counts: Counts, units: torch.Tensor):
    """Split pairs (by their units) so that each part expands at most ENTRY_BUDGET entries."""
    lengths = (counts.unit_ptr[1:] - counts.unit_ptr[:-1]).cpu()[units]
    start, total = 0, 0
    for i, n in enumerate(lengths.tolist()):
        if total and total + n > ENTRY_BUDGET:
            yield torch.arange(start, i)
            start, total = i, 0
        total += n
    if start < len(units):
        yield torch.arange(start, len(units))


def _drop_repeats(scores: torch.Tensor, old: list[_Item], counts: Counts) -> None:
    """A candidate equal to a formula already in the beam is not a new candidate."""
    where = {item.formula: i for i, item in enumerate(old)}
    for item in old:
        f = item.formula
        if f.steps:
            parent = Formula(f.first, f.steps[:-1])
            if parent in where:
                op, label = f.steps[-1]
                j = int(counts.lut[label])
                scores[where[parent], OPS.index(op), j] = -1.0


def _select(scores: torch.Tensor, beam: int, length_of, text_of, rank_of) -> list[int]:
    """The `beam` best candidates by (score desc, length asc, text asc), best first.

    Candidates with a score < 0 are never chosen (a primitive with IoU 0, a repeat).  Ties
    at the cut are resolved by length, then by text: `rank_of(cs)` gives (rank, group) such
    that within a group text order equals rank order, so only the few smallest of each group
    need their text built.
    """
    valid = int((scores >= 0).sum())
    if valid == 0:
        return []
    k = min(beam, valid)
    cut = float(torch.topk(scores, k).values[-1])
    sure = torch.nonzero(scores > cut).flatten().tolist()
    tied = torch.nonzero(scores == cut).flatten()
    need = k - len(sure)
    if len(tied) > need:
        tied = _smallest_ties(tied, need, length_of, text_of, rank_of)
    chosen = sure + tied.tolist()[:need]
    key = {c: (-float(scores[c]), length_of(c), text_of(c)) for c in chosen}
    return sorted(chosen, key=key.__getitem__)


def _smallest_ties(tied: torch.Tensor, need: int, length_of, text_of, rank_of) -> torch.Tensor:
    """Among candidates of equal score, the `need` smallest by (length, text)."""
    rank, group = rank_of(tied)
    keep = []
    for g in torch.unique(group).tolist():
        members = tied[group == g]
        order = torch.argsort(rank[group == g], stable=True)[:need]
        keep.append(members[order])
    few = torch.cat(keep).tolist()
    few.sort(key=lambda c: (length_of(c), text_of(c)))
    return torch.tensor(few[:need], dtype=torch.int64)
