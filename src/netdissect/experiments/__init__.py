"""The experiments of the papers (METHOD.md section 10), each an API function and a subcommand.

- `rotate`: axis alignment, dissecting a layer in randomly rotated bases R^a;
- `compare`: dissections of one layer across checkpoints, fine-tuning or training regimes;
- `ablate`: the causal role of units (PNAS), class accuracy after zeroing units.

Each writes its numbers as JSON/CSV and a figure (PNG and SVG) into an output folder, which
the overview of a report above it then lists (`netdissect.report.experiments`);
`add_<name>_parser(subparsers)` adds its CLI subcommand.
"""
from netdissect.experiments.ablate import (AblationResult, Ablator, LabelledImages,
                                           add_ablate_parser, ablate, load_labelled_images)
from netdissect.experiments.compare import Comparison, add_compare_parser, compare
from netdissect.experiments.rotate import (RotatedLayers, RotationResult, add_rotate_parser,
                                           random_rotation, rotate, rotation_power)

__all__ = ["rotate", "random_rotation", "rotation_power", "RotatedLayers", "RotationResult",
           "add_rotate_parser", "compare", "Comparison", "add_compare_parser", "ablate",
           "AblationResult", "Ablator", "LabelledImages", "load_labelled_images", "add_ablate_parser"]
