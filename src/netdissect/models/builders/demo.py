"""The demo CNN (``demo_cnn``): a small scene classifier trained on the toy world.

Its trained weights ship in the package (``netdissect/assets/demo_cnn.pt``, see
`netdissect.models.demo_cnn`); the input normalisation is ImageNet's (docs/method.md section 3),
as recorded in the weights' metadata.
"""
from __future__ import annotations

from pathlib import Path

from netdissect.models import weights as weights_io
from netdissect.models.demo_cnn import LAYERS, WEIGHTS, demo_cnn_metadata, new_demo_cnn
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import RANDOM_WEIGHTS, register_model

__all__ = ["demo_cnn"]


@register_model("demo_cnn")
def demo_cnn(weights: str | None = None, **_options) -> Probe:
    """The demo CNN with the shipped weights, a file written by ``train_demo``, or random."""
    path = None if weights == RANDOM_WEIGHTS else (weights or WEIGHTS)
    meta = demo_cnn_metadata(Path(path or WEIGHTS).with_suffix(".json"))
    model = new_demo_cnn(meta)
    loaded = weights_io.load_weights(model, path) if path is not None else None
    preprocess = Preprocess.preset("imagenet", size=224).replace(
        mean=meta.get("mean"), std=meta.get("std"))
    return Probe(model.eval(), preprocess=preprocess, name="demo_cnn",
                 default_layers=list(LAYERS), aliases={n: n for n in LAYERS},
                 weights=loaded["path"] if loaded else None,
                 weights_fingerprint=loaded["sha256"] if loaded else "")
