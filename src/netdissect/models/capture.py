"""Capture the outputs of named layers of any torch.nn.Module in one forward pass.

Transformer layers whose output is a token sequence (B x T x C, class and register tokens
first) are reshaped to B x C x H x W on their patch grid, the extra tokens dropped.
Layers are addressed by dotted module names (`layer4`, `features.28`, `layer4.1.conv2`),
found with `get_submodule`, never by evaluating user strings.  `LayerCapture` is a context
manager: hooks are removed on exit, also after an error, so the model is left clean.
"""
from __future__ import annotations

import difflib

import torch
from torch import nn

from netdissect.errors import LayerError


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


def token_grid(tokens: int, input_hw: tuple[int, int], max_extra: int = 17) -> tuple[int, int, int] | None:
    """For a (B, tokens, C) transformer output: (leading extra tokens, grid H, grid W).

    The extra tokens (a class token, register tokens) come first; the rest must form a grid
    with the input's aspect ratio and an integer patch size.  None when nothing fits.
    """
    H, W = input_hw
    for extra in range(0, max_extra + 1):
        n = tokens - extra
        if n <= 0:
            break
        # grid h x w with h/w = H/W: h = sqrt(n * H / W)
        h = round((n * H / W) ** 0.5)
        if h > 0 and n % h == 0:
            w = n // h
            if H % h == 0 and W % w == 0 and H // h == W // w:
                return extra, h, w
    return None


def as_feature_map(tensor: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor | None:
    """An N x C x H x W view of a layer output: conv maps as they are, transformer tokens
    (B x T x C, with optional class/register tokens first) reshaped onto their patch grid."""
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 3:
        grid = token_grid(tensor.shape[1], input_hw)
        if grid is not None:
            extra, h, w = grid
            return tensor[:, extra:, :].reshape(tensor.shape[0], h, w, -1).permute(0, 3, 1, 2)
    return None


def list_layers(model: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """Every named module with its output shape for `inputs`, and whether it can be dissected
    as it is ("yes"), after token reshaping ("tokens") or not ("no")."""
    records: dict[str, dict] = {}
    handles = []

    def hook(name):
        def record(module, args, output):
            tensor = first_tensor(output)
            shape = tuple(tensor.shape) if tensor is not None else None
            if tensor is None:
                status = "no"
            elif tensor.dim() == 4:
                status = "yes"
            else:
                status = "tokens" if as_feature_map(tensor, tuple(inputs.shape[-2:])) is not None else "no"
            records.setdefault(name, {"name": name, "type": type(module).__name__, "shape": shape,
                                      "dissectable": status})
        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with torch.inference_mode():
            model.eval()(inputs)
    finally:
        for h in handles:
            h.remove()
    order = [n for n, _ in model.named_modules() if n in records]
    return [records[n] for n in order]


class LayerCapture:
    """Records the outputs of `layers` during forward passes of `model`.

    After `model(x)`, `capture.outputs[name]` holds each layer's (N, C, H, W) output.
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        self.model = model
        self.layers = list(layers)
        self.modules = {name: find_module(model, name) for name in self.layers}
        self.outputs: dict[str, torch.Tensor] = {}
        self.input_hw: tuple[int, int] = (0, 0)
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
            maps = None if tensor is None else as_feature_map(tensor, self.input_hw)
            if maps is None:
                shape = "no tensor" if tensor is None else tuple(tensor.shape)
                raise LayerError(
                    f"layer {name!r} outputs {shape}; dissection needs N x C x H x W feature "
                    "maps or B x tokens x C transformer tokens on a patch grid. Choose another "
                    "layer (`netdissect layers MODEL` marks them).")
            # A copy: the model may modify its output in place later (ResNet's `out += x`).
            self.outputs[name] = maps.detach().clone()
        return hook

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model on `inputs` and return the captured outputs by layer name."""
        self.outputs = {}
        self.input_hw = tuple(inputs.shape[-2:])
        self.model(inputs)
        missing = [n for n in self.layers if n not in self.outputs]
        if missing:
            raise LayerError(f"layer(s) {', '.join(missing)} did not run in the forward pass.")
        return self.outputs
