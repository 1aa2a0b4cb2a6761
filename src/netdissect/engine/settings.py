"""The settings of a dissection, each tagged with what it decides.

    Settings(quantile=0.01, categories=["object", "part"])

Every field has a role, and everything that depends on the roles is derived from them here,
so a new setting is one new field:

    numbers  decides the statistics (thresholds, tallies, top images): part of the layer
             fingerprint that decides whether a finished layer can be reused, and of the key
             of a saved state
    labels   decides the labels derived from the tallies (IoU threshold, IoU definition):
             recorded, but a change needs no pass over the data (`netdissect relabel`)
    state    decides how the work is split into batches: part of a saved state's key only
    runtime  how the run goes (workers, cache, checkpoints): recorded nowhere

The summary's settings block, the fingerprint, the resume key and the command-line options
(`netdissect.cli.options.add_settings_options`) all read the fields' metadata.  This module
imports nothing heavy, so the command line can build its options without torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

from netdissect.errors import SettingsError

__all__ = ["Settings", "DEFINITIONS", "ROLES", "setting_fields", "fingerprint_components",
           "fingerprint", "state_key", "summary_settings", "describe_changes", "check_iou_threshold"]

# How A counts activation pixels (docs/method.md section 6); "pnas" also thresholds the
# upsampled maps (section 14), so it cannot be derived from the other two's tallies.
DEFINITIONS = ("original", "lite", "pnas")
# The top quantile q of T_k when --quantile is not given.
DEFAULT_QUANTILE = {"original": 0.005, "lite": 0.005, "pnas": 0.01}
ROLES = ("numbers", "labels", "state", "runtime")
# The settings of the significance statistics (section 15); off, they are left out of
# fingerprints and summaries.
RESAMPLING = ("null", "bootstrap", "resample_seed")
CACHE_POLICIES = ("auto", "always", "never")


def _setting(default, role: str, help: str, **cli):
    """A field of Settings: its default, its role (see the module docstring), the help text of
    its command-line option and extra argparse options (choices, metavar, kind)."""
    assert role in ROLES
    kwargs = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"role": role, "help": help, **cli}, **kwargs)


@dataclass
class Settings:
    """What decides a dissection's numbers and labels, and how it runs (see the module doc)."""

    quantile: float | None = _setting(None, "numbers", "top quantile q of T_k (default 0.005, "
                                      "0.01 with --definition pnas; docs/method.md section 4)")
    iou_threshold: float = _setting(0.04, "labels", "detector IoU threshold (default 0.04)")
    definition: str = _setting("original", "labels", "the IoU rule: original (CVPR 2017), lite "
                               "(NetDissect-Lite) or pnas (PNAS 2020: thresholds on upsampled "
                               "maps, plain IoU); docs/method.md sections 6 and 14",
                               choices=DEFINITIONS)
    categories: list[str] | None = _setting(None, "numbers", "comma-separated subset of "
                                            "categories (default: all)", kind="names")
    top_k: int = _setting(10, "numbers", "top images kept per unit (default 10)")
    skip_bad: bool = _setting(False, "numbers", "skip unreadable images and count them in "
                              "summary.json instead of stopping")
    null: int = _setting(0, "numbers", "image permutations of the null distribution of each "
                         "unit's best IoU, for p- and q-values (default 0: none; e.g. 100; "
                         "docs/method.md section 15)", metavar="N")
    bootstrap: int = _setting(0, "numbers", "Poisson bootstrap replicates for 95%% intervals of "
                              "the IoUs and counts (default 0: none; e.g. 200)", metavar="B")
    resample_seed: int = _setting(0, "numbers", "seed of the null's permutations and the "
                                  "bootstrap's weights (default 0)", metavar="SEED")
    fdr: float = _setting(0.05, "labels", "false discovery rate of significant detectors "
                          "(Benjamini-Hochberg q <= FDR; default 0.05)")
    batch_size: int = _setting(32, "state", "images per batch (default 32)")
    workers: int | None = _setting(None, "runtime", "data-loader worker processes (default: up to 4)")
    cache_limit_gb: float = _setting(8.0, "runtime", "largest on-disk activation cache; above it "
                                     "pass 2 runs the model again (default 8)")
    cache: str = _setting("auto", "runtime", "pass 2 reads pass 1's outputs from an on-disk cache "
                          "(always), runs the model again (never), or whichever is faster, timed "
                          "on the first batch (auto, the default)", choices=CACHE_POLICIES)
    checkpoint_seconds: float = _setting(300.0, "runtime", "save the run's state this often, to "
                                         "resume after an interruption (default 300)")

    def __post_init__(self) -> None:
        if self.quantile is None:
            self.quantile = DEFAULT_QUANTILE.get(self.definition, DEFAULT_QUANTILE["original"])

    @property
    def upsampled_thresholds(self) -> bool:
        """Whether T_k is a quantile of the maps upsampled to the label size (the PNAS rule)
        rather than of the layer's own values."""
        return self.definition == "pnas"

    def check(self) -> None:
        """SettingsError naming the option when a value is out of range."""
        check_iou_threshold(self.iou_threshold)
        if self.cache_limit_gb < 0 or self.checkpoint_seconds < 0:
            raise SettingsError("--cache-limit-gb and --checkpoint-seconds must be 0 or more")
        if not 0.0 < self.quantile < 1.0:
            raise SettingsError(f"--quantile must be between 0 and 1, got {self.quantile}")
        if self.definition not in DEFINITIONS:
            raise SettingsError(f"--definition must be one of {', '.join(DEFINITIONS)}, "
                                f"got {self.definition!r}")
        if self.null < 0 or self.bootstrap < 0:
            raise SettingsError(f"--null and --bootstrap must be 0 or more, got {self.null} and "
                                f"{self.bootstrap}")
        if not 0.0 < self.fdr < 1.0:
            raise SettingsError(f"--fdr must be between 0 and 1, got {self.fdr}")
        if self.batch_size < 1:
            raise SettingsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.top_k < 1:
            raise SettingsError(f"--top-k must be at least 1, got {self.top_k}")
        if self.cache not in CACHE_POLICIES:
            raise SettingsError(f"--cache must be one of {', '.join(CACHE_POLICIES)}, got {self.cache!r}")
        if self.workers is not None and self.workers < 0:
            raise SettingsError(f"--workers must be 0 or more, got {self.workers}")

    @classmethod
    def from_options(cls, options: dict) -> "Settings":
        """Settings from a dict that may hold other keys too (e.g. argparse's namespace);
        a None value keeps the default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names and v is not None})


def check_iou_threshold(value: float | None) -> None:
    """SettingsError unless `value` (when given) is an IoU threshold, in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise SettingsError(f"--iou-threshold must be between 0 and 1, got {value}")


def setting_fields(*roles: str):
    """The fields of Settings with one of `roles`, in declaration order."""
    return [f for f in fields(Settings) if f.metadata["role"] in roles]


def fingerprint_components(settings: Settings, dataset_fingerprint: str, categories: list[str],
                           weights_fingerprint: str, preprocess: dict, dataset_files: str) -> dict:
    """The inputs that decide a layer's statistics: the dataset (its CSV files, and the size
    and modification time of its images and label planes), the weights, the preprocessing
    (mean, std, input_size) and the `numbers` settings.  The IoU threshold and definition are
    not among them: every definition's A is tallied, labels are derived after; only the pnas
    definition's thresholds on upsampled maps change the statistics."""
    values = {f.name: getattr(settings, f.name) for f in setting_fields("numbers")}
    values["categories"] = list(categories)
    if not settings.null and not settings.bootstrap:  # fingerprints of plain runs stay as they were
        for name in RESAMPLING:
            del values[name]
    if settings.null:  # the null permutes images within batches: the batches decide its draws
        values["batch_size"] = settings.batch_size
    if settings.upsampled_thresholds:  # the only part of the definition that decides numbers
        values["thresholds"] = "upsampled"
    return {"dataset": dataset_fingerprint, "dataset_files": dataset_files,
            "weights": weights_fingerprint, **preprocess, **values}


#: How a changed component is named in messages.
COMPONENT_NAMES = {
    "dataset": "the dataset's CSV files", "dataset_files": "the dataset's image or label files",
    "weights": "the model's weights", "mean": "the input mean", "std": "the input std",
    "input_size": "the input size", "thresholds": "where thresholds are taken (--definition pnas)", "layers": "the layers", "world_size": "the number of processes",
    "format": "the format of saved states (an earlier netdissect version)",
}


def describe_changes(saved: dict, now: dict) -> list[str]:
    """The components that differ between two component dicts (or state keys), named for
    people: e.g. ["the dataset's image or label files", "quantile"]."""
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    return [COMPONENT_NAMES.get(k, k) for k in changed]


def fingerprint(components: dict) -> str:
    """sha256 of the components, as recorded in summary.json."""
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()


def state_key(components: dict, settings: Settings, layers: list[str], world_size: int) -> dict:
    """What a saved state must match to be resumed: the components, the `state` settings, the
    layers still to dissect and the number of processes (each holds its own share)."""
    values = {f.name: getattr(settings, f.name) for f in setting_fields("state")}
    return {"format": 3, **components, **values, "layers": list(layers), "world_size": world_size}


def summary_settings(settings: Settings, categories: list[str], preprocess: dict) -> dict:
    """The settings block of summary.json: every setting but the runtime ones, the categories
    as selected in the dataset, and the preprocessing."""
    block = {f.name: getattr(settings, f.name) for f in setting_fields("numbers", "labels", "state")}
    block["categories"] = list(categories)
    if not settings.null and not settings.bootstrap:
        for name in (*RESAMPLING, "fdr"):
            del block[name]
    if settings.upsampled_thresholds:
        block["thresholds"] = "upsampled"
    return {**block, **preprocess}
