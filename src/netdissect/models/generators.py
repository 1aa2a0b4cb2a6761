"""Generators (GANs) as netdissect sees them: latents in, images out, units in between.

    gen = build_generator("mypkg.models:make_gan", weights="gan.pth", z_dim=128)
    z = gen.latents(seed=0, samples=torch.arange(16))     # (16, 128), the same in every run
    images = gen.images(z)                                # uint8 (16, 3, H, W)
    probe = gen.probe(["layer4"], seed=0, sample_of_row=rows)   # for the dissection engine

A generator spec is a zoo name (:data:`GENERATORS`, filled by :func:`register_generator`)
or ``package.module:callable`` naming a function (or class) called without arguments that
returns an ``nn.Module`` mapping a latent batch (B x Z, or B x Z x 1 x 1) to images (B x 3 x
H x W); the module must be importable from the current directory or PYTHONPATH.

- ``z_dim`` (``--z-dim``) is the latent size; without it the module's ``z_dim`` attribute.
- The latent layout: the module's ``latent_shape`` attribute ((Z,) or (Z, 1, 1)) when it has
  one, else B x Z is tried first and B x Z x 1 x 1 second, on one latent.
- ``output_range`` (``--output-range``): the values of black and white in the output, "-1,1"
  (tanh outputs, the default) or "0,1"; images are mapped linearly to 0-255 and clipped.
- Weights load through :func:`netdissect.models.weights.load_weights` (state dicts only).

Latents are reproducible sample by sample: latent ``i`` of seed ``s`` is a function of
``(s, i)`` only (standard normal values by the Box-Muller transform of uniforms hashed from
seed, sample and coordinate, :func:`netdissect.stats.resampling.uniforms`), so any sample
can be regenerated without storing the latents and a resumed run draws the same ones.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from netdissect.errors import ModelError, SettingsError
from netdissect.models import toy_gan
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import RANDOM_WEIGHTS
from netdissect.models.trace import find_module

__all__ = ["Generator", "build_generator", "register_generator", "GENERATORS",
           "parse_output_range", "LATENTS"]

#: Zoo generators: name -> builder(weights) returning a Generator with default layers.
GENERATORS: dict[str, Callable[..., "Generator"]] = {}

#: How latents are drawn, as results record it.
LATENTS = ("standard normal; latent i of seed s: Box-Muller transform of splitmix64 uniforms "
           "of (s, i, coordinate)")
_LATENT_STREAM = 3  # the hash stream of latents (the null and the bootstrap use 1 and 2)


def register_generator(name: str) -> Callable[[Callable], Callable]:
    """Register the decorated builder as zoo generator `name` (ValueError when taken)."""
    def decorator(builder: Callable) -> Callable:
        if GENERATORS.get(name, builder) is not builder:
            raise ValueError(f"generator {name!r} is already registered")
        GENERATORS[name] = builder
        return builder

    return decorator


def spec_forms() -> str:
    """One sentence on the generator specs, for error messages."""
    zoo = f"a zoo name ({', '.join(GENERATORS)}) or " if GENERATORS else ""
    return (f"A generator spec is {zoo}'package.module:callable' naming a function that "
            "returns an nn.Module mapping latents (B x Z or B x Z x 1 x 1) to images (B x 3 x "
            "H x W), importable from the current directory or PYTHONPATH.")


def parse_output_range(value: str | tuple[float, float]) -> tuple[float, float]:
    """"-1,1" or (0, 1) -> (low, high); SettingsError naming --output-range otherwise."""
    try:
        low, high = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise SettingsError(f"--output-range {value!r}: give the output values of black and white "
                            "as LOW,HIGH with LOW < HIGH, e.g. -1,1 (tanh, the default) or 0,1.")
    return low, high


@dataclass
class Generator:
    """A generator module with what is needed to sample it: latent size and layout, output
    range, default layers and the fingerprint of its weights."""

    model: nn.Module
    z_dim: int
    latent_shape: tuple[int, ...]
    output_range: tuple[float, float] = (-1.0, 1.0)
    name: str = "generator"
    weights: str | None = None
    weights_fingerprint: str = ""
    default_layers: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    #: The segmenter spec that labels its images, the default of the gan commands.
    segmenter: str = "toyworld"

    def check_layers(self, layers: list[str] | None) -> list[str]:
        """`layers` (default: the default layers), each checked to exist (LayerError)."""
        chosen = list(layers) if layers else list(self.default_layers)
        if not chosen:
            raise SettingsError(f"--layers: generator {self.name!r} has no default layers; name "
                                "the layer(s) to dissect, e.g. --layers layer4.")
        for layer in chosen:
            find_module(self.model, layer)
        return chosen

    def latents(self, seed: int, samples: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) float32 standard normal latents of sample numbers `samples` (see the
        module docstring: a function of the seed and the sample number only)."""
        from netdissect.stats.resampling import uniforms

        u = torch.from_numpy(uniforms(samples.to(torch.int64), 2 * self.z_dim, seed, _LATENT_STREAM))
        u1, u2 = u[: self.z_dim].T, u[self.z_dim:].T  # (B, Z) each, in [0, 1)
        z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
        return z.to(torch.float32)

    def shaped(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) latents in the layout the module takes."""
        return z.reshape(len(z), *self.latent_shape)

    def to_uint8(self, output: torch.Tensor) -> torch.Tensor:
        """Generator outputs (B, 3, H, W) in the output range -> uint8 images, clipped."""
        low, high = self.output_range
        return ((output.float() - low) * (255.0 / (high - low))).round().clamp(0, 255).to(torch.uint8)

    @torch.inference_mode()
    def images(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) images of (B, Z) latents, on the model's device."""
        device = next((t.device for t in [*self.model.parameters(), *self.model.buffers()]),
                      torch.device("cpu"))
        return self.to_uint8(self.model(self.shaped(z.to(device))))

    def fingerprint(self, seed: int) -> str:
        """sha256 of what decides the samples: the weights, the latent recipe and the seed."""
        if not self.weights_fingerprint:
            self.weights_fingerprint = weights_io.fingerprint_state_dict(self.model)
        record = {"weights": self.weights_fingerprint, "z_dim": self.z_dim, "seed": seed,
                  "latents": LATENTS, "latent_shape": list(self.latent_shape),
                  "output_range": list(self.output_range)}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def probe(self, layers: list[str] | None, seed: int, sample_of_row: torch.Tensor) -> Probe:
        """A Probe reading `layers` whose model input for dataset row r is the latent of
        sample `sample_of_row[r]`: what the dissection engine runs in place of images."""
        def inputs(batch: dict) -> torch.Tensor:
            return self.shaped(self.latents(seed, sample_of_row[batch["index"]]))

        return Probe(self.model, self.check_layers(layers), Preprocess(name="latents"),
                     name=self.name, weights=self.weights,
                     weights_fingerprint=self.fingerprint(seed), channels_last=False,
                     inputs=inputs)

    def describe(self, seed: int) -> dict:
        """What results record of the generator and its latents."""
        self.fingerprint(seed)  # computes the weights' fingerprint when no file gave one
        return {"generator": self.name, "weights": self.weights,
                "weights_fingerprint": self.weights_fingerprint, "z_dim": self.z_dim,
                "latent_shape": list(self.latent_shape), "output_range": list(self.output_range),
                "image_size": list(self.image_size), "seed": seed, "latents": LATENTS}


def build_generator(spec: str, weights: str | None = None, z_dim: int | None = None,
                    output_range: str | tuple[float, float] = "-1,1") -> Generator:
    """The generator named by `spec` (see the module docstring) in eval mode, its latent
    layout found on one latent.  ModelError for a spec that cannot be resolved or a module
    that does not generate images; SettingsError for a missing or wrong --z-dim or a bad
    --output-range; WeightsError for weights that do not fit."""
    low_high = parse_output_range(output_range)
    if z_dim is not None and (isinstance(z_dim, bool) or int(z_dim) != z_dim or z_dim < 1):
        raise SettingsError(f"--z-dim must be a whole number of at least 1, got {z_dim!r}")
    spec = str(spec).strip()
    weights = None if weights is None else str(weights)
    if spec in GENERATORS:
        generator = GENERATORS[spec](weights)
        if z_dim is not None and z_dim != generator.z_dim:
            raise SettingsError(f"--z-dim {z_dim}: zoo generator {spec!r} takes latents of "
                                f"{generator.z_dim} values; leave --z-dim out.")
        generator.output_range = low_high
        return generator
    if ":" not in spec:
        raise ModelError(f"unknown generator {spec!r}. {spec_forms()}")
    model = _import_module(spec)
    loaded_path, fingerprint = None, ""
    if weights is not None and weights != RANDOM_WEIGHTS:
        loaded = weights_io.load_weights(model, weights)
        loaded_path, fingerprint = loaded["path"], loaded["sha256"]
    model.eval()
    declared = getattr(model, "z_dim", None)
    if z_dim is None:
        if not isinstance(declared, int) or declared < 1:
            raise SettingsError(f"--z-dim: generator {spec!r} has no z_dim attribute; give the "
                                "size of its latent vectors with --z-dim (API: z_dim=).")
        z_dim = declared
    shape, size = _latent_layout(model, int(z_dim), spec, declared)
    return Generator(model, int(z_dim), shape, low_high, spec, loaded_path, fingerprint,
                     list(getattr(model, "default_layers", []) or []), size)


def _import_module(spec: str) -> nn.Module:
    """The nn.Module that `package.module:callable` names or returns."""
    from netdissect.models.builders.importpath import _attribute, _cwd_importable, _import

    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ModelError(f"bad generator spec {spec!r}. {spec_forms()}")
    with _cwd_importable():
        obj = _attribute(_import(module_name, spec), module_name, attr_path, spec)
        if not isinstance(obj, nn.Module):
            if not callable(obj):
                raise ModelError(f"{spec!r} names a {type(obj).__name__}, not a callable or "
                                 "nn.Module.")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # a randomly initialised generator is the same every run
                obj = obj()
    if not isinstance(obj, nn.Module):
        raise ModelError(f"{spec!r} returned a {type(obj).__name__}, not an nn.Module. "
                         f"{spec_forms()}")
    return obj


def _latent_layout(model: nn.Module, z_dim: int, spec: str, declared) -> tuple[tuple[int, ...], tuple[int, int]]:
    """The latent shape the module takes and its image size, from one latent: its
    `latent_shape` attribute, else (Z,) then (Z, 1, 1).  SettingsError naming --z-dim when
    neither runs; ModelError when the output is not a batch of square RGB images."""
    given = getattr(model, "latent_shape", None)
    candidates = [tuple(given)] if given else [(z_dim,), (z_dim, 1, 1)]
    errors = []
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    for shape in candidates:
        try:
            with torch.inference_mode():
                output = model(torch.zeros((1, *shape), device=device))
        except Exception as e:  # any failure means: not this layout
            errors.append(f"{'x'.join(map(str, ('B', *shape)))}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if not isinstance(output, torch.Tensor) or output.dim() != 4 or output.shape[1] != 3 \
                or output.shape[0] != 1:
            what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"generator {spec!r} returned {what} for one latent; a generator "
                             "returns images of shape (B, 3, H, W).")
        if output.shape[2] != output.shape[3]:
            raise ModelError(f"generator {spec!r} draws {output.shape[2]}x{output.shape[3]} "
                             "images; netdissect dissects square images only.")
        return shape, (int(output.shape[2]), int(output.shape[3]))
    hint = f" (its z_dim attribute says {declared})" if isinstance(declared, int) else ""
    raise SettingsError(f"--z-dim {z_dim}: generator {spec!r} does not run on latents of {z_dim} "
                        f"values{hint}; tried {'; '.join(errors)}. Check --z-dim.")


@register_generator("toyworld_gan")
def build_toyworld_gan(weights: str | None = None) -> Generator:
    """The toy world's GAN (netdissect.models.toy_gan): 64x64 images, labelled by the
    `toyworld64` segmenter; shipped weights, a retrained file or "random"."""
    model, loaded_path, fingerprint = toy_gan.load_toyworld_gan(weights)
    return Generator(model, model.z_dim, (model.z_dim,), (-1.0, 1.0), "toyworld_gan",
                     loaded_path, fingerprint, list(toy_gan.DEFAULT_LAYERS),
                     (toy_gan.IMAGE_SIZE, toy_gan.IMAGE_SIZE), segmenter="toyworld64")
