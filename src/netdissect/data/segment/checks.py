"""Checks of what a segmenter says: its labels and the planes it returns, with errors that
name the segmenter, what was expected and what came (ModelError)."""
from __future__ import annotations

import torch

from netdissect.data.segment.base import PIXEL_CATEGORIES, Segmenter, SegmenterLabel
from netdissect.errors import ModelError

__all__ = ["segmenter_name", "check_labels", "check_planes"]


def segmenter_name(segmenter: object) -> str:
    """The segmenter's `name` (its spec), else its class name: how errors call it."""
    name = getattr(segmenter, "name", None)
    return name if isinstance(name, str) and name else type(segmenter).__qualname__


def check_labels(segmenter: Segmenter) -> list[SegmenterLabel]:
    """The segmenter's labels, checked: at least one, each a SegmenterLabel (or a (name,
    category) pair) with a non-empty one-line name and a pixel category of Broden."""
    who = segmenter_name(segmenter)
    try:
        labels = list(segmenter.labels())
    except TypeError as e:
        raise ModelError(f"segmenter {who!r}: labels() must return a list of SegmenterLabel "
                         f"(name, category); calling it failed: {e}") from None
    if not labels:
        raise ModelError(f"segmenter {who!r}: labels() returned no label; it must list the "
                         "names that its planes' numbers 1..L stand for.")
    checked = []
    for i, label in enumerate(labels, start=1):
        if isinstance(label, tuple) and len(label) == 2:
            label = SegmenterLabel(*label)
        name, category = getattr(label, "name", None), getattr(label, "category", None)
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "\r\n\0"):
            raise ModelError(f"segmenter {who!r}: label {i} has the name {name!r}; a label "
                             "name is a non-empty line of text.")
        if category not in PIXEL_CATEGORIES:
            raise ModelError(f"segmenter {who!r}: label {i} ({name!r}) has the unknown category "
                             f"{category!r}; a segmenter's labels belong to one of "
                             f"{', '.join(PIXEL_CATEGORIES)}.")
        checked.append(SegmenterLabel(name, category))
    return checked


def check_planes(planes: object, segmenter: Segmenter, batch: int) -> torch.Tensor:
    """`planes` as int64 after checking that they are a (batch, P, h, w) integer tensor with
    numbers in 0..len(labels()); ModelError naming the segmenter otherwise."""
    who = segmenter_name(segmenter)
    expected = (f"a ({batch}, P, h, w) integer tensor (P >= 1 label planes of h x w per image, "
                "label numbers 0..L)")
    if not isinstance(planes, torch.Tensor):
        raise ModelError(f"segmenter {who!r}: segment() returned a {type(planes).__name__}; "
                         f"expected {expected}.")
    if planes.dtype == torch.bool or planes.is_floating_point() or planes.is_complex():
        raise ModelError(f"segmenter {who!r}: segment() returned a {planes.dtype} tensor; "
                         f"expected {expected} (e.g. logits.argmax(1, keepdim=True)).")
    if planes.dim() != 4 or planes.shape[0] != batch or min(planes.shape[1:]) < 1:
        hint = " (add the plane axis: planes.unsqueeze(1))" if planes.dim() == 3 else ""
        raise ModelError(f"segmenter {who!r}: segment() returned shape {tuple(planes.shape)} "
                         f"for {batch} image(s); expected {expected}{hint}.")
    count = len(segmenter.labels())
    low, high = int(planes.min()), int(planes.max())
    if low < 0 or high > count:
        bad = low if low < 0 else high
        raise ModelError(f"segmenter {who!r}: segment() returned the label number {bad}; its "
                         f"labels() lists {count}, so numbers must be 0 (no label) to {count}.")
    return planes.to(torch.int64)
