"""Models for dissection: how to feed them, read their layers and edit them.

- ``trace``: the one hook tool, ``Trace``/``TraceDict`` (read, replace or stop at layer outputs).
- ``preprocess``: ``Preprocess`` (mean, std, input size) and the ``PRESETS``.
- ``probe``: ``Probe``, a model + layers + preprocessing turning uint8 images into feature maps.
- ``zoo``: ``build_model(spec)`` turns a name (``resnet18``, ``efficientnet_lite0``,
  ``timm:NAME`` or ``package.module:callable``) into a Probe with the model's own
  preprocessing, default layers and aliases; builders live in ``builders/`` and register
  themselves in ``registry``.
- ``weights``: reads state dicts (``.pth`` with ``weights_only=True``, ``.safetensors``),
  refuses pickled models, loads them with clear errors, and fingerprints weights.

Submodules are imported on use so that ``import netdissect`` stays fast.
"""
