"""Read weight files safely and load them into models: the one weight-loading path.

Every model builder loads a file through :func:`load_weights`, which reads the state dict (or
takes one the builder already read to size the model), checks that it fits the architecture,
loads it, hashes the file once (sha256) and checks the hash prefix of a torch-hub style name.

Only tensors are ever unpickled: ``.pt``/``.pth`` files go through
``torch.load(..., weights_only=True)`` and ``.safetensors`` files through safetensors, so a
weights file cannot run code. The common checkpoint shapes are accepted (a plain state dict, one
nested under ``state_dict`` or ``model``, keys prefixed by ``module.`` from DataParallel or
``_orig_mod.`` from ``torch.compile``); a pickled whole model is refused with the one-line
conversion that fixes it. Fingerprints (sha256) identify the weights a result was computed
with, either of the file or, for models built in code, of the tensors themselves
(:func:`fingerprint_state_dict`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netdissect.errors import WeightsError
from netdissect.files import sha256_file

__all__ = [
    "WeightsError",
    "read_state_dict",
    "read_metadata",
    "load_weights",
    "apply_state_dict",
    "fingerprint_state_dict",
    "check_hash_prefix",
    "name_hash_prefix",
    "strip_wrapper_names",
]

# Keys under which training scripts commonly nest the model's state dict, most specific first.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Wrapper prefixes that carry no meaning for the bare model.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# How many names an error message lists before summarising the rest.
_LIST_LIMIT = 10

_CONVERT_HINT = (
    "netdissect only reads state dicts (tensors), never pickled Python objects, because "
    "unpickling can run arbitrary code. Convert the file once, in an environment that has the "
    "model's code and where you trust the file:\n"
    "    import torch\n"
    "    model = torch.load('{path}', weights_only=False)\n"
    "    torch.save(model.state_dict(), 'weights.pth')\n"
    "(for a checkpoint dict, save its state dict entry instead, e.g. "
    "torch.save(ckpt['state_dict'], 'weights.pth')), then pass weights.pth instead."
)


def fingerprint_state_dict(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Return a sha256 over the sorted names, dtypes, shapes and bytes of all tensors.

    For a module, all parameters and buffers (persistent or not) are covered; for a mapping,
    its tensor values. Two models with equal weights get equal fingerprints whatever their
    device, which identifies weights that never lived in a file (random init, code-built).
    """
    if isinstance(model, nn.Module):
        tensors = dict(model.named_parameters())
        tensors.update(model.named_buffers())
    else:
        tensors = {k: v for k, v in model.items() if isinstance(v, torch.Tensor)}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        header = f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode()
        digest.update(header)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def name_hash_prefix(path: str | Path) -> str | None:
    """The sha256 prefix in a torch-hub style name (``f37072fd`` of ``resnet18-f37072fd.pth``).

    Read like ``torch.hub`` reads it: at least 6 hex digits between a ``-`` and a ``.``. None
    when the name carries none.
    """
    match = re.search(r"-([a-f0-9]{6,})\.", Path(path).name)
    return match.group(1) if match else None


def check_hash_prefix(path: str | Path, sha256: str) -> None:
    """Check a file named like ``resnet18-f37072fd.pth`` against its sha256 prefix.

    torchvision and torch.hub put the first hex digits of the file's sha256 in its name; a
    mismatch means a truncated or corrupted download. Files without such a suffix pass.
    """
    prefix = name_hash_prefix(path)
    if prefix and not sha256.startswith(prefix):
        raise WeightsError(
            f"{path}: its sha256 {sha256[:16]}... does not start with {prefix}, the hash "
            "in its name; the file is corrupted or incomplete. Delete it and fetch it again."
        )


def read_metadata(path: str | Path, what: str, retrain: str) -> dict:
    """The JSON metadata stored beside an embedded model's weights; WeightsError naming the
    file, `what` it describes and the `retrain` command when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: {what} metadata missing; reinstall netdissect or retrain "
                           f"with `{retrain}`.") from None
    except ValueError as err:
        raise WeightsError(f"{path}: not valid JSON ({err}); retrain with `{retrain}`.") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pt``/``.pth``/``.bin``/``.tar`` or ``.safetensors`` file.

    Unwraps checkpoints that nest the weights under ``state_dict`` (or ``model``,
    ``model_state_dict``, ``net``) and strips a ``module.``/``_orig_mod.`` prefix shared by all
    keys. Raises WeightsError for a missing or unreadable file, a pickled whole model, or a
    file that holds no tensors.
    """
    path = _existing_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise WeightsError(f"could not read {path} as safetensors: {err}") from err
        return _strip_wrapper_prefixes(dict(state))

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" (it needs {found.group(1)})" if found else ""
        raise WeightsError(
            f"{path} holds pickled Python objects{what}, most likely a whole model saved with "
            "torch.save(model, ...), not just tensors.\n" + _CONVERT_HINT.format(path=path)
        ) from err
    except Exception as err:
        raise WeightsError(
            f"could not read {path} with torch.load: {type(err).__name__}: {err}. "
            "Expected a state dict saved with torch.save(model.state_dict(), path) "
            "or a .safetensors file."
        ) from err
    return _strip_wrapper_prefixes(_unwrap_checkpoint(obj, path))


def _existing_file(path: str | Path) -> Path:
    """``path`` as a Path, or WeightsError when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    return path


def _unwrap_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a loaded checkpoint object."""
    while True:
        if isinstance(obj, nn.Module):
            raise WeightsError(f"{path} holds a whole model.\n" + _CONVERT_HINT.format(path=path))
        if not isinstance(obj, Mapping):
            raise WeightsError(
                f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)."
            )
        nested = next(
            (key for key in _NESTED_KEYS if isinstance(obj.get(key), (Mapping, nn.Module))), None
        )
        if nested is None:
            break
        obj = obj[nested]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not tensors:
        raise WeightsError(
            f"{path} holds a dict without tensors (keys: {_preview(others)}); expected a state "
            f"dict, possibly nested under one of {', '.join(_NESTED_KEYS)}."
        )
    if others:
        raise WeightsError(
            f"{path} mixes tensors with other values under keys {_preview(others)}; expected a "
            "plain state dict or a checkpoint dict with a 'state_dict' entry."
        )
    return {str(k): v for k, v in tensors.items()}


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel/compile prefix when every key carries it."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                changed = True
    return state


def strip_wrapper_names(key: str) -> str:
    """Remove ``module``/``_orig_mod`` path components anywhere in a state dict key.

    Places365 AlexNet/VGG checkpoints wrap only ``features`` in DataParallel, giving keys
    such as ``features.module.0.weight``.
    """
    return ".".join(part for part in key.split(".") if part not in ("module", "_orig_mod"))


def _preview(names: list[str]) -> str:
    """List up to _LIST_LIMIT names, then say how many more there are."""
    shown = ", ".join(names[:_LIST_LIMIT])
    more = len(names) - _LIST_LIMIT
    return shown + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


def apply_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    strict: bool = True,
    source: str = "state dict",
) -> dict[str, Any]:
    """Load ``state`` into ``model`` after checking that it fits, and report what happened.

    Keys that only differ by ``module.`` components inside the name are matched. Shape
    mismatches always raise; missing and unexpected keys raise when ``strict`` and are
    otherwise returned in the result (``missing``, ``unexpected``). BatchNorm's
    ``num_batches_tracked`` counters may be absent (old files). ``source`` names the weights in
    error messages.
    """
    expected = model.state_dict()
    state = dict(state)
    if set(state) != set(expected):
        renamed = {strip_wrapper_names(key): value for key, value in state.items()}
        if len(renamed) == len(state) and len(set(renamed) & set(expected)) > len(
            set(state) & set(expected)
        ):
            state = renamed
    for key in expected:
        # Files from PyTorch < 0.4.1 predate BatchNorm's step counter, unused in eval mode.
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = expected[key]
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"the weights in {source} do not fit the {type(model).__name__} architecture:"]
        if missing:
            lines.append(f"  {len(missing)} missing keys: {_preview(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys: {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches: {_preview(mismatched)}")
        lines.append(
            "Check that the weights belong to this architecture (and its number of classes)."
        )
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=strict)
    return {
        "num_tensors": len(state),
        "num_elements": int(sum(t.numel() for t in state.values())),
        "missing": missing,
        "unexpected": unexpected,
    }


def load_weights(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    state: Mapping[str, torch.Tensor] | None = None,
    check_hash: bool = False,
) -> dict[str, Any]:
    """Load a weights file into ``model`` in place and describe what was loaded.

    ``state`` is the file's state dict when the caller has already read it (a builder that
    sizes the classifier from it, possibly with renamed keys); otherwise the file is read here.
    The file's sha256 is computed once and returned; with ``check_hash`` (files of the torch
    hub cache and packaged weights, whose names carry a hash) it is checked against the hash
    prefix in the name (:func:`check_hash_prefix`) before anything is loaded.  User files are
    not checked: a name like ``ckpt-020000.pth`` carries a step, not a hash. Returns a dict with
    ``path``, ``sha256``, ``num_tensors``, ``num_elements`` and the ``missing``/``unexpected``
    keys (empty when ``strict``). Raises WeightsError when the file is missing, unsafe,
    corrupted or does not fit (see :func:`apply_state_dict`).
    """
    sha256 = sha256_file(_existing_file(path))
    if check_hash:
        check_hash_prefix(path, sha256)  # before loading: a truncated download says so
    if state is None:
        state = read_state_dict(path)
    info = apply_state_dict(model, state, strict=strict, source=str(path))
    return {"path": str(path), "sha256": sha256, **info}
