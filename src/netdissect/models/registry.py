"""The model registry: zoo names -> builder functions, filled by the builders as they are imported.

    @register_model("resnet18")
    def resnet18(weights: str | None = None, **options) -> Probe:
        return build_torchvision("resnet18", weights, **options)

    get_builder("resnet18")(None)        # a Probe; get_builder("nope") is None
    registered_models()                   # the zoo names, in registration order

A builder takes ``weights`` (a file path, :data:`RANDOM_WEIGHTS` for random initialisation on
purpose, or None for the model's default weights) and keyword ``options`` it may ignore
(``pretrained_cache_only``), and returns a :class:`~netdissect.models.probe.Probe`.  The
builders live in ``netdissect.models.builders`` (one module per family) and register themselves
on import; ``netdissect.models.zoo.build_model`` imports them and dispatches specs here.
Design after torchvision's ``models/_api.py`` (``register_model`` / ``get_model``).
"""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["register_model", "get_builder", "registered_models", "spec_forms",
           "RANDOM_WEIGHTS", "RandomWeightsWarning"]

#: Pass as ``weights`` to build a randomly initialised model without a warning.
RANDOM_WEIGHTS = "random"

_BUILDERS: dict[str, Callable] = {}


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights because no trained weights were available."""


def register_model(*names: str) -> Callable[[Callable], Callable]:
    """Register the decorated builder under each of ``names`` (lower case, ``_`` not ``-``).

    Registering a name twice for different functions is a programming error (ValueError).
    """
    def decorator(builder: Callable) -> Callable:
        for name in names:
            key = _key(name)
            if _BUILDERS.get(key, builder) is not builder:
                raise ValueError(f"model {key!r} is already registered")
            _BUILDERS[key] = builder
        return builder

    return decorator


def get_builder(name: str) -> Callable | None:
    """The builder registered as ``name`` (case and ``-``/``_`` ignored), or None."""
    return _BUILDERS.get(_key(name))


def registered_models() -> list[str]:
    """The registered zoo names, in the order they were registered."""
    return list(_BUILDERS)


def spec_forms() -> str:
    """One sentence on the model specs ``build_model`` accepts, for error messages."""
    return (
        f"A model spec is a zoo name ({', '.join(registered_models())}), another torchvision "
        "classification model name, 'timm:NAME' for a timm model (pip install timm), or "
        "'package.module:callable' naming a function that returns an nn.Module (importable "
        "from the current directory or PYTHONPATH)."
    )


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")
