"""Option groups shared by several commands, and parsers of comma-separated values.

The model options are written once (`add_model_options`, turned into a Probe by
`probe_from_args`); the settings options are derived from the fields of
`netdissect.engine.settings.Settings` (`add_settings_options`); every command that runs a
model takes `--device` and `--quiet` (`add_run_options`).  `dissect` and `explain` take an
optional `--out` (`add_out_option`), results/<model>-<dataset> unless given (`out_from_args`).  `segment` and the gan commands share the segmenter options
(`add_segmenter_options`); the gan commands the generator options (`add_generator_options`,
turned into a Generator by `generator_from_args`).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from netdissect.engine.settings import Settings, setting_fields
from netdissect.models.preprocess import PRESETS

__all__ = ["floats", "names", "number_list", "names_or_file", "add_model_options",
           "add_settings_options", "add_run_options", "add_out_option", "default_out",
           "out_from_args", "probe_from_args", "settings_from_args", "add_segmenter_options",
           "add_generator_options", "generator_from_args", "SEGMENTER_HELP"]

SEGMENTER_HELP = ("toyworld (the toy world's segmenter, weights shipped), toyworld64 (the same "
                  "fine-tuned on 64x64 images, for the toy GAN), tv:NAME (torchvision: "
                  "deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large, "
                  "fcn_resnet50, fcn_resnet101, lraspp_mobilenet_v3_large; weights from the "
                  "weights option or torch's hub cache), hf:REPO_OR_FOLDER (a Hugging Face "
                  "semantic segmentation model, offline; pip install netdissect[hf]) or "
                  "package.module:callable (your own)")


def floats(option: str, count: int = 3):
    """An argparse type: `count` comma-separated numbers (one number is repeated)."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) == 1:
            values = values * count
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{option} takes {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def names(text: str) -> list[str]:
    """An argparse type: comma-separated names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()]


def names_or_file(text: str) -> list[str]:
    """An argparse type: comma-separated names, or a file with one name per line."""
    path = Path(text)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return names(text)


def number_list(kind: type, option: str, what: str = "numbers"):
    """An argparse type: comma-separated numbers of `kind` (int or float)."""
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} takes comma-separated {what}, got {text!r}") from None
    return parse


def add_model_options(p: argparse.ArgumentParser, layers: str | None = "--layers") -> None:
    """--model, --weights, --preset, --mean, --std, --input-size, and the layer option:
    `--layers` (several), `--layer` (one, required) or none."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="a zoo name (resnet18, alexnet, vgg16, efficientnet_lite0, demo_cnn, ...), "
                        "timm:NAME, or an import path package.module:callable")
    g.add_argument("--weights", help="the model's weights: a state dict FILE (.pt/.pth/"
                                     ".safetensors), 'imagenet' (torchvision's, downloaded into "
                                     "the torch hub cache), 'places365' (alexnet, resnet18, "
                                     "resnet50, densenet161; downloaded), or 'random' (seeded "
                                     "random weights). Default: torchvision's ImageNet weights "
                                     "if already cached; demo models use their own")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="input normalisation preset (mean/std); default: the model's own")
    g.add_argument("--mean", type=floats("--mean"), help="R,G,B means on 0-1 pixels")
    g.add_argument("--std", type=floats("--std"), help="R,G,B stds on 0-1 pixels")
    g.add_argument("--input-size", type=int,
                   help="model input size; dataset images of another size are resized to it")
    if layers == "--layers":
        g.add_argument("--layers", type=names, help="comma-separated layer names or aliases "
                                                    "(default: the model's default layers)")
    elif layers == "--layer":
        g.add_argument("--layer", required=True, help="the layer (module name or alias)")


def probe_from_args(args: argparse.Namespace, require_layers: bool = False):
    """The Probe of the model options: built, layers selected, preprocessing overridden.
    `--device` (when the command has it) and `--input-size` are checked first, so a wrong
    value is one line before any model is built.  With `require_layers`, a model with no
    default layers and no --layers is a SettingsError."""
    from netdissect.errors import SettingsError
    from netdissect.models.probe import check_device
    from netdissect.models.zoo import build_model

    if getattr(args, "device", None):
        check_device(args.device)
    if args.input_size is not None and args.input_size < 1:
        raise SettingsError(f"--input-size must be at least 1, got {args.input_size}")
    for option in ("mean", "std"):
        values = getattr(args, option)
        if values and not all(v == v and abs(v) != float("inf") for v in values):
            raise SettingsError(f"--{option} takes finite numbers, got {','.join(map(str, values))}")
    if args.std and any(v <= 0 for v in args.std):
        raise SettingsError(f"--std values must be above 0, got {','.join(map(str, args.std))}")

    layers = getattr(args, "layers", None) or ([args.layer] if getattr(args, "layer", None) else None)
    probe = build_model(args.model, weights=args.weights, preset=args.preset, layers=layers)
    if args.mean or args.std or args.input_size:
        probe.preprocess = probe.preprocess.replace(mean=args.mean, std=args.std,
                                                    size=args.input_size)
    if require_layers and not probe.layers:
        raise SettingsError(f"--layers: model {args.model!r} has no default layers; name some "
                            "(`netdissect layers MODEL` lists them).")
    return probe


_TYPES = {"float": float, "int": int, "str": str}


def add_settings_options(p: argparse.ArgumentParser, only: list[str] | None = None) -> None:
    """An option per field of Settings (or the fields named in `only`), its help and choices
    from the field's metadata.  Defaults stay None here, so Settings keeps its own."""
    g = p.add_argument_group("dissection settings")
    for f in setting_fields("numbers", "labels", "state", "runtime"):
        if only is not None and f.name not in only:
            continue
        option = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if f.type == "bool":
            g.add_argument(option, action="store_true", default=None, help=meta["help"])
            continue
        kind = names if meta.get("kind") == "names" else _TYPES[f.type.split(" ")[0].split("[")[0]]
        g.add_argument(option, type=kind, choices=meta.get("choices"), default=None,
                       help=meta["help"],
                       metavar=None if meta.get("choices") else meta.get("metavar", f.name.upper()))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The Settings of the options, checked (SettingsError naming the option), also for the
    commands that pass a few of them on without a Settings (ablate's --batch-size)."""
    settings = Settings.from_options(vars(args))
    settings.check()
    return settings


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--device and --quiet, for every command that runs a model."""
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_out_option(p: argparse.ArgumentParser, help: str) -> None:
    """--out, optional: `out_from_args` chooses results/<model>-<dataset> without it."""
    p.add_argument("--out", help=f"{help}; default: results/MODEL-DATASET in the current "
                                 "directory, named after the model and the dataset folder")


def _safe_name(text: str, fallback: str) -> str:
    """`text` as one file name: runs of characters other than letters, digits, '.', '_' and
    '-' become '_' ("timm:vit_b_16" -> "timm_vit_b_16")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or fallback


def default_out(model: str, dataset: str | os.PathLike) -> Path:
    """results/<model>-<dataset>, relative to the current directory: the model's name and the
    dataset folder's name, each made safe as a file name."""
    return Path("results") / (f"{_safe_name(model, 'model')}-"
                              f"{_safe_name(Path(dataset).resolve().name, 'dataset')}")


def out_from_args(args: argparse.Namespace, model_name: str) -> Path:
    """The result folder: --out, else `default_out` (stored in `args.out`), announced on
    stderr by the main process before the run starts."""
    if args.out:
        return Path(args.out)
    out = default_out(model_name, args.dataset)
    args.out = str(out)
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, not one per process
        print(f"results will be written to {out}", file=sys.stderr, flush=True)
    return out


def add_segmenter_options(p: argparse.ArgumentParser, weights_option: str = "--weights") -> None:
    """--segmenter, its weights (`weights_option`: `segment` says --weights, the gan commands,
    whose --weights are the generator's, --segmenter-weights) and --colors.  The gan commands
    default to the generator's own segmenter (`Generator.segmenter`)."""
    g = p.add_argument_group("segmenter")
    if weights_option == "--segmenter-weights":
        g.add_argument("--segmenter", default=None,
                       help=f"{SEGMENTER_HELP}; default: the generator's (toyworld64 for "
                            "toyworld_gan, toyworld otherwise)")
    else:
        g.add_argument("--segmenter", default="toyworld", help=f"{SEGMENTER_HELP}; default toyworld")
    g.add_argument(weights_option, help="the segmenter's weights: a state dict FILE (tv:NAME; "
                                        "toyworld: a retrained file; your own nn.Module)")
    g.add_argument("--colors", action="store_true",
                   help="add colour labels (the 11 Broden colour names, by rule)")


def add_generator_options(p: argparse.ArgumentParser, layers: str = "--layers") -> None:
    """--generator, --weights, --z-dim, --output-range and the layer option (`--layers`,
    several, or `--layer`, one, required), --samples and --seed."""
    g = p.add_argument_group("generator")
    g.add_argument("--generator", required=True,
                   help="a zoo generator name, or an import path package.module:callable "
                        "returning an nn.Module that maps latents (B x Z or B x Z x 1 x 1) to "
                        "images (B x 3 x H x W)")
    g.add_argument("--weights", help="the generator's weights: a state dict FILE (.pt/.pth/"
                                     ".safetensors)")
    g.add_argument("--z-dim", type=int, help="latent size (default: the module's z_dim)")
    g.add_argument("--output-range", default="-1,1",
                   help="output values of black and white: -1,1 (tanh, the default) or 0,1")
    if layers == "--layers":
        g.add_argument("--layers", type=names, help="comma-separated layer names (default: the "
                                                    "generator's default layers)")
    else:
        g.add_argument("--layer", required=True, help="the layer (module name)")
    g.add_argument("--samples", type=int, default=1000,
                   help="generated images (default 1000)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the latents (sample i's latent depends on the seed and i only)")


def generator_from_args(args: argparse.Namespace):
    """The Generator of the generator options (--device checked first)."""
    from netdissect.models.generators import build_generator
    from netdissect.models.probe import check_device

    if getattr(args, "device", None):
        check_device(args.device)
    return build_generator(args.generator, weights=args.weights, z_dim=args.z_dim,
                           output_range=args.output_range)
