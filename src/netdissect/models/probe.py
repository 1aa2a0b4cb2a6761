"""A Probe: a model, the layers to read, and how to feed it; uint8 images in, feature maps out.

    probe = Probe(model, ["layer4"], Preprocess.preset("imagenet", size=224))
    with probe.session("cuda"):
        maps = probe(images)          # {"layer4": (B, 512, 7, 7) float32}, images uint8 (B,3,H,W)

`netdissect.models.zoo.build_model` returns one, with the model's own preprocessing, default
layers and layer aliases; the engine, the experiments and the demo all take one.  Transformer
layers (B x tokens x C) come out reshaped onto their patch grid (B x C x H x W).  The forward
pass stops as soon as every layer needed has run.  `session` moves the model to a device in
eval mode and puts it back as it was found (device and each module's mode) afterwards.
"""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from netdissect.errors import LayerError, SettingsError
from netdissect.models.preprocess import Preprocess
from netdissect.models.trace import (TraceDict, as_feature_map, call_order, first_tensor,
                                     try_forward)

__all__ = ["Probe", "default_device", "check_device", "usable_devices"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def usable_devices() -> list[str]:
    """The devices a model can run on here: cpu, cuda:0..N-1, mps."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: `default_device()`), or a SettingsError naming the
    devices that can be used when it is not a device name or not present on this machine."""
    if device is None or device == "":
        return default_device()
    usable = ", ".join(usable_devices())
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"--device {device!s}: not a device name; devices that can be used "
                            f"here: {usable}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "CUDA is not available on this machine"
        elif parsed.index is not None and parsed.index >= torch.cuda.device_count():
            why = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        else:
            return parsed
    elif parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available() and (parsed.index or 0) == 0:
            return parsed
        why = "MPS (Apple GPU) is not available on this machine"
    else:
        backend = getattr(torch, parsed.type, None)
        available = getattr(backend, "is_available", None)
        if parsed.type != "meta" and callable(available) and available():
            return parsed
        why = f"{parsed.type!r} devices cannot run a model here"
    raise SettingsError(f"--device {device!s}: {why}; devices that can be used here: {usable}")


@dataclass
class Probe:
    """What is needed to read a model's layers on a batch of images.

    `layers` are module names (for `model.get_submodule`); aliases given in `aliases`
    (friendly name -> module name) are resolved on construction, and None means
    `default_layers`.  `weights` is the weights file loaded (None for random or code-built
    weights) and `weights_fingerprint` its sha256, or of the tensors when there is no file
    (computed on first use).
    """

    model: nn.Module
    layers: list[str] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    name: str = "model"
    default_layers: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    weights: str | None = None
    weights_fingerprint: str = ""
    channels_last: bool = True
    inputs: Callable[[dict], torch.Tensor] | None = field(default=None, repr=False, compare=False)
    # layer -> how many times it ran in one forward pass, found on the first batch that reads
    # it; shared by the copies `select` makes (a layer that runs twice is refused)
    layer_calls: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.layers = self.resolve(self.default_layers if self.layers is None else self.layers)

    # -- layers ---------------------------------------------------------------------------
    def resolve(self, names: list[str]) -> list[str]:
        """Aliases to module names, each checked to exist; duplicates dropped, order kept.
        LayerError naming the unknown layer, close matches and the aliases."""
        resolved: list[str] = []
        for raw in names:
            name = raw.strip()
            target = self.aliases.get(name, name)
            if not target or not _has_submodule(self.model, target):
                raise LayerError(self._unknown_layer_message(name))
            if target not in resolved:
                resolved.append(target)
        return resolved

    def select(self, layers: list[str]) -> "Probe":
        """The same model and preprocessing, reading `layers` (names or aliases)."""
        return replace(self, layers=list(layers))

    def friendly_name(self, module_name: str) -> str:
        """The first alias that points at `module_name`, or the name itself."""
        return next((a for a, t in self.aliases.items() if t == module_name), module_name)

    def _unknown_layer_message(self, name: str) -> str:
        modules = [n for n, _ in self.model.named_modules() if n]
        close = difflib.get_close_matches(name, list(self.aliases) + modules, n=5)
        lines = [f"unknown layer {name!r} for model {self.name}."]
        if close:
            lines.append(f"Close matches: {', '.join(close)}.")
        if self.aliases:
            lines.append(f"Aliases: {', '.join(self.aliases)}.")
        lines.append("Any module name from model.named_modules() also works, e.g. "
                     f"{', '.join(modules[:3] + modules[-3:])}. `netdissect layers MODEL` lists them.")
        return " ".join(lines)

    # -- what it is -----------------------------------------------------------------------
    @property
    def mean(self):
        return self.preprocess.mean

    @property
    def std(self):
        return self.preprocess.std

    @property
    def input_size(self) -> int | None:
        """The side of the square input the model expects (None: unknown)."""
        return self.preprocess.size[0] if self.preprocess.size else None

    @property
    def preset(self) -> str:
        return self.preprocess.name

    def fingerprint(self) -> str:
        """sha256 of the weights file, or of the tensors (cached after the first call)."""
        if not self.weights_fingerprint:
            from netdissect.models.weights import fingerprint_state_dict

            self.weights_fingerprint = fingerprint_state_dict(self.model)
        return self.weights_fingerprint

    def describe(self) -> dict:
        """What a result's summary.json records of the model."""
        return {"name": self.name, "weights": self.weights, "preset": self.preset,
                "weights_fingerprint": self.fingerprint()}

    # -- running it -----------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, device: str | torch.device | None = None) -> Iterator[torch.device]:
        """Run the model on `device` (default: CUDA when available) in eval mode for the block,
        then restore each module's mode and the model's device as they were found.
        SettingsError naming the usable devices when `device` is not one of them."""
        device = check_device(device)
        modes = {m: m.training for m in self.model.modules()}
        before = _device_of(self.model)
        self.model.to(device).eval()
        try:
            yield device
        finally:
            for module, mode in modes.items():
                module.training = mode
            if before is not None and before != device:
                self.model.to(before)

    def device(self) -> torch.device:
        return _device_of(self.model) or torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (B, 3, H, W) images -> {layer: float32 (B, C, h, w)}, without gradients."""
        return self.features(images, self.layers)

    def read(self, batch: dict) -> dict[str, torch.Tensor]:
        """The feature maps of the probe's layers for a data-loader batch: of its images, or,
        with `inputs`, of the model input that `inputs` makes of the batch (the engine's
        passes call this)."""
        if self.inputs is None:
            return self(batch["image"])
        x = self.inputs(batch).to(self.device(), non_blocking=True)
        return self.features_of_input(x, self.layers)

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """The feature maps of module names `layers` for uint8 images (what `__call__` returns
        for the probe's own layers).

        The first pass that reads a layer runs the whole model, to count how many times each
        layer runs; a layer that runs more than once (a module called twice, such as the one
        ReLU of a ResNet BasicBlock) has no single output and is refused with a LayerError
        naming alternatives.  Later passes stop as soon as every layer needed has run."""
        x = self.preprocess(images.to(self.device(), non_blocking=True), self.channels_last)
        return self.features_of_input(x, layers)

    def features_of_input(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """The feature maps of `layers` for the model input `x`, as it is (see `features`)."""
        self._refuse_repeated(layers, x)
        first = any(name not in self.layer_calls for name in layers)
        with torch.inference_mode(), TraceDict(self.model, layers, clone=True, stop=not first) as traces:
            # clone: the model may change an output in place later (ResNet's `out += x`)
            if first:
                self._counting_pass(x, traces)
            else:
                try_forward(self.model, x)
        self._refuse_repeated(layers, x)
        return {name: self._feature_map(name, traces[name], x.shape[-2:]).float() for name in layers}

    def _counting_pass(self, x: torch.Tensor, traces: TraceDict) -> None:
        """A full forward pass recording how many times each traced layer ran.  An error after
        every traced layer has run (a head that does not fit the input size: the stopping
        passes never reach it) ends the count there."""
        try:
            self.model(x)
        except Exception:
            if not all(trace.ran for trace in traces.values()):
                raise
        for name, trace in traces.items():
            if trace.ran:
                self.layer_calls[name] = trace.calls

    def _refuse_repeated(self, layers: list[str], x: torch.Tensor) -> None:
        for name in layers:
            if self.layer_calls.get(name, 1) > 1:
                raise LayerError(self._repeated_layer_message(name, x))

    def _repeated_layer_message(self, name: str, x: torch.Tensor) -> str:
        calls = self.layer_calls[name]
        module = self.model.get_submodule(name)
        parent_name, _, own = name.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        siblings = [f"{parent_name}.{n}" if parent_name else n
                    for n, m in parent.named_children() if m is not module]
        # which sibling ran just before each call of the layer
        try:
            with torch.inference_mode():
                order = call_order(self.model, siblings + [name], x)
        except Exception:
            order = []
        before = []
        for i, ran in enumerate(order):
            if ran == name and i > 0 and order[i - 1] != name:
                before.append(f"{order[i - 1]!r} (before call {len(before) + 1})")
            elif ran == name:
                before.append(None)
        options = []
        if parent_name:
            options.append(f"the enclosing block {parent_name!r}")
        named = [b for b in before if b]
        if named:
            options.append("the module that runs before one of its calls: " + ", ".join(named))
        alternatives = " or ".join(options) if options else "another layer"
        return (f"layer {name!r} ({type(module).__name__}) runs {calls} times in one forward "
                f"pass of {self.name}, so it has no single output to dissect. Choose "
                f"{alternatives}. `netdissect layers MODEL` marks such modules.")

    def _feature_map(self, name: str, trace, input_hw) -> torch.Tensor:
        if not trace.ran:
            raise LayerError(f"layer {name!r} did not run in the forward pass of {self.name}.")
        tensor = first_tensor(trace.output)
        maps = None if tensor is None else as_feature_map(tensor, tuple(input_hw))
        if maps is None:
            shape = "no tensor" if tensor is None else tuple(tensor.shape)
            raise LayerError(
                f"layer {name!r} outputs {shape}; dissection needs N x C x H x W feature "
                "maps or B x tokens x C transformer tokens on a patch grid. Choose another "
                "layer (`netdissect layers MODEL` marks them).")
        return maps


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _device_of(model: nn.Module) -> torch.device | None:
    """The one device holding all the model's tensors, else None (empty or spread out)."""
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    return devices.pop() if len(devices) == 1 else None
