"""The HTML report of a dissection: layer pages, overview, image strips, figures, notebook view.

    from netdissect.report import write_report
    write_report("results/demo")          # results/demo/index.html + one page per layer

`write_report` (writer.py) builds the pages (pages.py, assets.py) from `LayerView`s
(views.py), the strips of top images with their masks (strips.py) and matplotlib figures
(figures.py); `dissection_html` (notebook.py) is the compact notebook summary; cli.py holds
the `netdissect report` and `netdissect serve` subcommands.
"""
from netdissect.report.cli import add_report_parser, add_serve_parser, make_server, serve
from netdissect.report.notebook import dissection_html
from netdissect.report.strips import StripMaker, mask_outline, mask_overlay
from netdissect.report.views import display_label
from netdissect.report.writer import write_report

__all__ = ["write_report", "dissection_html", "add_report_parser", "add_serve_parser", "serve",
           "make_server", "mask_overlay", "mask_outline", "StripMaker", "display_label"]
