"""`netdissect demo`: the main job on the embedded default, offline, in a few minutes.

Creates the toy world if absent, dissects the scene-trained demo CNN (every conv stage) and
the real ImageNet model EfficientNet-Lite0 (several blocks), writes the results and one
report comparing both models (OUT/index.html).
"""
from __future__ import annotations

import os
from pathlib import Path

from netdissect.results import Dissection

__all__ = ["run_demo", "DEMO_MODELS"]

DEMO_MODELS = ("demo_cnn", "efficientnet_lite0")


def run_demo(out: str | os.PathLike = "results/demo", data: str | os.PathLike = "data/toyworld",
             images: int = 2000, seed: int = 0, models: tuple[str, ...] = DEMO_MODELS,
             batch_size: int = 32, workers: int | None = None, device: str | None = None,
             progress: bool = True) -> dict[str, Dissection]:
    """Dissect the demo models on the toy world; results under OUT/<model>/<layer>/ and the
    report at OUT/index.html."""
    from netdissect.api import dissect
    from netdissect.data.toyworld import ensure_toyworld
    from netdissect.models.zoo import build_model
    from netdissect.report import write_report

    out = Path(out)
    world = ensure_toyworld(data, images=images, seed=seed, progress=progress)
    results = {name: dissect(build_model(name), world, batch_size=batch_size, workers=workers,
                             device=device, out=out / name, progress=progress, report=False)
               for name in models}
    write_report(out, progress=progress)  # one report: an overview of both models, a page per layer
    return results
