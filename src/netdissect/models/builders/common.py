"""What the model builders share: in-place activations off, and meta-device shape probes.

The probes run a model once on the meta device through `netdissect.models.trace.output_shapes`
(no weights allocated, nothing computed), so they are cheap for any architecture.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from netdissect.models.trace import output_shapes

__all__ = ["disable_inplace", "has_submodule", "is_spatial", "last_spatial_child",
           "output_is_spatial"]


def disable_inplace(model: nn.Module) -> None:
    """Make in-place activations out-of-place, so a hook on a convolution sees its output
    unmodified by the activation that follows."""
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False


def has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def is_spatial(shape: tuple[int, ...]) -> bool:
    """Whether ``shape`` is N x C x H x W with H, W > 1."""
    return len(shape) == 4 and shape[2] > 1 and shape[3] > 1


def last_spatial_child(factory: Callable[[], nn.Module], size: int) -> list[str]:
    """The last top-level module with an N x C x H x W output (H, W > 1), as a one-name list.

    ``factory`` builds the model (it is called on the meta device); ``size`` is the input side.
    Returns [] when the model cannot run on the meta device, or when token sequences follow
    the last spatial output (transformers), where the user must choose layers.
    """
    shapes = output_shapes(factory, None, size)
    if not shapes:
        return []
    names, outputs = list(shapes), list(shapes.values())
    spatial = [i for i, shape in enumerate(outputs) if is_spatial(shape)]
    if not spatial or any(len(shape) == 3 for shape in outputs[spatial[-1] + 1:]):
        return []
    return [names[spatial[-1]]]


def output_is_spatial(factory: Callable[[], nn.Module], layer: str, size: int) -> bool:
    """Whether ``layer`` outputs N x C x H x W (H, W > 1), checked on the meta device."""
    shapes = output_shapes(factory, [layer], size)
    return bool(shapes) and layer in shapes and is_spatial(shapes[layer])
