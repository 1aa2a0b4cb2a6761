"""Models for dissection: the zoo, safe weight loading, layer capture and preprocessing.

- ``zoo``: ``build_model(spec)`` turns a name (``resnet18``, ``efficientnet_lite0``, ``timm:NAME``
  or ``package.module:callable``) into a ``ModelInfo`` with the model, its normalisation, input
  size, default layers and layer aliases.
- ``weights``: reads state dicts (``.pth`` with ``weights_only=True``, ``.safetensors``),
  refuses pickled models, loads them with clear errors, and fingerprints weights.
- ``capture``: forward hooks that record layer outputs.

Submodules are imported on use so that ``import netdissect`` stays fast.
"""
