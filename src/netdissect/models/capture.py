"""Capture the outputs of named layers of any torch.nn.Module in one forward pass.

Layers are addressed by dotted module names (`layer4`, `features.28`, `layer4.1.conv2`),
found with `get_submodule`, never by evaluating user strings.  `LayerCapture` is a context
manager: hooks are removed on exit, also after an error, so the model is left clean.
"""
from __future__ import annotations

import difflib

import torch
from torch import nn


class LayerError(ValueError):
    """A layer name that does not exist, or whose output cannot be dissected."""


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`, or a LayerError listing close matches."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise LayerError(f"layer {name!r} not found in {type(model).__name__}.{hint} "
                         "Run `netdissect layers MODEL` to list every layer.") from None


def first_tensor(output) -> torch.Tensor | None:
    """A module's output, or the first tensor of a tuple/list output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class LayerCapture:
    """Records the outputs of `layers` during forward passes of `model`.

    After `model(x)`, `capture.outputs[name]` holds each layer's (N, C, H, W) output.
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        self.model = model
        self.layers = list(layers)
        self.modules = {name: find_module(model, name) for name in self.layers}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "LayerCapture":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            tensor = first_tensor(output)
            if tensor is None or tensor.dim() != 4:
                shape = "no tensor" if tensor is None else tuple(tensor.shape)
                raise LayerError(
                    f"layer {name!r} outputs {shape}; dissection needs N x C x H x W feature "
                    "maps. Choose a convolutional layer (`netdissect layers MODEL` marks them).")
            # A copy: the model may modify its output in place later (ResNet's `out += x`).
            self.outputs[name] = tensor.detach().clone()
        return hook

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model on `inputs` and return the captured outputs by layer name."""
        self.outputs = {}
        self.model(inputs)
        missing = [n for n in self.layers if n not in self.outputs]
        if missing:
            raise LayerError(f"layer(s) {', '.join(missing)} did not run in the forward pass.")
        return self.outputs
