"""`netdissect toyworld` and `netdissect download broden`."""
from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    from netdissect.data.download import BRODEN_ARCHIVES, DEFAULT_BASE_URL, URL_ENV_VAR, mirror_hint

    p = sub.add_parser("toyworld", help="generate a toy Broden-format dataset",
                       description="Generate the deterministic toy world (all six Broden "
                                   "categories) in Broden format.")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_toyworld)

    p = sub.add_parser("download", help="download a dataset", description="Download a dataset.")
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    broden = datasets.add_parser(
        "broden", help="the Broden dataset (Bau et al. 2017)",
        description="Download, verify and unpack Broden into DEST/broden1_VARIANT. An interrupted "
                    "download resumes when run again. " + mirror_hint())
    broden.add_argument("--variant", choices=sorted(BRODEN_ARCHIVES), default="224",
                        help="image size: 224 (VGG, ResNet, ...), 227 (AlexNet) or 384")
    broden.add_argument("--dest", default="dataset", help="folder to unpack into (default: dataset)")
    broden.add_argument("--url", default=None,
                        help=f"mirror: base URL or full URL of the .zip (default: ${URL_ENV_VAR} "
                             f"or {DEFAULT_BASE_URL})")
    broden.add_argument("--timeout", type=float, default=60, help="network timeout in seconds")
    broden.add_argument("--keep-archive", action="store_true", help="keep the .zip after unpacking")
    broden.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    broden.set_defaults(func=run_download, on_interrupt="run the same command again to resume.")


def run_toyworld(args: argparse.Namespace) -> int:
    from netdissect.data.toyworld import ensure_toyworld

    path = ensure_toyworld(args.out, images=args.images, seed=args.seed, workers=args.workers,
                           progress=not args.quiet)
    print(f"toy world: {path}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from netdissect.data.download import download_broden

    folder = download_broden(variant=args.variant, dest=args.dest, url=args.url,
                             progress=not args.quiet, timeout=args.timeout,
                             keep_archive=args.keep_archive)
    print(folder)
    return 0
