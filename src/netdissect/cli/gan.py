"""`netdissect gan-dissect`, `gan-ablate` and `gan-insert`: the units of a generator.

The API twins are `netdissect.experiments.gan.gan_dissect`, `gan_ablate` and `gan_insert`
(docs/method.md section 16).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.cli.options import (add_generator_options, add_run_options,
                                    add_segmenter_options, add_settings_options,
                                    generator_from_args, number_list, settings_from_args)

__all__ = ["add_parsers"]

DEFAULT_COUNTS = "1,2,4,8,16,20"
# dissect's settings but the definition: gan-dissect always uses the PNAS rule.
DISSECT_SETTINGS = ["quantile", "iou_threshold", "categories", "top_k", "skip_bad", "null",
                    "bootstrap", "resample_seed", "fdr", "batch_size", "workers",
                    "cache_limit_gb", "cache", "checkpoint_seconds"]


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "gan-dissect", help="dissect a generator's units against a segmentation of its images",
        description="Generate --samples images from seeded latents (OUT/samples), segment them "
                    "into a Broden-format dataset (OUT/dataset) and dissect the generator's "
                    "layers against it with the PNAS rule (top 1%% of upsampled activations, "
                    "plain IoU, argmax over all concepts), the model reading each image's "
                    "latent. Writes the files and the HTML report of `dissect` into OUT. Run "
                    "the same command again after an interruption: every stage resumes.")
    add_generator_options(p)
    add_segmenter_options(p, "--segmenter-weights")
    p.add_argument("--label-size", type=int,
                   help="side of the label planes (default: half the generated image's side)")
    add_settings_options(p, only=DISSECT_SETTINGS)
    p.add_argument("--out", required=True, help="output folder (samples/, dataset/, results)")
    p.add_argument("--restart", action="store_true",
                   help="discard the saved state of an interrupted dissection and layers "
                        "finished earlier (samples and segmentation are kept)")
    p.add_argument("--no-report", action="store_true", help="write the result files but no HTML report")
    add_run_options(p)
    p.set_defaults(func=run_gan_dissect,
                   on_interrupt="finished samples and images are kept; run the same command to go on.")

    p = sub.add_parser(
        "gan-ablate", help="switch a generator's units off and measure a concept's pixels",
        description="For the same latents, generate with the chosen units of --layer set to zero "
                    "and measure the segmented share of --concept's pixels, per number of units "
                    "removed, next to the same number of random units of the layer (seeded "
                    "draws). Writes ablate.json, ablate.csv, a figure and an image grid.")
    _add_edit_options(p)
    p.add_argument("--units", default="top:20",
                   help="top:K (the K best-ranked units, default top:20) or comma-separated "
                        "unit numbers, 0-based")
    p.add_argument("--counts", type=number_list(int, "--counts", "integers"),
                   default=number_list(int, "--counts")(DEFAULT_COUNTS),
                   help=f"numbers of units to remove (default {DEFAULT_COUNTS})")
    p.add_argument("--draws", type=int, default=5, help="random unit sets per count (default 5)")
    p.set_defaults(func=run_gan_ablate)

    p = sub.add_parser(
        "gan-insert", help="switch a generator's units on in a region and see where a concept appears",
        description="For the same latents, set the chosen units of --layer to a high value "
                    "inside the region --where of its feature map and measure --concept's share "
                    "of the pixels inside and outside the region, before and after; the average "
                    "causal effect (ACE) is the change inside. Writes insert.json, a figure and "
                    "an image grid.")
    _add_edit_options(p)
    p.add_argument("--units", default="top:4",
                   help="top:K (the K best-ranked units, default top:4) or comma-separated "
                        "unit numbers, 0-based")
    p.add_argument("--where", required=True,
                   help="x0,y0,x1,y1: the region in cells of the layer's feature map (x1 and y1 "
                        "exclusive)")
    p.add_argument("--value", type=float,
                   help="the value the units are set to (default: each unit's mean activation "
                        "where it exceeds its threshold)")
    p.set_defaults(func=run_gan_insert)


def _add_edit_options(p: argparse.ArgumentParser) -> None:
    """What gan-ablate and gan-insert share."""
    add_generator_options(p, layers="--layer")
    add_segmenter_options(p, "--segmenter-weights")
    p.add_argument("--concept", required=True, help="a label of the segmenter (e.g. tree)")
    p.add_argument("--rank", choices=["iou", "effect"], default="iou",
                   help="how top:K ranks units: iou (the dissection's IoU with the concept, the "
                        "default) or effect (the concept's pixels removed by each unit alone)")
    p.add_argument("--dissection",
                   help="a gan-dissect result folder of this layer (default: dissected now "
                        "into OUT/dissection when needed)")
    p.add_argument("--grid", type=int, default=4, help="samples in the image grid (default 4)")
    add_settings_options(p, only=["batch_size"])
    p.add_argument("--out", required=True, help="output folder")
    add_run_options(p)


def run_gan_dissect(args: argparse.Namespace) -> int:
    from netdissect.api import is_main_process
    from netdissect.cli.dissect import print_summary
    from netdissect.experiments.gan import gan_dissect

    from netdissect.engine.settings import Settings

    generator = generator_from_args(args)
    settings = Settings.from_options({**vars(args), "definition": "pnas"})
    settings.check()
    result = gan_dissect(generator, args.segmenter, args.out, layers=args.layers,
                         samples=args.samples, seed=args.seed,
                         segmenter_weights=args.segmenter_weights, colors=args.colors,
                         label_size=args.label_size, settings=settings, device=args.device,
                         progress=not args.quiet, report=not args.no_report, restart=args.restart)
    if is_main_process():
        print_summary([result], Path(args.out))
    return 0


def _edit_options(args: argparse.Namespace) -> dict:
    settings = settings_from_args(args)
    return dict(units=args.units, rank=args.rank, dissection=args.dissection,
                samples=args.samples, seed=args.seed, segmenter_weights=args.segmenter_weights,
                colors=args.colors, batch_size=settings.batch_size, grid=args.grid,
                device=args.device, progress=not args.quiet)


def run_gan_ablate(args: argparse.Namespace) -> int:
    from netdissect.cli.experiments import _list_in_reports
    from netdissect.experiments.gan import gan_ablate

    result = gan_ablate(generator_from_args(args), args.segmenter, args.layer, args.concept,
                        args.out, counts=args.counts, draws=args.draws, **_edit_options(args))
    print(f"units ({result.ranking}): {', '.join(map(str, result.units))}")
    print("removed  before   top      random (std)")
    for r in result.curve:
        random = ("-" if r["fraction_after_random"] is None else
                  f"{r['fraction_after_random']:.4f} ({r['fraction_after_random_std']:.4f})")
        print(f"{r['removed']:<8} {r['fraction_before']:.4f}   {r['fraction_after_top']:.4f}   {random}")
    _list_in_reports(args.out)
    return 0


def run_gan_insert(args: argparse.Namespace) -> int:
    from netdissect.cli.experiments import _list_in_reports
    from netdissect.experiments.gan import gan_insert

    result = gan_insert(generator_from_args(args), args.segmenter, args.layer, args.concept,
                        args.where, args.out, value=args.value, **_edit_options(args))
    print(f"units: {', '.join(map(str, result.units))}")
    print(result.summary())
    _list_in_reports(args.out)
    return 0
