"""`netdissect segment`: a folder of images -> a Broden-format dataset, by a segmenter.

The API twin is `netdissect.data.segment.segment_images` (also `netdissect.segment`).
"""
from __future__ import annotations

import argparse

from netdissect.cli.options import add_run_options, add_segmenter_options

__all__ = ["add_parsers"]

def add_parsers(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment a folder of images into a Broden-format dataset",
        description="Run a segmenter over every jpg/png image under --images (nested folders "
                    "allowed, sorted order; each resized so its shorter side is --size, then "
                    "centre-cropped to --size x --size) and write a Broden-format dataset to "
                    "--out: images/, label planes (number = R + 256*G) at --label-size, "
                    "index.csv (split: train), label.csv, category.csv, c_<category>.csv and "
                    "segment.json. Unreadable images are skipped and counted. Run the same "
                    "command again after an interruption: finished images are kept. Then: "
                    "netdissect dissect --dataset OUT --model ...")
    p.add_argument("--images", required=True, help="folder of .jpg/.jpeg/.png images")
    p.add_argument("--out", required=True, help="dataset folder to write (new, empty, or an "
                                                "interrupted segment output to finish)")
    p.add_argument("--size", type=int, default=224, help="image side in the dataset (224)")
    p.add_argument("--label-size", type=int, default=112,
                   help="label plane side (112: Broden's half of the image)")
    p.add_argument("--batch-size", type=int, default=16, help="images per segmenter call (16)")
    add_segmenter_options(p)
    p.add_argument("--scenes-from", choices=["folders"],
                   help="folders: each image's folder (relative to --images) is its scene label")
    add_run_options(p)
    p.set_defaults(func=run_segment,
                   on_interrupt="finished images are kept; run the same command to go on.")


def run_segment(args: argparse.Namespace) -> int:
    from netdissect.data.segment import segment_images
    from netdissect.models.probe import check_device

    summary = segment_images(args.images, args.segmenter, args.out, size=args.size,
                             label_size=args.label_size, batch_size=args.batch_size,
                             device=check_device(args.device), colors=args.colors,
                             scenes_from=args.scenes_from, weights=args.weights,
                             progress=not args.quiet)
    per_category = ", ".join(f"{c} {sum(c in lab['categories'] for lab in summary['labels'])}"
                             for c in summary["categories"])
    print(f"segmented {summary['segmented']} image(s) ({summary['new']} now, "
          f"{summary['reused']} before), skipped {summary['skipped']}; "
          f"{len(summary['labels'])} labels ({per_category})")
    for item in summary["skipped_files"][:5]:
        print(f"  skipped {item['file']}: {item['reason']}")
    if summary["skipped"] > 5:
        print(f"  ... and {summary['skipped'] - 5} more (listed in segment.json)")
    print(f"dataset: {summary['out']}")
    return 0
