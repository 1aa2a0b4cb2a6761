"""`netdissect demo`: the main job on the embedded default, offline, in a few minutes.

Creates the toy world if absent, dissects the scene-trained demo CNN (every conv stage) and
the real ImageNet model EfficientNet-Lite0 (several blocks), writes the results (and the
report when the report package is installed), and prints a summary table per model and layer.
"""
from __future__ import annotations

import os
from pathlib import Path

from netdissect.data.toyworld import ensure_toyworld
from netdissect.dissect import dissect
from netdissect.results import Dissection

DEMO_MODELS = ("demo_cnn", "efficientnet_lite0")


def run_demo(out: str | os.PathLike = "results/demo", data: str | os.PathLike = "data/toyworld",
             images: int = 2000, seed: int = 0, models: tuple[str, ...] = DEMO_MODELS,
             batch_size: int = 32, workers: int | None = None, device: str | None = None,
             progress: bool = True) -> dict[str, Dissection]:
    """Dissect the demo models on the toy world; results under OUT/<model>/<layer>/ and the
    report at OUT/index.html."""
    from netdissect.models.zoo import build_model
    from netdissect.report import write_report

    out = Path(out)
    world = ensure_toyworld(data, images=images, seed=seed, progress=progress)
    results = {}
    for name in models:
        info = build_model(name)
        results[name] = dissect(
            info.model, world, info.default_layers, mean=info.mean, std=info.std,
            input_size=info.input_size, batch_size=batch_size, workers=workers, device=device,
            out=out / name, progress=progress, model_info=info.describe(), report=False)
    write_report(out, progress=progress)  # one report: an overview of both models, a page per layer
    return results
