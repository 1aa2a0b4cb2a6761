"""The experiments of the papers (docs/method.md section 10), each a Python function.

- `rotate`: axis alignment, dissecting a layer in randomly rotated bases R^a (`RotatedProbe`);
- `compare`: dissections of one layer across checkpoints, fine-tuning or training regimes;
- `ablate`: the causal role of units (PNAS), class accuracy after zeroing units;
- `gan`: GAN dissection, a generator's units dissected against a segmentation of its images,
  switched off (`gan_ablate`) and on (`gan_insert`).

Each writes its numbers as JSON/CSV, a figure (PNG and SVG) and the common summary record
`experiment.json` (record.py) into an output folder.  A report lists experiments from their
records: `netdissect.report.refresh_overviews(folder)` adds one to the reports above it
(the command line does that after each experiment).
"""
from netdissect.experiments.ablate import (AblationResult, Ablator, LabelledImages, ablate,
                                           load_labelled_images, write_ablation)
from netdissect.experiments.compare import Comparison, compare, write_comparison
from netdissect.experiments.gan import (GanAblation, GanInsertion, gan_ablate, gan_dissect,
                                        gan_insert)
from netdissect.experiments.record import ExperimentRecord, read_record, write_record
from netdissect.experiments.rotate import (RotatedProbe, RotationResult, random_rotation, rotate,
                                           rotation_power, write_rotation)

__all__ = ["rotate", "random_rotation", "rotation_power", "RotatedProbe", "RotationResult",
           "write_rotation", "compare", "Comparison", "write_comparison", "ablate",
           "AblationResult", "Ablator", "LabelledImages", "load_labelled_images", "write_ablation",
           "ExperimentRecord", "read_record", "write_record", "gan_dissect", "gan_ablate",
           "gan_insert", "GanAblation", "GanInsertion"]
