"""What rotate and compare share: the count columns of their CSV files, and the figure of
unique detectors per category against a number (with the bootstrap's 95% intervals and the
significant unique detectors when the dissections made them)."""
from __future__ import annotations

import os
from pathlib import Path

from netdissect.files import new_figure, save_figure

__all__ = ["unique_detectors_figure", "count_columns"]


def count_columns(c: dict) -> dict:
    """The CSV columns of a `LayerResult.counts()` dict: detectors, unique detectors in
    total and per category; with a null the significant ones and the detectors under
    shuffled labels (mean); with a bootstrap the 95% intervals (docs/method.md section 15)."""
    row = {"units": c["units"], "detectors": c["detectors"],
           "unique_detectors_total": c["unique_detectors_total"],
           **{f"unique_{k}": v for k, v in c["unique_detectors"].items()}}
    if "significant_detectors" in c:
        row |= {"significant_detectors": c["significant_detectors"],
                "significant_unique_detectors_total": c["significant_unique_detectors_total"],
                "shuffled_labels_detectors": c["shuffled_labels"]["detectors"][0]}
    if "bootstrap" in c:
        boot = c["bootstrap"]
        row |= {"detectors_low": boot["detectors"][0], "detectors_high": boot["detectors"][1],
                "unique_detectors_total_low": boot["unique_detectors_total"][0],
                "unique_detectors_total_high": boot["unique_detectors_total"][1]}
    return row


def unique_detectors_figure(xs: list[float], counts: list[dict], stem: str | os.PathLike, *,
                            xlabel: str, title: str, xticklabels: list[str] | None = None) -> list[Path]:
    """Unique detectors per category and in total against `xs`, one line each, saved as
    STEM.png and STEM.svg; `counts` are `LayerResult.counts()` dicts, one per x."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for cat in dict.fromkeys(k for c in counts for k in c["unique_detectors"]):
        ax.plot(xs, [c["unique_detectors"].get(cat, 0) for c in counts], marker="o", label=cat)
    totals = [c["unique_detectors_total"] for c in counts]
    if all("bootstrap" in c for c in counts):  # 95% bootstrap intervals of the total
        intervals = [c["bootstrap"]["unique_detectors_total"] for c in counts]
        ax.errorbar(xs, totals, yerr=[[max(0.0, t - lo) for t, (lo, _) in zip(totals, intervals)],
                                      [max(0.0, hi - t) for t, (_, hi) in zip(totals, intervals)]],
                    marker="s", color="black", linewidth=2, capsize=3, label="total (95% interval)")
    else:
        ax.plot(xs, totals, marker="s", color="black", linewidth=2, label="total")
    if all("significant_unique_detectors_total" in c for c in counts):
        ax.plot(xs, [c["significant_unique_detectors_total"] for c in counts], marker="D",
                color="black", linestyle="--", label="total, significant")
    if xticklabels is not None:
        ax.set_xticks(xs)
        ax.set_xticklabels(xticklabels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unique detectors")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)
