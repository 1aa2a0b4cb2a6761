"""The one hook tool: read, replace or stop at the outputs of named layers.

    with Trace(model, "layer4") as t:                 # read one layer
        model(x)
    t.output                                           # what layer4 returned

    with TraceDict(model, ["layer3", "layer4"], stop=True) as td:
        try_forward(model, x)                          # stops after the last traced layer ran
    td["layer3"].output, td["layer4"].output

    with Trace(model, "layer4", edit_output=lambda out, layer: out * mask):
        logits = model(x)                              # layer4's output replaced downstream

Every forward hook of netdissect is registered here (`register_forward_hook` appears in this
module only), and every hook is removed in `__exit__`, also after an error.  Layers are
addressed by `model.get_submodule` names (`layer4.1.conv2`), never by evaluating strings.
`list_layers` and `output_shapes` run a model once, on real or meta tensors, to list what
each module outputs.  Design after baukit's nethook (Trace / TraceDict with edit and stop).
"""
from __future__ import annotations

import difflib
import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from netdissect.errors import LayerError

__all__ = ["Trace", "TraceDict", "StopForward", "try_forward", "find_module", "first_tensor",
           "token_grid", "as_feature_map", "list_layers", "output_shapes", "call_order"]


class StopForward(Exception):
    """Raised by a hook with `stop=True` to end the forward pass once its layer has run;
    `try_forward` (or the TraceDict/Trace context itself) swallows it."""


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


class Trace:
    """Hooks one layer's output for as long as the context is open.

    `retain_output` keeps the output in `.output` (a copy with `clone=True`, so a later
    in-place operation of the model cannot change it; detached with `detach=True`).
    `edit_output(output, layer) -> new output` replaces what the layer returns to the rest of
    the network.  `stop=True` ends the forward pass (StopForward) right after this layer.
    `calls` counts how many times the layer ran (a module can be called more than once in
    one forward pass, e.g. the one ReLU of torchvision's BasicBlock); `.output` is the last
    call's.
    """

    def __init__(self, model: nn.Module, layer: str | None = None, *, retain_output: bool = True,
                 clone: bool = False, detach: bool = False,
                 edit_output: Callable | None = None, stop: bool = False):
        self.layer = layer
        self.module = find_module(model, layer) if layer else model
        self.output = None
        self.retain_output, self.clone, self.detach = retain_output, clone, detach
        self.edit_output, self.stop = edit_output, stop
        self.ran = False
        self.calls = 0
        self._on_output: Callable[[str | None], None] | None = None  # set by TraceDict
        self._handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output):
        self.ran = True
        self.calls += 1
        if self.edit_output is not None:
            output = self.edit_output(output, self.layer)
        if self.retain_output:
            self.output = _copy(output, self.detach, self.clone)
        if self._on_output is not None:
            self._on_output(self.layer)
        if self.stop:
            raise StopForward()
        return output

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        self._handle.remove()


class TraceDict(OrderedDict):
    """A Trace per layer, by name, opened and closed together (in reverse order).

    With `stop=True` the forward pass ends as soon as every traced layer has run, whichever
    order the network runs them in: the part of the model after the last needed layer is
    never computed.  Other options apply to every layer; `edit_output` receives the layer name.
    """

    def __init__(self, model: nn.Module, layers: list[str], *, retain_output: bool = True,
                 clone: bool = False, detach: bool = False,
                 edit_output: Callable | None = None, stop: bool = False):
        super().__init__()
        self._pending: set[str] = set()
        self.order: list[str] = []  # the layers in the order they ran in the last pass
        self._stop = stop
        try:
            for layer in dict.fromkeys(layers):
                trace = Trace(model, layer, retain_output=retain_output, clone=clone,
                              detach=detach, edit_output=edit_output)
                trace._on_output = self._layer_ran
                self[layer] = trace
        except BaseException:
            self.close()
            raise
        self.reset()

    def reset(self) -> None:
        """Forget the outputs of the last forward pass (call before each new pass)."""
        self._pending = set(self)
        self.order = []
        for trace in self.values():
            trace.output, trace.ran, trace.calls = None, False, 0

    def _layer_ran(self, layer: str | None) -> None:
        if layer in self._pending:
            self.order.append(layer)
        self._pending.discard(layer)
        if self._stop and not self._pending:
            raise StopForward()

    def __enter__(self) -> "TraceDict":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        for trace in reversed(list(self.values())):
            trace.close()
            trace._on_output = None  # no cycle left: the outputs are freed with the dict


def _copy(output, detach: bool, clone: bool):
    """`output` with its tensors detached and/or cloned (tuples and lists item by item)."""
    if isinstance(output, torch.Tensor):
        output = output.detach() if detach else output
        return output.clone() if clone else output
    if isinstance(output, (tuple, list)) and (detach or clone):
        items = [_copy(item, detach, clone) for item in output]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    return output


def call_order(model: nn.Module, names: list[str], *args, **kwargs) -> list[str]:
    """The names of `names` in the order their modules ran in one pass `model(*args)`, a
    name once per call (a module called twice appears twice).  The pass runs to the end."""
    order: list[str] = []
    traces = []
    try:
        for name in dict.fromkeys(names):
            trace = Trace(model, name, retain_output=False)
            trace._on_output = order.append
            traces.append(trace)
        model(*args, **kwargs)
    finally:
        for trace in reversed(traces):
            trace.close()
            trace._on_output = None
    return order


def try_forward(model: nn.Module, *args, **kwargs):
    """`model(*args, **kwargs)`, or None when a stopping Trace ended the pass early."""
    try:
        return model(*args, **kwargs)
    except StopForward:
        return None


# -- feature maps of transformer layers -------------------------------------------------------
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
    (B x T x C, with optional class/register tokens first) reshaped onto their patch grid,
    row by row.  None when the output is neither."""
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 3:
        grid = token_grid(tensor.shape[1], input_hw)
        if grid is not None:
            extra, h, w = grid
            return tensor[:, extra:, :].reshape(tensor.shape[0], h, w, -1).permute(0, 3, 1, 2)
    return None


# -- listing layers ---------------------------------------------------------------------------
def list_layers(model: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """Every named module with its output shape for `inputs`, whether it can be dissected
    as it is ("yes"), after token reshaping ("tokens") or not ("no"), and how many times it
    ran in the pass (`calls`: a module that runs more than once cannot be dissected by name,
    see `Probe.features`).  The model's mode is left as it was."""
    names = [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    input_hw = tuple(inputs.shape[-2:])
    training = {m: m.training for m in model.modules()}
    records = {}
    try:
        with torch.inference_mode(), TraceDict(model, names) as traces:
            model.eval()(inputs)
    finally:
        for m, mode in training.items():
            m.training = mode
    for name in names:
        trace = traces[name]
        if not trace.ran:
            continue
        tensor = first_tensor(trace.output)
        if tensor is None:
            status = "no"
        elif tensor.dim() == 4:
            status = "yes"
        else:
            status = "tokens" if as_feature_map(tensor, input_hw) is not None else "no"
        records[name] = {"name": name, "type": type(modules[name]).__name__,
                         "shape": tuple(tensor.shape) if tensor is not None else None,
                         "dissectable": status, "calls": trace.calls}
    return list(records.values())


def output_shapes(factory: Callable[[], nn.Module], layers: list[str] | None, size: int
                  ) -> dict[str, tuple[int, ...]] | None:
    """The output shape of each of `layers` (default: the top-level children, in the order they
    run) for one size x size input, computed on the meta device: no weights are allocated and
    nothing is computed, so it is cheap for any architecture.  None when the model cannot run
    on the meta device."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = factory().eval()
        names = layers if layers is not None else [n for n, _ in model.named_children()]
        shapes: dict[str, tuple[int, ...]] = {}
        with torch.no_grad(), TraceDict(model, names, stop=True) as traces:
            model(torch.empty(1, 3, size, size, device="meta"))
    except Exception:  # any architecture that cannot run on meta tensors: no answer
        return None
    for name in traces.order:
        tensor = first_tensor(traces[name].output)
        shapes[name] = tuple(tensor.shape) if tensor is not None else ()
    return shapes

