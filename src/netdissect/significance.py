"""Is a label real? p-values, q-values and bootstrap intervals (docs/method.md section 15).

A dissection run with `--null N` also tallied I and A with the label maps of each batch
assigned to the wrong images (N seeded permutations); with `--bootstrap R`, I, A and G of R
Poisson bootstrap replicates (stats/tally.py).  From those counts this module derives, for
one layer (`results.LayerResult`):

    p-value of a unit   (1 + #{n: best IoU under permutation n >= its best IoU}) / (N + 1),
                        overall and per category (the best label of that category)
    q-value             Benjamini-Hochberg across the units of the layer
    significant         a detector (IoU threshold) whose q-value is <= the FDR
    95% intervals       percentiles 2.5 and 97.5 over the replicates of each unit's best IoU,
                        and of the layer's detector and unique-detector counts
    shuffled labels     the layer's detector and unique-detector counts in each draw of the
                        null: the baseline of a probe whose labels say nothing about the images

Everything works on stacks of tallies (a leading replicate dimension), with the same IoU and
best-label rules as the plain result (`scoring`).
"""
from __future__ import annotations

import torch

from netdissect.scoring import best_per_category_table, iou_table, reaches_threshold

__all__ = ["benjamini_hochberg", "permutation_p_values", "Significance", "INTERVAL"]

#: The percentiles of the bootstrap intervals.
INTERVAL = (0.025, 0.975)
# Work on at most this many IoU values at once (replicates are taken in chunks).
_CHUNK = 1 << 23  # float64 values: 64 MB per temporary table


def permutation_p_values(observed: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """(1 + #{null >= observed}) / (N + 1) along the first dimension of `null` (N, ...);
    1.0 where the observed value is 0 (no label at all)."""
    exceed = (null >= observed[None]).sum(0)
    p = (1.0 + exceed.double()) / (null.shape[0] + 1)
    return torch.where(observed > 0, p, torch.ones_like(p))


def benjamini_hochberg(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg q-values of the p-values along the last dimension."""
    m = p.shape[-1]
    order = p.argsort(dim=-1)
    ranked = p.gather(-1, order) * m / torch.arange(1, m + 1, dtype=p.dtype, device=p.device)
    # q_(i) = min over j >= i of m p_(j) / j: a running minimum from the largest p down
    ranked = ranked.flip(-1).cummin(dim=-1).values.flip(-1).clamp(max=1.0)
    return torch.empty_like(p).scatter_(-1, order, ranked)


def _chunks(total: int, per: int):
    step = max(1, _CHUNK // max(1, per))
    for start in range(0, total, step):
        yield slice(start, min(total, start + step))


class Significance:
    """The significance figures of one LayerResult under a definition and IoU threshold.

    `has_null` / `has_bootstrap` say what the run tallied; the figures of what it did not
    are None.
    """

    def __init__(self, result, definition: str, iou_threshold: float, fdr: float):
        self.result, self.definition, self.threshold, self.fdr = result, definition, iou_threshold, fdr
        self.category = torch.from_numpy(result.labels.category)
        self.num_categories = len(result.labels.categories)
        extra = result.resampled
        self.has_null = "null_intersection" in extra
        self.has_bootstrap = "boot_intersection" in extra
        best_label, best_iou = result.best_per_category(definition)
        self.best_iou = best_iou  # (K, C)
        self.score = best_iou.max(dim=1).values  # (K,)
        self.detector = reaches_threshold(self.score, iou_threshold, definition)
        if self.has_null:
            null_label, null_best = self._best_stack("null", extra["null_intersection"], truth=None)  # (N, K, C)
            self.p_value = permutation_p_values(self.score, null_best.max(dim=2).values)
            self.q_value = benjamini_hochberg(self.p_value)
            self.category_p_value = permutation_p_values(self.best_iou, null_best)  # (K, C)
            self.category_q_value = benjamini_hochberg(self.category_p_value.T).T
            self.significant = self.detector & (self.q_value <= fdr)
            category_significant = (reaches_threshold(best_iou, iou_threshold, definition)
                                    & (self.category_q_value <= fdr))
            self.significant_unique = _unique_counts(best_label[None], category_significant[None])[0]
            # The layer under shuffled labels: its counts in each draw of the null.
            self.shuffled = {
                "detectors": reaches_threshold(null_best.max(dim=2).values, iou_threshold, definition).sum(1),
                "unique_detectors_total": _unique_counts(
                    null_label, reaches_threshold(null_best, iou_threshold, definition)).sum(1)}
        else:
            self.p_value = self.q_value = self.category_p_value = self.significant = None
            self.significant_unique = self.shuffled = None
        if self.has_bootstrap:
            boot_label, boot_iou = self._best_stack("boot", extra["boot_intersection"], extra["boot_truth"])
            boot_score = boot_iou.max(dim=2).values  # (R, K)
            levels = torch.tensor(INTERVAL, dtype=torch.float64)
            self.score_interval = torch.quantile(boot_score, levels, dim=0).T  # (K, 2)
            detectors = reaches_threshold(boot_score, iou_threshold, definition).sum(1).double()
            unique = _unique_counts(boot_label, reaches_threshold(boot_iou, iou_threshold, definition)).double()
            self.detectors_interval = torch.quantile(detectors, levels)
            self.unique_interval = torch.quantile(unique, levels, dim=0).T  # (C, 2)
            self.unique_total_interval = torch.quantile(unique.sum(1), levels)
        else:
            self.score_interval = self.detectors_interval = None
            self.unique_interval = self.unique_total_interval = None

    def _best_stack(self, prefix: str, intersection: torch.Tensor, truth: torch.Tensor | None):
        """Best label and IoU per (replicate, unit, category) of a stack of tallies; `truth`
        (R, L+1) per replicate, or None for the run's own G (the null keeps it)."""
        activation = self.result.resampled[f"{prefix}_activation_{self.definition}"]
        labels, ious = [], []
        for part in _chunks(intersection.shape[0], intersection[0].numel()):
            g = self.result.truth[None] if truth is None else truth[part]
            iou = iou_table(intersection[part], activation[part], g, self.category)
            label, best = best_per_category_table(iou, self.category, self.num_categories)
            labels.append(label)
            ious.append(best)
        return torch.cat(labels), torch.cat(ious)

    # -- what the files show ----------------------------------------------------------
    def unit_fields(self, unit: int) -> dict:
        """The fields units.json gains for `unit`."""
        out = {}
        if self.has_null:
            out |= {"p_value": float(self.p_value[unit]), "q_value": float(self.q_value[unit]),
                    "significant": bool(self.significant[unit])}
        if self.has_bootstrap:
            out["score_interval"] = [float(v) for v in self.score_interval[unit]]
        return out

    def category_fields(self, unit: int, category: int) -> dict:
        """The fields of a unit's best label in one category (units.json "categories")."""
        if not self.has_null:
            return {}
        return {"p_value": float(self.category_p_value[unit, category]),
                "q_value": float(self.category_q_value[unit, category])}

    def counts(self) -> dict:
        """The fields summary.json gains."""
        names = self.result.labels.categories
        out = {}
        if self.has_null:
            out |= {"null_permutations": int(self.result.resampled["null_intersection"].shape[0]),
                    "significant_detectors": int(self.significant.sum()),
                    "significant_unique_detectors": {c: int(v) for c, v in zip(names, self.significant_unique)},
                    "significant_unique_detectors_total": int(self.significant_unique.sum()),
                    "shuffled_labels": {name: _mean_and_interval(v) for name, v in self.shuffled.items()}}
        if self.has_bootstrap:
            out["bootstrap"] = {
                "replicates": int(self.result.resampled["boot_intersection"].shape[0]),
                "interval": list(INTERVAL),
                "detectors": [float(v) for v in self.detectors_interval],
                "unique_detectors": {c: [float(v) for v in iv] for c, iv in zip(names, self.unique_interval)},
                "unique_detectors_total": [float(v) for v in self.unique_total_interval]}
        return out


def _mean_and_interval(values: torch.Tensor) -> list[float]:
    """[mean, 2.5th percentile, 97.5th percentile] of counts, for summary.json."""
    values = values.double()
    low, high = torch.quantile(values, torch.tensor(INTERVAL, dtype=torch.float64)).tolist()
    return [round(float(values.mean()), 4), low, high]


def _unique_counts(best_label: torch.Tensor, passes: torch.Tensor) -> torch.Tensor:
    """(R, C) distinct labels among the units whose best label of category c passes, per
    replicate: best_label (R, K, C) label numbers, passes (R, K, C) bool."""
    R, _, C = best_label.shape
    width = int(best_label.max()) + 1 if best_label.numel() else 1
    seen = torch.zeros((R, C, width), dtype=torch.bool)
    hit = passes & (best_label > 0)
    r, _, c = torch.nonzero(hit, as_tuple=True)
    seen[r, c, best_label[hit]] = True
    return seen.sum(2)
