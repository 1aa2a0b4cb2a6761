"""The figure rotate and compare share: unique detectors per category against a number."""
from __future__ import annotations

import os
from pathlib import Path

from netdissect.files import new_figure, save_figure

__all__ = ["unique_detectors_figure"]


def unique_detectors_figure(xs: list[float], counts: list[dict], stem: str | os.PathLike, *,
                            xlabel: str, title: str, xticklabels: list[str] | None = None) -> list[Path]:
    """Unique detectors per category and in total against `xs`, one line each, saved as
    STEM.png and STEM.svg; `counts` are `LayerResult.counts()` dicts, one per x."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for cat in dict.fromkeys(k for c in counts for k in c["unique_detectors"]):
        ax.plot(xs, [c["unique_detectors"].get(cat, 0) for c in counts], marker="o", label=cat)
    ax.plot(xs, [c["unique_detectors_total"] for c in counts], marker="s", color="black",
            linewidth=2, label="total")
    if xticklabels is not None:
        ax.set_xticks(xs)
        ax.set_xticklabels(xticklabels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unique detectors")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)
