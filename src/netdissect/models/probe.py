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
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from netdissect.errors import LayerError
from netdissect.models.preprocess import Preprocess
from netdissect.models.trace import TraceDict, as_feature_map, first_tensor, try_forward

__all__ = ["Probe", "default_device"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        then restore each module's mode and the model's device as they were found."""
        device = torch.device(device) if device else default_device()
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

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """The feature maps of module names `layers` for uint8 images (what `__call__` returns
        for the probe's own layers)."""
        x = self.preprocess(images.to(self.device(), non_blocking=True), self.channels_last)
        with torch.inference_mode(), TraceDict(self.model, layers, clone=True, stop=True) as traces:
            # clone: the model may change an output in place later (ResNet's `out += x`)
            try_forward(self.model, x)
        return {name: self._feature_map(name, traces[name], x.shape[-2:]).float() for name in layers}

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
