"""The HTML report of a dissection: layer pages, overview, image strips, figures, notebook view.

    from netdissect.report import write_report
    write_report("results/demo")          # results/demo/index.html + one page per layer

`write_report` (writer.py) builds the pages (pages.py, rendering templates/ through render.py,
with chart geometry from charts.py) from `LayerView`s (views.py), the strips of top images
with their masks (strips.py) and matplotlib figures (figures.py); `dissection_html`
(notebook.py) is the compact notebook summary; experiments.py lists the experiments found
under a report in its overview; server.py serves a report on 127.0.0.1.  No argparse here:
the `netdissect report` and `serve` commands live in netdissect.cli.
"""
from netdissect.report.experiments import find_experiments, refresh_overviews
from netdissect.report.notebook import dissection_html
from netdissect.report.server import make_server, serve
from netdissect.report.strips import StripMaker, mask_outline, mask_overlay
from netdissect.report.views import display_label
from netdissect.report.writer import write_report

__all__ = ["write_report", "dissection_html", "serve", "make_server", "mask_overlay", "mask_outline",
           "StripMaker", "display_label", "refresh_overviews", "find_experiments"]
