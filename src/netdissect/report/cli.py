"""The `netdissect report` and `netdissect serve` subcommands (wired into netdissect.cli).

    netdissect report OUT [--dataset DIR] [--quiet]   rebuild OUT's report from saved results
    netdissect serve OUT [--port N]                   serve OUT on http://127.0.0.1:N/
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
from pathlib import Path


def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of saved results",
                       description="(Re)build OUT/index.html and one page per layer from the saved "
                                   "results, reading only the top images from the dataset; the model "
                                   "is not needed.")
    p.add_argument("out", help="result folder (holds dissection.json) or a folder of such folders")
    p.add_argument("--dataset", help="Broden-format folder with the images (default: the one recorded "
                                     "in the results)")
    p.add_argument("--report-dir", help="write the report here instead of into OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from netdissect.report.writer import write_report

    index = write_report(args.out, out_dir=args.report_dir, dataset=args.dataset,
                         progress=not args.quiet)
    print(f"report: {index.resolve()}")
    return 0


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a report on 127.0.0.1",
                       description="Serve the report folder OUT over HTTP on 127.0.0.1 only.")
    p.add_argument("out", help="report folder (holds index.html)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.set_defaults(func=run_serve)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def make_server(out: str | os.PathLike, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the report folder `out`, bound to 127.0.0.1 (not yet serving)."""
    folder = Path(out)
    if not (folder / "index.html").is_file():
        raise FileNotFoundError(f"{folder / 'index.html'}: missing; build the report first with "
                                f"`netdissect report {folder}`.")
    handler = functools.partial(QuietHandler, directory=str(folder.resolve()))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(out: str | os.PathLike, port: int = 8000) -> None:
    """Serve the report folder `out` on http://127.0.0.1:PORT/ until interrupted."""
    server = make_server(out, port)
    with server:
        print(f"serving {Path(out).resolve()} on http://127.0.0.1:{server.server_address[1]}/ "
              "(Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def run_serve(args: argparse.Namespace) -> int:
    serve(args.out, args.port)
    return 0
