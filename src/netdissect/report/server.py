"""Serves a report folder over HTTP on 127.0.0.1 only (what `netdissect serve` runs).

    make_server(out, port)   the server, bound but not yet serving (port 0 picks a free one)
    serve(out, port)         serve until Ctrl-C
"""
from __future__ import annotations

import functools
import http.server
import os
from pathlib import Path
from netdissect.errors import ResultError, SettingsError

__all__ = ["QuietHandler", "make_server", "serve"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def make_server(out: str | os.PathLike, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the report folder `out`, bound to 127.0.0.1 (not yet serving)."""
    folder = Path(out)
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port must be between 0 and 65535 (0 picks a free one), got {port}")
    if not (folder / "index.html").is_file():
        raise ResultError(f"{folder / 'index.html'}: missing; build the report first with "
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
