"""Beam search for each unit's best formula, from exact counts (docs/method.md section 13).

Every candidate `F OR L`, `F AND L`, `F AND NOT L` of a formula F in a unit's beam is scored
for every label L at once.  Besides the counts known before the step (|U|, |L|, |U AND L|,
and |F|, |U AND F| of the beam), only two new counts are needed per (F, L):
|F AND L| over the whole dataset and |U AND F AND L| over the unit's mask.  Both are int64
sums over the atoms of `atoms.AtomTable` where F holds (few, for most formulas), each one
`index_add_` for all labels at once.

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
        nL = len(labels)
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
        """|F AND L| (c, nL) int64 for formulas given by their truth (c, nA) bool: a sum over
        the atoms where each formula holds (few, for most formulas), for all labels at once."""
        nL = len(self.labels)
        formula, atom = torch.nonzero(truths, as_tuple=True)
        cols = self.columns[atom]
        valid = cols >= 0
        out = torch.zeros(truths.shape[0] * nL, dtype=torch.int64, device=truths.device)
        out.index_add_(0, (formula[:, None] * nL + cols)[valid],
                       self.table.pixels[atom][:, None].expand_as(cols)[valid])
        return out.reshape(truths.shape[0], nL)

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
    inter, size = _extension_counts(counts, beams)
    pair_unit = torch.tensor([u for u, b in enumerate(beams) for _ in b], dtype=torch.int64)
    ious = _iou(inter, counts.unit_pixels.cpu()[pair_unit][:, None, None], size)
    new_beams, first = [], 0
    for old in beams:
        mine = slice(first, first + len(old))
        first += len(old)
        candidates = _Extensions(old, ious[mine], penalty, counts, names, label_rank)
        chosen = _select(candidates.scores, beam, candidates.length, candidates.text, candidates.rank)
        new_beams.append([candidates.item(c, inter[mine], size[mine]) for c in chosen])
    return new_beams


def _extension_counts(counts: Counts, beams: list[list[_Item]]) -> tuple[torch.Tensor, torch.Tensor]:
    """For every (unit, beam formula F) pair, in beam order, and every op and label L:
    |U AND G| and |G| of the candidate G = F op L, (pairs, 3, nL) int64 each."""
    nL = len(counts.labels)
    device = counts.lut.device
    parents = [item for b in beams for item in b]
    formulas = list(dict.fromkeys(item.formula for item in parents))
    index = {f: i for i, f in enumerate(formulas)}
    pair_unit = torch.tensor([u for u, b in enumerate(beams) for _ in b], dtype=torch.int64)
    pair_formula = torch.tensor([index[item.formula] for item in parents], dtype=torch.int64)
    parent_size = torch.tensor([item.size for item in parents], dtype=torch.int64)[:, None]
    parent_inter = torch.tensor([item.inter for item in parents], dtype=torch.int64)[:, None]
    unit_label, label_pixels = counts.unit_label.cpu(), counts.label_pixels.cpu()[None]
    inter = torch.zeros((len(parents), 3, nL), dtype=torch.int64)
    size = torch.zeros((len(parents), 3, nL), dtype=torch.int64)
    chunk = max(1, TRUTH_BUDGET // max(1, len(counts.table.pixels)))
    for start in range(0, len(formulas), chunk):
        truths = torch.stack([f.evaluate(counts.member) for f in formulas[start:start + chunk]])
        fl_all = counts.formula_label_counts(truths).cpu()  # |F AND L|
        selected = torch.nonzero((pair_formula >= start) & (pair_formula < start + chunk)).flatten()
        for part in _entry_chunks(counts, pair_unit[selected]):
            p = selected[part]
            ufl = counts.unit_formula_label_counts(pair_unit[p].to(device),
                                                   (pair_formula[p] - start).to(device), truths).cpu()
            f, uf, ul, fl = parent_size[p], parent_inter[p], unit_label[pair_unit[p]], fl_all[pair_formula[p] - start]
            inter[p, 0], size[p, 0] = uf + ul - ufl, f + label_pixels - fl  # OR
            inter[p, 1], size[p, 1] = ufl, fl  # AND
            inter[p, 2], size[p, 2] = uf - ufl, f - fl  # AND NOT
    return inter, size


class _Extensions:
    """One unit's candidates of a step: its beam (`old`, candidates 0..n-1), then every
    extension (parent i, op o, label j) at n + (i*3 + o)*nL + j."""

    def __init__(self, old: list[_Item], ious: torch.Tensor, penalty: float, counts: Counts,
                 names: list[str], label_rank: torch.Tensor):
        self.old, self.ious, self.names, self.label_rank = old, ious, names, label_rank
        self.numbers = counts.labels.tolist()
        self.nL = len(self.numbers)
        op_length = torch.tensor([OP_LENGTH[op] for op in OPS], dtype=torch.int64)
        lengths = torch.tensor([it.formula.length for it in old], dtype=torch.int64)[:, None, None] + op_length[None, :, None]
        scores = ious * penalty ** (lengths - 1).to(torch.float64)
        self._drop_repeats(scores, counts)
        self.new_scores = scores.reshape(-1)
        self.scores = torch.cat([torch.tensor([it.score for it in old], dtype=torch.float64), self.new_scores])

    def _drop_repeats(self, scores: torch.Tensor, counts: Counts) -> None:
        """A candidate equal to a formula already in the beam is not a new candidate."""
        where = {item.formula: i for i, item in enumerate(self.old)}
        for item in self.old:
            f = item.formula
            parent = Formula(f.first, f.steps[:-1])
            if f.steps and parent in where:
                op, label = f.steps[-1]
                scores[where[parent], OPS.index(op), int(counts.lut[label])] = -1.0

    def decode(self, c: int) -> tuple[int, int, int]:
        i, rest = divmod(c - len(self.old), 3 * self.nL)
        return (i, *divmod(rest, self.nL))

    def formula(self, c: int) -> Formula:
        if c < len(self.old):
            return self.old[c].formula
        i, o, j = self.decode(c)
        return self.old[i].formula.extend(OPS[o], self.numbers[j])

    def length(self, c: int) -> int:
        return self.formula(c).length

    def text(self, c: int) -> str:
        return self.formula(c).text(self.names)

    def rank(self, cs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rank, group): within one parent and operator, text order is label order."""
        n = len(self.old)
        group = torch.where(cs < n, -1 - cs, (cs - n) // self.nL)
        return torch.where(cs >= n, self.label_rank[(cs - n).clamp(min=0) % self.nL], 0), group

    def item(self, c: int, inter: torch.Tensor, size: torch.Tensor) -> _Item:
        if c < len(self.old):
            return self.old[c]
        i, o, j = self.decode(c)
        return _Item(self.formula(c), int(inter[i, o, j]), int(size[i, o, j]),
                     float(self.ious[i, o, j]), float(self.new_scores[c - len(self.old)]))


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
