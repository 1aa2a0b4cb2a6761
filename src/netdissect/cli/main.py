"""The parser of `netdissect` and the one place where errors become exit statuses.

Exit statuses (see netdissect.errors): 0 success; 2 bad input or options (one line on stderr
naming what was wrong and what to do); 130 Ctrl-C; 143 stopped by SIGTERM after saving the
run's state.  Any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from netdissect import __version__
from netdissect.allocator import keep_freed_memory
from netdissect.errors import EXIT_CTRL_C, EXIT_ERROR, EXIT_SIGTERM, Interrupted, NetDissectError

__all__ = ["main", "build_parser"]

# The modules that add commands, in the order --help lists them.
COMMAND_MODULES = ("dissect", "explain", "demo", "data", "segment", "report", "experiments", "gan")

DESCRIPTION = """Network Dissection: measure how interpretable the units of deep vision networks are.

  netdissect dissect --dataset DIR --model SPEC --layers NAME[,NAME] [--out DIR]
  netdissect explain --dataset DIR --model SPEC --layers NAME [--out DIR]  (formulas per unit)
  netdissect demo | toyworld | train-demo | layers MODEL | relabel OUT
  netdissect download broden | report OUT | serve OUT
  netdissect segment --images DIR --segmenter SPEC --out DATASET  (your images as a dataset)
  netdissect rotate | compare | ablate        (the experiments of the papers)
  netdissect gan-dissect | gan-ablate | gan-insert --generator SPEC ...  (a generator's units)

The method is described in docs/method.md of the repository."""

EPILOG = ("exit status: 0 success, 2 bad input or options, 130 interrupted (Ctrl-C), "
          "143 stopped by SIGTERM after saving the run's state (run the same command to resume)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netdissect", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"netdissect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"netdissect.cli.{name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.func(args)
    except NetDissectError as e:
        print(f"netdissect {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Interrupted as e:
        print(f"netdissect {args.command}: {e}", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(f"netdissect {args.command}: interrupted; "
              f"{getattr(args, 'on_interrupt', 'no result files were written for unfinished layers.')}",
              file=sys.stderr)
        return EXIT_CTRL_C


if __name__ == "__main__":
    sys.exit(main())
