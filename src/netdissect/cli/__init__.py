"""The `netdissect` command: all of argparse, and nothing else imports from here.

    main.py         the parser, the one place errors are caught, exit statuses
    options.py      option groups shared by several commands (model, settings, lists)
    dissect.py      dissect, relabel, layers
    data.py         toyworld, download
    report.py       report, serve
    experiments.py  rotate, compare, ablate
    demo.py         demo, train-demo

Every command is a thin layer over a Python function of the package; `--help` and
`--version` import neither torch nor matplotlib nor pandas.
"""
from netdissect.cli.main import main

__all__ = ["main"]
