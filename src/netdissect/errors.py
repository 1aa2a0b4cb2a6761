"""The errors netdissect raises on bad input, all subclasses of one base.

The command line catches `NetDissectError` once and prints its message (which names the file,
row, layer or option and says what to do) with the exit status of the class:

    0    success
    2    a NetDissectError: bad input, options, data, weights or layer names
    130  interrupted with Ctrl-C (no result files for unfinished layers)
    143  stopped by SIGTERM after saving the run's state (run the same command to resume)

Anything else escaping is a bug and shows its traceback.  Each class also derives from the
built-in exception that callers of the Python API caught before (ValueError for bad values,
FileNotFoundError for missing result folders), so existing `except` clauses keep working.
"""
from __future__ import annotations

__all__ = ["NetDissectError", "SettingsError", "BrodenError", "LayerError", "ModelError",
           "WeightsError", "DissectError", "DownloadError", "ResultError", "OutputError", "Interrupted",
           "EXIT_ERROR", "EXIT_CTRL_C", "EXIT_SIGTERM"]

EXIT_ERROR = 2
EXIT_CTRL_C = 130
EXIT_SIGTERM = 143


class NetDissectError(Exception):
    """Bad input that netdissect explains in its message; the CLI exits with status 2."""


class SettingsError(NetDissectError, ValueError):
    """An option or argument value out of range or inconsistent with the others."""


class BrodenError(NetDissectError, ValueError):
    """A Broden-format dataset that cannot be read as it is; the message says where and why."""


class LayerError(NetDissectError, ValueError):
    """A layer name that does not exist, or whose output cannot be dissected or edited."""


class ModelError(NetDissectError):
    """A model spec, preset or layer alias that cannot be resolved."""


class WeightsError(NetDissectError):
    """A weights file is missing, unreadable, unsafe, or does not fit the model."""


class DissectError(NetDissectError, RuntimeError):
    """A dissection that cannot go on; the message names the layer, unit or file."""


class DownloadError(NetDissectError):
    """A download that failed; the message says what to do next."""


class OutputError(NetDissectError, FileExistsError):
    """An output folder that exists and holds something else; the message says what to do."""


class ResultError(NetDissectError, FileNotFoundError):
    """A result folder (or experiment output) that is missing or not netdissect's."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped (SIGTERM or Ctrl-C) after saving its state; exit status 143.

    A KeyboardInterrupt, not a NetDissectError, so that `except Exception` in user code does
    not swallow a request to stop."""
