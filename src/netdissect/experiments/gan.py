"""GAN dissection (Bau et al., ICLR 2019; PNAS 2020): what a generator's units draw, and what
happens when they are switched off or on (docs/method.md section 16).

    gan_dissect(gen, "toyworld", "out/gan", layers=["layer4"], samples=1000, seed=0)
    gan_ablate(gen, "toyworld", "layer4", "tree", out="out/ablate", units="top:20")
    gan_insert(gen, "toyworld", "layer4", "door", where=(2, 4, 4, 6), out="out/insert")

`gan_dissect` draws `samples` latents (sample i's latent is a function of the seed and i,
netdissect.models.generators), writes the generated images as PNG into OUT/samples/images
(latents.json records how they were drawn), segments them into a Broden-format dataset
OUT/dataset (netdissect.data.segment) and dissects the generator's layers against it with the
PNAS rule, feeding the engine each dataset row's latent instead of its image (Probe.inputs).
The result files and the report are those of `netdissect.dissect`, in OUT.  Every stage
resumes: existing samples are kept, the segmenter's progress record, the engine's state.

`gan_ablate` and `gan_insert` edit the layer's output through a Trace (the output is repeated
once per edit, so the generator runs up to the layer once per batch), generate again from the
same latents, segment the images in memory and count the concept's pixels: with units set to
zero (ablation; the top units against random units of the same layer), or set to a high value
inside a region of the feature map (insertion; the concept's pixels inside and outside the
region, and the average causal effect).  Units are 0-based.  Images are made, segmented and
counted batch by batch; only the few samples of the image grid are kept.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from netdissect.data.segment.base import Segmenter
from netdissect.data.segment.checks import check_labels, check_planes, segmenter_name
from netdissect.data.segment.colors import resize_planes
from netdissect.engine.settings import Settings
from netdissect.errors import DissectError, LayerError, OutputError, SettingsError
from netdissect.experiments.record import ExperimentRecord, write_record
from netdissect.files import (atomic_write_files, atomic_write_bytes, atomic_write_json,
                              new_figure, save_figure, write_csv)
from netdissect.models.generators import Generator, build_generator
from netdissect.models.probe import Probe
from netdissect.models.trace import Trace

__all__ = ["gan_dissect", "gan_ablate", "gan_insert", "generate_samples", "GanAblation",
           "GanInsertion", "write_gan_ablation", "write_gan_insertion", "parse_units",
           "parse_where", "SAMPLES_DIR", "DATASET_DIR", "LATENTS_FILE", "DEFAULT_COUNTS"]

SAMPLES_DIR = "samples"
DATASET_DIR = "dataset"
LATENTS_FILE = "latents.json"
SAMPLES_FORMAT = "netdissect gan samples"
DEFAULT_COUNTS = (1, 2, 4, 8, 16, 20)
RANKINGS = ("iou", "effect")
IMAGES_PER_RUN = 256  # edited images generated in one forward pass (memory bound)


def _generator(generator: Generator | str, weights, z_dim, output_range) -> Generator:
    if isinstance(generator, Generator):
        return generator
    return build_generator(generator, weights=weights, z_dim=z_dim, output_range=output_range)


def _session(generator: Generator, device):
    """The generator on `device` in eval mode for a block, put back as found afterwards."""
    return Probe(generator.model, [], name=generator.name).session(device)


def _check_count(option: str, value: int, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SettingsError(f"{option} must be a whole number of at least {least}, got {value!r}")


# -- samples -------------------------------------------------------------------------------------
def sample_name(sample: int) -> str:
    """The PNG file name of sample number `sample`."""
    return f"{sample:08d}.png"


def generate_samples(generator: Generator, folder: str | os.PathLike, samples: int, seed: int, *,
                     batch_size: int = 32, device=None, progress: bool = True) -> dict:
    """Generate samples 0..`samples`-1 of `seed` as PNG files in FOLDER/images (files already
    there are kept: a rerun resumes) and record how in FOLDER/latents.json.  OutputError when
    the folder holds samples of another generator, seed or latent recipe, or more samples."""
    _check_count("--samples", samples)
    _check_count("--batch-size", batch_size)
    folder = Path(folder)
    images = folder / "images"
    record = {"format": SAMPLES_FORMAT, **generator.describe(seed), "samples": samples}
    path = folder / LATENTS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OutputError(f"{path}: cannot read it ({e}); remove {folder} and run again.") from None
        changed = sorted(k for k in set(saved) | set(record)
                         if k not in ("samples", "weights") and saved.get(k) != record.get(k))
        if changed:
            raise OutputError(f"{folder}: holds samples made with other settings ({', '.join(changed)} "
                              "differ); choose another --out, or remove it.")
        if int(saved.get("samples", 0)) > samples:
            raise OutputError(f"{folder}: holds {saved['samples']} samples, more than --samples "
                              f"{samples}; pass --samples {saved['samples']} or more, or choose "
                              "another --out.")
    elif folder.exists() and any(folder.iterdir()):
        raise OutputError(f"{folder}: exists and holds something other than generated samples; "
                          "choose another --out, or remove it.")
    atomic_write_json(path, record)
    existing = {p.name for p in images.glob("*.png")} if images.is_dir() else set()
    todo = [i for i in range(samples) if sample_name(i) not in existing]
    with _session(generator, device), \
            tqdm(total=samples, initial=samples - len(todo), desc="generate", unit="img",
                 disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            pixels = generator.images(generator.latents(seed, torch.tensor(chunk))).cpu()
            atomic_write_files({images / sample_name(i): _png(image)
                                for i, image in zip(chunk, pixels.permute(0, 2, 3, 1).numpy())})
            bar.update(len(chunk))
    return {"samples": samples, "generated": len(todo), "reused": samples - len(todo)}


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _sample_numbers(broden) -> torch.Tensor:
    """The sample number of each dataset row, from its file name (not its position)."""
    numbers = []
    for row in broden.rows:
        stem = PurePosixPath(row.image).stem
        if not stem.isdigit():
            raise DissectError(f"{broden.root}/index.csv: image {row.image!r} is not a generated "
                               f"sample (named NNNNNNNN.jpg); was {broden.root} written by "
                               "gan-dissect? Remove it and run again.")
        numbers.append(int(stem))
    return torch.tensor(numbers, dtype=torch.int64)


# -- gan-dissect ---------------------------------------------------------------------------------
def gan_dissect(generator: Generator | str, segmenter: str | Segmenter | None,
                out: str | os.PathLike, *,
                layers: list[str] | None = None, samples: int = 1000, seed: int = 0,
                weights: str | None = None, z_dim: int | None = None,
                output_range: str | tuple[float, float] = "-1,1",
                segmenter_weights: str | None = None, colors: bool = False,
                label_size: int | None = None, settings: Settings | None = None,
                device=None, progress: bool = True, report: bool = True, restart: bool = False,
                **options):
    """Dissect `layers` of a generator against a segmentation of its own images (see the
    module docstring) and return the Dissection; OUT holds samples/, dataset/ and the files
    and report of `netdissect.dissect`.  `generator` is a Generator or a spec (with `weights`,
    `z_dim`, `output_range`); `segmenter` a spec (with `segmenter_weights`), a Segmenter or
    None (the generator's own, `Generator.segmenter`: toyworld64 for toyworld_gan);
    `colors` adds the colour names; `label_size` is the side of the label planes (default:
    half the image side).  `settings` (or keyword `options` naming its fields) decide the
    numbers; the definition is always pnas (its quantile 0.01 unless `quantile` says)."""
    from netdissect.api import dissect
    from netdissect.data.broden import load_broden
    from netdissect.data.segment import segment_images
    from netdissect.results import layer_folder_name

    gen = _generator(generator, weights, z_dim, output_range)
    segmenter = gen.segmenter if segmenter is None else segmenter
    layers = gen.check_layers(layers)
    for layer in layers:
        if layer_folder_name(layer) in (SAMPLES_DIR, DATASET_DIR):
            raise LayerError(f"layer {layer!r}: its result folder would be OUT/{layer}, where "
                             "gan-dissect keeps its samples or dataset; dissect an enclosing or "
                             "inner module instead.")
    if options.get("definition", "pnas") != "pnas":
        raise SettingsError("--definition: gan-dissect always uses the PNAS rule (pnas); leave "
                            "the option out.")
    known = set(vars(Settings()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise SettingsError(f"gan_dissect() got unknown option(s) {', '.join(unknown)}; the "
                            f"settings are {', '.join(sorted(known))}.")
    if settings is not None and settings.definition != "pnas":
        raise SettingsError(f"gan_dissect() uses the PNAS rule: pass Settings(definition='pnas', "
                            f"...) or the settings as keyword options, not definition "
                            f"{settings.definition!r}.")
    settings = Settings.from_options({**(vars(settings) if settings else {}), **options,
                                      "definition": "pnas"})
    settings.check()
    _check_count("--samples", samples)
    size = gen.image_size[0]
    label_size = max(1, size // 2) if label_size is None else label_size
    _check_count("--label-size", label_size)
    if label_size > size:
        raise SettingsError(f"--label-size {label_size} is larger than the generated images "
                            f"({size}x{size}).")
    out = Path(out)
    generate_samples(gen, out / SAMPLES_DIR, samples, seed, batch_size=settings.batch_size,
                     device=device, progress=progress)
    segment_images(out / SAMPLES_DIR / "images", segmenter, out / DATASET_DIR, size=size,
                   label_size=label_size, batch_size=settings.batch_size, device=device,
                   colors=colors, weights=segmenter_weights, progress=progress)
    broden = load_broden(out / DATASET_DIR, settings.categories)
    probe = gen.probe(layers, seed, _sample_numbers(broden))
    return dissect(probe, broden, settings=settings, out=out, report=report, progress=progress,
                   device=device, restart=restart)


# -- measuring a concept -------------------------------------------------------------------------
class _ConceptMeter:
    """Segments uint8 images in memory and marks the pixels of one concept."""

    def __init__(self, segmenter: str | Segmenter, concept: str, weights, colors: bool, device):
        from netdissect.data.segment import load_segmenter, with_colors
        from netdissect.models.probe import check_device

        self.device = check_device(device)
        if isinstance(segmenter, str):
            segmenter = load_segmenter(segmenter, weights=weights, colors=colors, device=self.device)
        else:
            if weights is not None:
                raise SettingsError("--segmenter-weights applies to a segmenter spec; load the "
                                    "weights into your segmenter object yourself.")
            segmenter = with_colors(segmenter) if colors else segmenter
        self.segmenter = segmenter
        self.name = segmenter_name(segmenter)
        labels = check_labels(segmenter)
        codes = [i + 1 for i, lab in enumerate(labels) if lab.name == concept]
        if not codes:
            names = ", ".join(dict.fromkeys(lab.name for lab in labels))
            raise SettingsError(f"--concept {concept!r}: not a label of segmenter {self.name}; "
                                f"its labels are: {names}.")
        self.concept = concept
        self.codes = torch.tensor(codes, dtype=torch.int64)

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """bool (B, H, W): where the concept is in uint8 (B, 3, H, W) images (any plane)."""
        x = images.to(self.device, torch.float32) / 255.0
        with torch.no_grad():
            planes = check_planes(self.segmenter.segment(x), self.segmenter, len(images))
        planes = resize_planes(planes, tuple(images.shape[-2:]))
        return torch.isin(planes, self.codes.to(planes.device)).any(1).cpu()


def _edit(scale: torch.Tensor, shift: torch.Tensor, layer: str):
    """An `edit_output` for Trace: the layer's (B, K, h, w) output repeated once per edit
    (M of them) as output * scale + shift, (M * B, K, h, w)."""
    def edit(output, _layer):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise LayerError(f"layer {layer!r} returns {type(output).__name__}"
                             f"{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}; "
                             "editing units needs a layer that outputs one (B, K, h, w) tensor.")
        s, t = scale.to(output), shift.to(output)
        return (output[None] * s[:, None] + t[:, None]).flatten(0, 1)
    return edit


def _edited_images(gen: Generator, layer: str, z: torch.Tensor, scale: torch.Tensor,
                   shift: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """The images of latents `z` under each of M edits of `layer` (scale and shift
    broadcastable to (M, K, h, w)), a run of about IMAGES_PER_RUN images at a time: (index
    of the run's first edit, uint8 (edits of the run, B, 3, H, W))."""
    device = next((t.device for t in [*gen.model.parameters(), *gen.model.buffers()]),
                  torch.device("cpu"))
    x = gen.shaped(z.to(device))
    per_run = max(1, IMAGES_PER_RUN // len(z))
    for start in range(0, len(scale), per_run):
        s = scale[start:start + per_run]
        t = shift[start:start + per_run] if len(shift) == len(scale) else shift
        with torch.inference_mode(), Trace(gen.model, layer, retain_output=False,
                                           edit_output=_edit(s, t, layer)):
            output = gen.model(x)
        yield start, gen.to_uint8(output).view(len(s), len(z), *output.shape[1:]).cpu()


def _layer_shape(gen: Generator, layer: str) -> tuple[int, int, int]:
    """(K, h, w) of the layer's output, from one latent."""
    device = next((t.device for t in [*gen.model.parameters(), *gen.model.buffers()]),
                  torch.device("cpu"))
    with torch.inference_mode(), Trace(gen.model, layer, stop=True) as trace:
        gen.model(gen.shaped(torch.zeros(1, gen.z_dim, device=device)))
    output = trace.output
    if not trace.ran or not isinstance(output, torch.Tensor) or output.dim() != 4:
        what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise LayerError(f"layer {layer!r} of {gen.name} outputs {what}; editing units needs a "
                         "layer that outputs one (B, K, h, w) tensor. Choose a convolutional layer.")
    return tuple(int(v) for v in output.shape[1:])


def _batches(samples: int, batch_size: int):
    for start in range(0, samples, batch_size):
        yield torch.arange(start, min(samples, start + batch_size))


# -- ranking units ---------------------------------------------------------------------------------
def parse_units(text: str | list[int]) -> tuple[str, int | list[int]]:
    """`top:K` -> ("top", K); "3,17,42" or [3, 17, 42] -> ("given", [3, 17, 42]).
    SettingsError naming --units otherwise."""
    if not isinstance(text, str):
        values = list(text)
    elif text.strip().startswith("top:"):
        count = text.strip()[4:]
        if not count.isdigit() or int(count) < 1:
            raise SettingsError(f"--units {text!r}: top:K takes a whole number K of at least 1.")
        return "top", int(count)
    else:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values:
            raise SettingsError(f"--units {text!r}: give top:K (the K best units) or "
                                "comma-separated unit numbers, 0-based (e.g. 3,17,42).")
    if len(set(values)) != len(values) or not values:
        raise SettingsError(f"--units {text!r}: give each unit once.")
    return "given", [int(v) for v in values]


def parse_where(text: str | tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """"x0,y0,x1,y1" -> the region of the (h, w) feature map, columns x0..x1-1 and rows
    y0..y1-1; SettingsError naming --where when it is not inside the map."""
    h, w = shape
    try:
        values = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not (0 <= values[0] < values[2] <= w and 0 <= values[1] < values[3] <= h):
        raise SettingsError(f"--where {text!r}: give x0,y0,x1,y1 in feature-map cells with "
                            f"0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (the layer's map is "
                            f"{h}x{w}; x1 and y1 are exclusive).")
    return tuple(values)


@dataclass
class _Context:
    """What gan_ablate and gan_insert share: the generator, the meter, the layer and the
    dissection of the layer when one was given or made."""

    gen: Generator
    meter: _ConceptMeter
    layer: str
    shape: tuple[int, int, int]
    samples: int
    seed: int
    batch_size: int
    progress: bool
    dissection: object
    dissect_options: dict

    def layer_result(self):
        """The LayerResult of the layer: given, read from a folder, or dissected now into
        the output's `dissection` folder."""
        from netdissect.results import Dissection, LayerResult

        found = self.dissection
        if found is None:
            out = self.dissect_options.pop("out", None)
            if out is None:
                raise SettingsError("--dissection: ranking units by IoU or the default --value "
                                    "needs a dissection of the layer; pass --dissection DIR "
                                    "(from gan-dissect) or an output folder (--out) to make one.")
            found = gan_dissect(self.gen, out=Path(out) / "dissection", layers=[self.layer],
                                samples=self.samples, seed=self.seed, report=False,
                                progress=self.progress, batch_size=self.batch_size,
                                **self.dissect_options)
        if isinstance(found, (str, os.PathLike)):
            found = Dissection.load(found)
        if isinstance(found, Dissection):
            if self.layer not in found.layers:
                raise SettingsError(f"--dissection: it has no layer {self.layer!r} (it has "
                                    f"{', '.join(found.layers)}); dissect that layer.")
            found = found[self.layer]
        if not isinstance(found, LayerResult):
            raise SettingsError("--dissection: give a result folder, a Dissection or a LayerResult.")
        if found.units != self.shape[0]:
            raise SettingsError(f"--dissection: its layer {found.layer!r} has {found.units} units, "
                                f"layer {self.layer!r} of {self.gen.name} has {self.shape[0]}; "
                                "dissect the same layer of the same generator.")
        self.dissection = found
        return found

    def concept_iou(self) -> torch.Tensor:
        """(K,) float64 IoU of each unit with the concept, from the dissection."""
        result = self.layer_result()
        names = result.labels.names
        if self.meter.concept not in names:
            raise SettingsError(f"--concept {self.meter.concept!r}: not among the concepts of the "
                                "dissection; dissect with the same segmenter.")
        return result.iou()[:, names.index(self.meter.concept)]

    def concept_pixels(self, scale: torch.Tensor, shift: torch.Tensor, desc: str,
                       region: tuple[int, int, int, int] | None = None, keep: int = 0):
        """Concept pixels under each edit (M,) over all samples (with `region`, (M, 2): inside
        and outside it, in image pixels x0, y0, x1, y1), and the images of the first `keep`
        samples under every edit (M, keep, 3, H, W)."""
        counts = torch.zeros((len(scale), 2 if region else 1), dtype=torch.int64)
        kept = torch.zeros((len(scale), 0, 3, *self.gen.image_size), dtype=torch.uint8)
        with tqdm(total=self.samples, desc=desc, unit="img", disable=not self.progress) as bar:
            for rows in _batches(self.samples, self.batch_size):
                z = self.gen.latents(self.seed, rows)
                first = kept.shape[1]
                taken = []
                for start, images in _edited_images(self.gen, self.layer, z, scale, shift):
                    if first < keep:
                        taken.append(images[:, :keep - first])
                    m, b = images.shape[:2]
                    masks = self.meter.masks(images.flatten(0, 1)).view(m, b, *images.shape[-2:])
                    if region is None:
                        counts[start:start + m, 0] += masks.flatten(1).sum(1)
                    else:
                        x0, y0, x1, y1 = region
                        inside = masks[:, :, y0:y1, x0:x1].flatten(1).sum(1)
                        counts[start:start + m, 0] += inside
                        counts[start:start + m, 1] += masks.flatten(1).sum(1) - inside
                if taken:
                    kept = torch.cat([kept, torch.cat(taken)], 1)
                bar.update(len(rows))
        return (counts if region else counts[:, 0]), (kept if keep else None)


def _context(generator, segmenter, layer, concept, *, samples, seed, weights, z_dim,
             output_range, segmenter_weights, colors, batch_size, device, progress, dissection,
             out) -> _Context:
    gen = _generator(generator, weights, z_dim, output_range)
    segmenter = gen.segmenter if segmenter is None else segmenter
    gen.check_layers([layer])
    _check_count("--samples", samples)
    _check_count("--batch-size", batch_size)
    meter = _ConceptMeter(segmenter, concept, segmenter_weights, colors, device)
    options = {"segmenter": segmenter, "segmenter_weights": segmenter_weights, "colors": colors,
               "device": device, "out": out}
    return _Context(gen, meter, layer, _layer_shape(gen, layer), samples, seed, batch_size,
                    progress, dissection, options)


def _rank(ctx: _Context, units, rank: str) -> tuple[list[int], list[float], str]:
    """The chosen units in rank order, their scores (IoU with the concept, or the concept
    pixels removed when ablated alone), and how they were ranked."""
    kind, value = parse_units(units)
    k = ctx.shape[0]
    if kind == "given":
        bad = [u for u in value if not 0 <= u < k]
        if bad:
            raise SettingsError(f"--units: unit {bad[0]} is not in layer {ctx.layer!r}, whose "
                                f"units are 0..{k - 1} (0-based).")
        return value, [float("nan")] * len(value), "given"
    if rank not in RANKINGS:
        raise SettingsError(f"--rank {rank!r}: choose iou (the dissection's IoU with the concept) "
                            "or effect (the concept's pixels removed by each unit alone).")
    if rank == "iou":
        score = ctx.concept_iou().numpy()
    else:
        scale = torch.ones(k + 1, k, 1, 1)
        scale[torch.arange(1, k + 1), torch.arange(k)] = 0
        pixels, _ = ctx.concept_pixels(scale, torch.zeros(1, k, 1, 1), "rank: single units")
        score = (pixels[0] - pixels[1:]).double().numpy() / (ctx.samples * _image_area(ctx))
    order = np.lexsort((np.arange(k), -score))[:value]
    return [int(u) for u in order], [float(score[u]) for u in order], rank


def _image_area(ctx: _Context) -> int:
    h, w = ctx.gen.image_size
    return h * w


# -- gan-ablate ----------------------------------------------------------------------------------
@dataclass
class GanAblation:
    """The concept's pixel fraction with the top units and random units removed."""

    concept: str
    layer: str
    units: list[int]  # ranked, 0-based
    scores: list[float]
    ranking: str
    curve: list[dict]
    samples: int
    seed: int
    draws: int
    generator: dict
    segmenter: str
    grid: torch.Tensor | None = field(default=None, repr=False)  # (3, n, 3, H, W) uint8

    def summary(self) -> str:
        last = self.curve[-1]
        random = ("" if last["fraction_after_random"] is None else
                  f", {last['fraction_after_random']:.4f} without {last['removed']} random units")
        return (f"{self.concept} pixels: {last['fraction_before']:.4f} of all generated pixels, "
                f"{last['fraction_after_top']:.4f} without the top {last['removed']} units of "
                f"{self.layer}{random}.")


def gan_ablate(generator: Generator | str, segmenter: str | Segmenter | None, layer: str, concept: str,
               out: str | os.PathLike | None = None, *, units: str | list[int] = "top:20",
               counts=DEFAULT_COUNTS, rank: str = "iou", dissection=None, samples: int = 200,
               seed: int = 0, draws: int = 5, weights: str | None = None,
               z_dim: int | None = None, output_range: str | tuple[float, float] = "-1,1",
               segmenter_weights: str | None = None, colors: bool = False,
               batch_size: int = 32, grid: int = 4, device=None,
               progress: bool = True) -> GanAblation:
    """Switch units of `layer` off (zero) and measure the concept's share of the generated
    pixels, for the same `samples` latents of `seed` (see the module docstring).

    `units`: "top:K" (ranked by `rank`: "iou" with the concept in `dissection`, a result
    folder, Dissection or LayerResult of the layer, dissected now into OUT/dissection when
    None; or "effect", the pixels each unit removes alone) or a list of unit numbers.  For
    each count n of `counts` (capped at the units chosen) the first n units are removed, and
    n random units of the layer outside those n (`draws` seeded draws; mean and population
    std).  With `out`, writes ablate.json, ablate.csv, ablate.{png,svg}, ablate_grid.png and
    experiment.json."""
    _check_count("--draws", draws, least=0)
    _check_count("--grid", grid, least=0)
    ctx = _context(generator, segmenter, layer, concept, samples=samples, seed=seed,
                   weights=weights, z_dim=z_dim, output_range=output_range,
                   segmenter_weights=segmenter_weights, colors=colors, batch_size=batch_size,
                   device=device, progress=progress, dissection=dissection, out=out)
    with _session(ctx.gen, device):
        ranked, scores, ranking = _rank(ctx, units, rank)
        counts = sorted({min(int(n), len(ranked)) for n in counts if int(n) > 0})
        if not counts:
            raise SettingsError("--counts: give at least one positive number of units to remove.")
        k = ctx.shape[0]
        g = torch.Generator().manual_seed(seed)
        masks = [torch.ones(k)]
        top_row: dict[int, int] = {}
        random_rows: dict[int, list[int]] = {}
        for n in counts:
            top = torch.ones(k)
            top[ranked[:n]] = 0
            top_row[n] = len(masks)
            masks.append(top)
            others = torch.tensor([u for u in range(k) if u not in ranked[:n]])
            if len(others) >= n:
                random_rows[n] = []
                for _ in range(draws):
                    mask = torch.ones(k)
                    mask[others[torch.randperm(len(others), generator=g)[:n]]] = 0
                    random_rows[n].append(len(masks))
                    masks.append(mask)
        scale = torch.stack(masks)[:, :, None, None]
        pixels, images = ctx.concept_pixels(scale, torch.zeros(1, k, 1, 1), "ablate",
                                            keep=min(grid, samples))
    total = float(samples * _image_area(ctx))
    fractions = pixels.double() / total
    curve = []
    for n in counts:
        rows = random_rows.get(n, [])
        rand = fractions[rows] if rows else None
        curve.append({"removed": n, "fraction_before": float(fractions[0]),
                      "fraction_after_top": float(fractions[top_row[n]]),
                      "fraction_after_random": None if rand is None else float(rand.mean()),
                      "fraction_after_random_std": None if rand is None else float(rand.std(unbiased=False))})
    shown = None
    if images is not None and grid:
        last = random_rows.get(counts[-1], [])
        shown = images[[0, top_row[counts[-1]]] + last[:1]]
    result = GanAblation(concept, layer, ranked, scores, ranking, curve, samples, seed, draws,
                         ctx.gen.describe(seed), ctx.meter.name, shown)
    if out is not None:
        write_gan_ablation(result, out)
    return result


def write_gan_ablation(result: GanAblation, out: str | os.PathLike) -> ExperimentRecord:
    """ablate.json, ablate.csv, the figure ablate.{png,svg}, the image grid ablate_grid.png
    (rows: samples; columns: as generated, top units removed, random units removed) and
    experiment.json under `out`."""
    out = Path(out)
    atomic_write_json(out / "ablate.json", {
        "concept": result.concept, "layer": result.layer, "units": result.units,
        "ranking": result.ranking, "scores": [None if s != s else s for s in result.scores],
        "curve": result.curve, "samples": result.samples, "seed": result.seed,
        "random_draws": result.draws,
        "random_units": "drawn among the layer's units outside the top units removed",
        "fractions": "concept pixels / all generated pixels", "generator": result.generator,
        "segmenter": result.segmenter})
    write_csv(out / "ablate.csv", result.curve, ["removed", "fraction_before", "fraction_after_top",
                                                 "fraction_after_random",
                                                 "fraction_after_random_std"])
    fig, axes = new_figure(5.0, 3.6)
    ax = axes[0, 0]
    xs = [0] + [r["removed"] for r in result.curve]
    before = result.curve[0]["fraction_before"]
    ax.plot(xs, [before] + [r["fraction_after_top"] for r in result.curve], marker="o",
            color="tab:red", label="top units removed")
    rand = [(r["removed"], r["fraction_after_random"], r["fraction_after_random_std"])
            for r in result.curve if r["fraction_after_random"] is not None]
    if rand:
        rx = np.array([0] + [r[0] for r in rand])
        mean = np.array([before] + [r[1] for r in rand])
        std = np.array([0.0] + [r[2] for r in rand])
        ax.plot(rx, mean, marker="s", color="tab:blue",
                label=f"random units removed ({result.draws} draws)")
        ax.fill_between(rx, mean - std, mean + std, color="tab:blue", alpha=0.2)
    ax.set_xlabel("units removed")
    ax.set_ylabel(f"{result.concept} pixels (fraction)")
    ax.set_title(f"{result.layer}: {result.concept}", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, out / "ablate", dpi=120)
    tables = ["ablate.json", "ablate.csv"]
    if result.grid is not None and result.grid.shape[1]:
        atomic_write_bytes(out / "ablate_grid.png", _grid_png(result.grid))
        tables.append("ablate_grid.png")
    record = ExperimentRecord("gan-ablate", result.layer, result.summary(), "ablate", tables)
    write_record(out, record)
    return record


# -- gan-insert ----------------------------------------------------------------------------------
@dataclass
class GanInsertion:
    """Where the concept appears when units are switched on inside a region."""

    concept: str
    layer: str
    units: list[int]
    values: list[float]
    where: tuple[int, int, int, int]  # feature-map cells x0, y0, x1, y1 (x1, y1 exclusive)
    image_region: tuple[int, int, int, int]  # the same in image pixels
    fractions: dict  # inside/outside x before/after
    ace: float
    samples: int
    seed: int
    generator: dict
    segmenter: str
    grid: torch.Tensor | None = field(default=None, repr=False)  # (2, n, 3, H, W) uint8

    def summary(self) -> str:
        f = self.fractions
        return (f"{self.concept} inside the region: {f['inside_before']:.4f} -> "
                f"{f['inside_after']:.4f} (ACE {self.ace:+.4f}); outside: "
                f"{f['outside_before']:.4f} -> {f['outside_after']:.4f}.")


def gan_insert(generator: Generator | str, segmenter: str | Segmenter | None, layer: str, concept: str,
               where: str | tuple[int, int, int, int], out: str | os.PathLike | None = None, *,
               units: str | list[int] = "top:4", value: float | None = None, rank: str = "iou",
               dissection=None, samples: int = 200, seed: int = 0, weights: str | None = None,
               z_dim: int | None = None, output_range: str | tuple[float, float] = "-1,1",
               segmenter_weights: str | None = None, colors: bool = False,
               batch_size: int = 32, grid: int = 4, device=None,
               progress: bool = True) -> GanInsertion:
    """Switch units of `layer` on inside the region `where` of its feature map (x0,y0,x1,y1
    in cells, x1 and y1 exclusive) and measure the concept's share of the pixels inside and
    outside the matching image region, for the same latents before and after.  The units are
    set to `value`, by default each unit's mean activation where it exceeds its threshold
    (from the dissection).  The ACE is the mean change of the concept's fraction inside the
    region.  `units`, `rank` and `dissection` as for gan_ablate.  With `out`, writes
    insert.json, insert.{png,svg}, insert_grid.png and experiment.json."""
    _check_count("--grid", grid, least=0)
    ctx = _context(generator, segmenter, layer, concept, samples=samples, seed=seed,
                   weights=weights, z_dim=z_dim, output_range=output_range,
                   segmenter_weights=segmenter_weights, colors=colors, batch_size=batch_size,
                   device=device, progress=progress, dissection=dissection, out=out)
    k, h, w = ctx.shape
    x0, y0, x1, y1 = parse_where(where, (h, w))
    if value is not None and not np.isfinite(value):
        raise SettingsError(f"--value must be a finite number, got {value}")
    big_h, big_w = ctx.gen.image_size
    region = (x0 * big_w // w, y0 * big_h // h, -(-x1 * big_w // w), -(-y1 * big_h // h))
    with _session(ctx.gen, device):
        chosen, _, _ = _rank(ctx, units, rank)
        values = (torch.full((len(chosen),), float(value)) if value is not None
                  else _mean_above_threshold(ctx, chosen))
        selected = torch.zeros(k, h, w)
        selected[chosen, y0:y1, x0:x1] = 1
        level = torch.zeros(k, 1, 1)
        level[chosen, 0, 0] = values
        scale = torch.stack([torch.ones(k, h, w), 1 - selected])
        shift = torch.stack([torch.zeros(k, h, w), selected * level])
        pixels, images = ctx.concept_pixels(scale, shift, "insert", region=region,
                                            keep=min(grid, samples))
    area = (region[2] - region[0]) * (region[3] - region[1])
    outside = big_h * big_w - area
    inside_f = pixels[:, 0].double() / (samples * area)
    outside_f = (pixels[:, 1].double() / (samples * outside)) if outside else torch.zeros(2)
    fractions = {"inside_before": float(inside_f[0]), "inside_after": float(inside_f[1]),
                 "outside_before": float(outside_f[0]), "outside_after": float(outside_f[1])}
    result = GanInsertion(concept, layer, chosen, [float(v) for v in values], (x0, y0, x1, y1),
                          region, fractions, float(inside_f[1] - inside_f[0]), samples, seed,
                          ctx.gen.describe(seed), ctx.meter.name,
                          images if images is not None and grid else None)
    if out is not None:
        write_gan_insertion(result, out)
    return result


def _mean_above_threshold(ctx: _Context, units: list[int]) -> torch.Tensor:
    """Each unit's mean activation where it exceeds its dissection threshold, over the
    samples (the threshold itself when it never does)."""
    thresholds = ctx.layer_result().thresholds.float()[units]
    index = torch.tensor(units)
    total = torch.zeros(len(units), dtype=torch.float64)
    count = torch.zeros(len(units), dtype=torch.int64)
    device = next((t.device for t in [*ctx.gen.model.parameters(), *ctx.gen.model.buffers()]),
                  torch.device("cpu"))
    for rows in _batches(ctx.samples, ctx.batch_size):
        z = ctx.gen.shaped(ctx.gen.latents(ctx.seed, rows).to(device))
        with torch.inference_mode(), Trace(ctx.gen.model, ctx.layer, stop=True) as trace:
            ctx.gen.model(z)
        acts = trace.output[:, index.to(trace.output.device)].float().cpu().transpose(0, 1).flatten(1)
        above = acts > thresholds[:, None]
        total += (acts * above).double().sum(1)
        count += above.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), thresholds.double()).float()


def write_gan_insertion(result: GanInsertion, out: str | os.PathLike) -> ExperimentRecord:
    """insert.json, the figure insert.{png,svg}, the image grid insert_grid.png (rows:
    samples; columns: as generated, units inserted; the region outlined) and experiment.json."""
    out = Path(out)
    atomic_write_json(out / "insert.json", {
        "concept": result.concept, "layer": result.layer, "units": result.units,
        "values": result.values, "where": list(result.where),
        "image_region": list(result.image_region), **result.fractions, "ace": result.ace,
        "fractions": "concept pixels / pixels of the region (inside) or of the rest (outside)",
        "samples": result.samples, "seed": result.seed, "generator": result.generator,
        "segmenter": result.segmenter})
    fig, axes = new_figure(4.6, 3.4)
    ax = axes[0, 0]
    f = result.fractions
    xs = np.arange(2)
    ax.bar(xs - 0.2, [f["inside_before"], f["outside_before"]], 0.4, color="tab:gray",
           label="as generated")
    ax.bar(xs + 0.2, [f["inside_after"], f["outside_after"]], 0.4, color="tab:red",
           label=f"{len(result.units)} units inserted")
    ax.set_xticks(xs, ["inside the region", "outside"])
    ax.set_ylabel(f"{result.concept} pixels (fraction)")
    ax.set_title(f"{result.layer}: {result.concept} (ACE {result.ace:+.3f})", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, out / "insert", dpi=120)
    tables = ["insert.json"]
    if result.grid is not None and result.grid.shape[1]:
        atomic_write_bytes(out / "insert_grid.png", _grid_png(result.grid, result.image_region))
        tables.append("insert_grid.png")
    record = ExperimentRecord("gan-insert", result.layer, result.summary(), "insert", tables)
    write_record(out, record)
    return record


def _grid_png(images: torch.Tensor, region: tuple[int, int, int, int] | None = None,
              gap: int = 2) -> bytes:
    """PNG of a grid of uint8 images (columns, rows, 3, H, W), white gaps between them, the
    region (x0, y0, x1, y1) outlined in yellow."""
    cols, rows, _, h, w = images.shape
    canvas = Image.new("RGB", (cols * (w + gap) - gap, rows * (h + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for c in range(cols):
        for r in range(rows):
            left, top = c * (w + gap), r * (h + gap)
            canvas.paste(Image.fromarray(images[c, r].permute(1, 2, 0).numpy(), mode="RGB"),
                         (left, top))
            if region is not None:
                x0, y0, x1, y1 = region
                draw.rectangle((left + x0, top + y0, left + x1 - 1, top + y1 - 1), outline="yellow")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
