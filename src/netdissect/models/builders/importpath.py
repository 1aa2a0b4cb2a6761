"""``package.module:callable`` specs: a model from the user's own code.

The callable (a function or class, ``attr.sub`` paths allowed) is called without arguments and
returns an ``nn.Module`` or a ready :class:`~netdissect.models.probe.Probe`; an ``nn.Module``
or Probe object named directly is used as it is.  A plain module gets ImageNet normalisation
(docs/method.md section 3), no input size, no default layers and no aliases.

The module must be importable from the current directory or PYTHONPATH.  The current
directory is put at the front of ``sys.path`` only while the module is imported and the
callable runs, and taken off again afterwards, so importing user code changes nothing for
good.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

from torch import nn

from netdissect.errors import ModelError
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import RANDOM_WEIGHTS, spec_forms

__all__ = ["build_from_import_path"]


def build_from_import_path(weights: str | None = None, *, spec: str, **_options) -> Probe:
    """Import ``package.module:callable``, call it, and load ``weights`` into its model."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ModelError(f"bad model spec {spec!r}. {spec_forms()}")
    with _cwd_importable():
        obj = _attribute(_import(module_name, spec), module_name, attr_path, spec)
        probe = _as_probe(obj if isinstance(obj, (nn.Module, Probe)) else _call(obj, spec), spec)
    if weights is not None and weights != RANDOM_WEIGHTS:
        loaded = weights_io.load_weights(probe.model, weights)
        probe.weights, probe.weights_fingerprint = loaded["path"], loaded["sha256"]
    return probe


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """Put the current directory at the front of sys.path for the block (unless it is there)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: ours, unless user code added another


def _import(module_name: str, spec: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(
            f"cannot import {module_name!r} for model spec {spec!r}: {err}. The module must be "
            "importable from the current directory or PYTHONPATH."
        ) from err


def _attribute(obj: object, module_name: str, attr_path: str, spec: str) -> object:
    """``obj.attr.sub`` for ``attr_path`` = ``attr.sub``."""
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr_path!r} (spec {spec!r}).")
        obj = getattr(obj, part)
    return obj


def _call(obj: object, spec: str) -> object:
    if not callable(obj):
        raise ModelError(f"{spec!r} names a {type(obj).__name__}, not a callable or nn.Module.")
    return obj()


def _as_probe(result: object, spec: str) -> Probe:
    """The Probe returned by user code, or a plain module wrapped in one."""
    if isinstance(result, Probe):
        return result
    if isinstance(result, nn.Module):
        return Probe(result, preprocess=Preprocess.preset("imagenet"), name=spec)
    raise ModelError(
        f"{spec!r} returned a {type(result).__name__}; it must return an nn.Module "
        "(or a netdissect Probe)."
    )
