"""Segmenter specs: the one function that turns `--segmenter SPEC` into a Segmenter.

    toyworld                   the toy world's segmenter (weights shipped in the package)
    toyworld64                 the same fine-tuned on 64x64 images (the toy GAN's), shipped
    tv:NAME                    a torchvision semantic segmentation model (VOC's 20 classes)
    hf:REPO_OR_FOLDER          a Hugging Face transformers semantic segmentation model
    package.module:callable    the user's own segmenter

`load_segmenter(spec, weights=..., colors=..., device=...)` resolves them; `colors=True` adds
the colour namer's plane (netdissect.data.segment.colors).  Nothing is ever downloaded:

- `tv:NAME` (deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large,
  fcn_resnet50, fcn_resnet101, lraspp_mobilenet_v3_large): the weights are a state dict FILE
  (`weights=`, loaded safely by netdissect.models.weights) or torchvision's own file
  (COCO_WITH_VOC_LABELS_V1) already in torch's hub cache (`$TORCH_HOME/hub/checkpoints`),
  checked against the hash in its name.  Labels: the 20 Pascal VOC classes as objects (class 0,
  background, is no label), with VOC's names (aeroplane, diningtable, pottedplant,
  tvmonitor, ...).  The model sees ImageNet-normalised images at the dataset's size; its
  "out" head's argmax is the plane.
- `hf:REPO_OR_FOLDER` (`pip install netdissect[hf]`): AutoModelForSemanticSegmentation and
  its image processor from a local folder (save_pretrained) or the Hugging Face cache, with
  `local_files_only=True`.  Label names: `config.id2label`, the first of `;`-separated
  synonyms, stripped; a class named "background" is no label.  Categories: every label is an
  "object" (ADE20K's 150 classes are objects in Broden's sense) unless the config holds an
  `id2category` map (class id -> color/object/part/material).  The logits are upsampled to the
  image (bilinear, the processor's `post_process_semantic_segmentation`) before the argmax.
- `package.module:callable`: importable from the current directory or PYTHONPATH (the
  import helpers of netdissect.models.builders.importpath); a callable returning an object
  with `labels()` and `segment()` (or such an object itself).  `weights=` loads a state dict
  into it when it is an `nn.Module`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from netdissect.data.segment.base import Segmenter, SegmenterLabel
from netdissect.data.segment.colors import with_colors
from netdissect.errors import ModelError, SettingsError, WeightsError
from netdissect.files import sha256_file
from netdissect.models import fetch
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["load_segmenter", "SPEC_FORMS", "TorchvisionSegmenter", "HFSegmenter",
           "NamedSegmenter"]

SPEC_FORMS = ("A segmenter spec is 'toyworld', 'toyworld64' (fine-tuned on 64x64 images, "
              "for the toy GAN), 'tv:NAME' (a torchvision segmentation model: "
              "deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large, "
              "fcn_resnet50, fcn_resnet101, lraspp_mobilenet_v3_large), 'hf:REPO_OR_FOLDER' (a "
              "Hugging Face semantic segmentation model; pip install netdissect[hf]) or "
              "'package.module:callable' (your own segmenter, importable from the current "
              "directory or PYTHONPATH).")

_BACKGROUND = ("background", "__background__")


def load_segmenter(spec: str, *, weights: str | os.PathLike | None = None, colors: bool = False,
                   device: str | torch.device = "cpu") -> Segmenter:
    """The Segmenter named by `spec` (see the module docstring) on `device`, with the colour
    namer's plane added when `colors`.  ModelError for a spec that cannot be resolved,
    WeightsError for missing or unfitting weights, SettingsError for a `weights` the spec
    does not take."""
    from netdissect.models.probe import check_device

    device = check_device(device)
    spec = str(spec).strip()
    if spec in ("toyworld", "toyworld64"):
        segmenter = _toyworld(spec, weights, device)
    elif spec.startswith("tv:"):
        segmenter = TorchvisionSegmenter(spec[3:], weights=weights, device=device)
    elif spec.startswith("hf:"):
        if weights is not None:
            raise SettingsError(f"--weights: {spec} loads the weights of its own folder or hub "
                                "cache entry; leave --weights out.")
        segmenter = HFSegmenter(spec[3:], device=device)
    elif ":" in spec:
        segmenter = _import_path(spec, weights, device)
    else:
        raise ModelError(f"unknown segmenter {spec!r}. {SPEC_FORMS}")
    return with_colors(segmenter) if colors else segmenter


class NamedSegmenter:
    """A segmenter under the name of its spec (for messages and the output's record), with the
    sha256 of the weights file it was loaded from (None when none was given)."""

    def __init__(self, segmenter: Segmenter, name: str, weights_sha256: str | None = None):
        self.segmenter = segmenter
        self.name = name
        self.weights_sha256 = weights_sha256

    def labels(self) -> list[SegmenterLabel]:
        """The wrapped segmenter's labels."""
        return self.segmenter.labels()

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped segmenter's planes."""
        return self.segmenter.segment(images)


# -- toyworld -------------------------------------------------------------------------------

def _toyworld(spec: str, weights: str | os.PathLike | None, device: torch.device) -> NamedSegmenter:
    """`toyworld` (the shipped weights) or `toyworld64` (fine-tuned on 64x64 images)."""
    from netdissect.data.segment.toyworld import WEIGHTS, WEIGHTS_64, load_toyworld_segmenter

    path = Path(weights) if weights is not None else (WEIGHTS_64 if spec == "toyworld64" else WEIGHTS)
    segmenter = load_toyworld_segmenter(device, weights=path)
    return NamedSegmenter(segmenter, spec, sha256_file(path))


# -- torchvision ------------------------------------------------------------------------------

class TorchvisionSegmenter:
    """A torchvision semantic segmentation model as a Segmenter: Pascal VOC's 20 classes as
    objects (see the module docstring for the weights)."""

    def __init__(self, arch: str, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from torchvision import models as tvm
        from torchvision.models import get_model_weights

        available = tvm.list_models(module=tvm.segmentation)
        self.name = f"tv:{arch}"
        if arch not in available:
            raise ModelError(f"unknown torchvision segmentation model {arch!r} in {self.name!r}; "
                             f"choose one of {', '.join(available)}.")
        published = get_model_weights(arch).DEFAULT
        self.categories = list(published.meta["categories"])  # [__background__, aeroplane, ...]
        path, from_cache = _torchvision_weights(arch, published.url, weights)
        state = weights_io.read_state_dict(path)
        kwargs = {"aux_loss": True} if any(k.startswith("aux_classifier.") for k in state) else {}
        model = tvm.get_model(arch, weights=None, weights_backbone=None,
                              num_classes=len(self.categories), **kwargs)
        loaded = weights_io.load_weights(model, path, state=state, check_hash=from_cache)
        self.weights, self.weights_sha256 = loaded["path"], loaded["sha256"]
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def labels(self) -> list[SegmenterLabel]:
        """VOC's 20 object classes (the background class is label 0, no label)."""
        return [SegmenterLabel(name, "object") for name in self.categories[1:]]

    @torch.inference_mode()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) argmax of the "out" head (0..20)."""
        x = (images.to(self.device, torch.float32) - self._mean) / self._std
        return self.model(x)["out"].argmax(1, keepdim=True)


def _torchvision_weights(arch: str, url: str, weights: str | os.PathLike | None
                         ) -> tuple[Path, bool]:
    """The weights file of tv:`arch` and whether it is torchvision's own (hash in its name):
    `weights`, else torchvision's file in the hub cache; WeightsError saying how to get them."""
    if weights is not None:
        return Path(weights), False
    name = os.path.basename(url)
    path = fetch.checkpoints_dir() / name
    if path.is_file():
        return path, True
    raise WeightsError(
        f"tv:{arch}: no weights given, and torchvision's {name} is not in torch's hub cache "
        f"({path.parent}); netdissect does not download it silently. Pass a state dict with "
        f"--weights FILE (API: weights=), or download torchvision's weights once, e.g. python -c "
        f"\"import torchvision; torchvision.models.get_model('{arch}', weights='DEFAULT')\" "
        f"(or fetch {url} into {path.parent}).")


# -- Hugging Face ------------------------------------------------------------------------------

class HFSegmenter:
    """A Hugging Face transformers semantic segmentation model as a Segmenter (see the module
    docstring: offline, labels from config.id2label, categories from config.id2category)."""

    def __init__(self, source: str, device: str | torch.device = "cpu"):
        self.name = f"hf:{source}"
        self.weights_sha256 = None
        try:
            from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
        except ImportError as err:
            raise ModelError(f"{self.name!r} needs the transformers package ({err}); install "
                             "it with: pip install netdissect[hf]") from None
        where = ("the folder" if Path(source).is_dir() else
                 "the Hugging Face cache (local_files_only: netdissect never downloads)")
        try:
            model = AutoModelForSemanticSegmentation.from_pretrained(source, local_files_only=True)
            self.processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(
                f"{self.name!r}: cannot load a semantic segmentation model and its image "
                f"processor from {where} ({' '.join(str(err).split())}). Pass a folder written "
                f"by save_pretrained, or fetch the model once while online (e.g. `hf download "
                f"{source}`) so that it is in the cache.") from None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._labels, lut = _hf_labels(model.config, self.name)
        self._lut = torch.tensor(lut, dtype=torch.int64, device=self.device)

    def labels(self) -> list[SegmenterLabel]:
        """The model's classes (config.id2label), background left out."""
        return list(self._labels)

    @torch.inference_mode()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W): the argmax of the logits upsampled to
        the image, as label numbers."""
        h, w = images.shape[-2:]
        inputs = self.processor(images=images.detach().float().cpu(), do_rescale=False,
                                return_tensors="pt")
        outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        if hasattr(self.processor, "post_process_semantic_segmentation"):
            maps = self.processor.post_process_semantic_segmentation(
                outputs, target_sizes=[(h, w)] * len(images))
            classes = torch.stack([m.to(self.device) for m in maps])
        else:
            logits = torch.nn.functional.interpolate(outputs.logits, size=(h, w), mode="bilinear",
                                                     align_corners=False)
            classes = logits.argmax(1)
        return self._lut[classes.long()].unsqueeze(1)


def _hf_labels(config, name: str) -> tuple[list[SegmenterLabel], list[int]]:
    """The labels of a transformers config and the lookup table class id -> label number."""
    id2label = {int(k): str(v) for k, v in getattr(config, "id2label", {}).items()}
    if not id2label:
        raise ModelError(f"{name!r}: its config has no id2label; the class names are needed.")
    id2category = {int(k): v for k, v in (getattr(config, "id2category", None) or {}).items()}
    labels: list[SegmenterLabel] = []
    lut = [0] * (max(id2label) + 1)
    for class_id in sorted(id2label):
        label = id2label[class_id].split(";")[0].strip()
        if label.lower() in _BACKGROUND:
            continue
        labels.append(SegmenterLabel(label, id2category.get(class_id, "object")))
        lut[class_id] = len(labels)
    return labels, lut


# -- package.module:callable ---------------------------------------------------------------

def _import_path(spec: str, weights: str | os.PathLike | None,
                 device: torch.device) -> NamedSegmenter:
    """The user's segmenter named by `spec`, with `weights` loaded when it is an nn.Module."""
    from netdissect.models.builders.importpath import _attribute, _cwd_importable, _import

    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ModelError(f"bad segmenter spec {spec!r}. {SPEC_FORMS}")
    with _cwd_importable():
        obj = _attribute(_import(module_name, spec), module_name, attr_path, spec)
        if isinstance(obj, type) or not _is_segmenter(obj):
            if not callable(obj):
                raise ModelError(f"{spec!r} names a {type(obj).__name__}, not a segmenter or a "
                                 "callable that returns one.")
            obj = obj()
    if not _is_segmenter(obj):
        raise ModelError(f"{spec!r} returned a {type(obj).__name__}; a segmenter has the "
                         "methods labels() and segment(images) (netdissect.data.segment.base).")
    sha256 = None
    if weights is not None:
        if not isinstance(obj, nn.Module):
            raise SettingsError(f"--weights: {spec!r} is not an nn.Module, so netdissect cannot "
                                "load a state dict into it; load the weights in your code.")
        sha256 = weights_io.load_weights(obj, weights)["sha256"]
    if isinstance(obj, nn.Module):
        obj.to(device).eval()
    return NamedSegmenter(obj, spec, sha256)


def _is_segmenter(obj: object) -> bool:
    return (not isinstance(obj, type) and callable(getattr(obj, "labels", None))
            and callable(getattr(obj, "segment", None)))
