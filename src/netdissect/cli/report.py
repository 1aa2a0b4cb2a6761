"""`netdissect report` and `netdissect serve`."""
from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of saved results",
                       description="(Re)build OUT/index.html and one page per layer from the saved "
                                   "results, reading only the top images from the dataset; the model "
                                   "is not needed. Experiments under OUT are listed too.")
    p.add_argument("out", help="result folder (holds dissection.json) or a folder of such folders")
    p.add_argument("--dataset", "--data", dest="dataset",
                   help="Broden-format folder with the images (default: the one recorded in the results)")
    p.add_argument("--report-dir", help="write the report here instead of into OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)

    p = sub.add_parser("serve", help="serve a report on 127.0.0.1",
                       description="Serve the report folder OUT over HTTP on 127.0.0.1 only.")
    p.add_argument("out", help="report folder (holds index.html)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.set_defaults(func=run_serve, on_interrupt="stopped serving.")


def run_report(args: argparse.Namespace) -> int:
    from netdissect.report import write_report

    index = write_report(args.out, out_dir=args.report_dir, dataset=args.dataset,
                         progress=not args.quiet)
    print(f"report: {index.resolve()}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from netdissect.report import serve

    serve(args.out, args.port)
    return 0
