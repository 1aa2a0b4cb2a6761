"""Axis alignment (docs/method.md section 10): dissect a layer in a randomly rotated basis.

Network Dissection counts a unit as interpretable when its own axis aligns with a concept.  To
test whether that alignment is special, the paper rotates the layer's channel vector at every
position by a Haar-random orthogonal matrix R (det +1) before thresholds and tally, and by its
partial powers R^a, a in [0, 1], which interpolate from the identity (a = 0) to R (a = 1).  A
full rotation keeps the representation's information (R is invertible) but removes most
unique detectors: interpretable units are special directions.

All powers are dissected in the same passes over the data: `RotatedProbe` reads the layer once
per batch and returns one feature map per power, named `rotated_<i>`, R^a_i . x (an einsum
over channels).  a = 0 returns the layer's own output, so it reproduces the plain dissection
bit for bit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from netdissect.errors import LayerError, SettingsError
from netdissect.experiments.record import ExperimentRecord, write_record
from netdissect.experiments.summary import count_columns, unique_detectors_figure
from netdissect.files import atomic_torch_save, atomic_write_json, write_csv
from netdissect.models.probe import Probe

__all__ = ["rotate", "random_rotation", "rotation_power", "RotatedProbe", "RotationResult",
           "write_rotation", "DEFAULT_POWERS"]

DEFAULT_POWERS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def random_rotation(n: int, seed: int = 0) -> torch.Tensor:
    """A Haar-random n x n rotation (orthogonal, det +1) in float64, reproducible from `seed`.

    QR of a standard Gaussian matrix, with the signs of R's diagonal moved into Q (without
    that correction Q is not Haar-distributed); a first column flipped if det is -1.
    """
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotation_power(rotation: torch.Tensor, a: float) -> torch.Tensor:
    """R^a for a rotation R and a in [0, 1], in float64; exactly the identity at a = 0.

    R is normal, so R = V diag(e^{i theta}) V^-1 with eigen-angles theta in (-pi, pi]; then
    R^a = V diag(e^{i a theta}) V^-1.  This is the principal power the real Schur form gives
    (R = Q blockdiag(rot(theta_j)) Q^T, R^a = Q blockdiag(rot(a theta_j)) Q^T) computed in
    complex arithmetic, as scipy is not a dependency.  Conjugate eigenvalues get conjugate
    powers, so the result is real up to rounding (~1e-15); its real part is returned.
    """
    if not 0.0 <= a <= 1.0:
        raise SettingsError(f"rotation power must be in [0, 1], got {a}")
    n = rotation.shape[0]
    if a == 0.0:
        return torch.eye(n, dtype=torch.float64)
    rotation = rotation.to(torch.float64)
    if a == 1.0:
        return rotation.clone()
    values, vectors = torch.linalg.eig(rotation)
    powered = torch.exp(1j * a * torch.angle(values))
    result = torch.linalg.solve(vectors.T, (vectors * powered[None, :]).T).T  # V D V^-1
    return result.real.contiguous()


@dataclass
class RotatedProbe(Probe):
    """A probe reading `target` once per batch and returning R^a . (its output) for each power,
    as the layers `rotated_0`, `rotated_1`, ... (in the order of `powers`).

    R is `random_rotation(C, seed)`, built at the first batch, when the channel count C is
    known (`rotation`); copies made by `select` share it.
    """

    target: str = ""
    powers: list[float] = field(default_factory=list)
    seed: int = 0
    built: dict = field(default_factory=dict)  # "rotation": R float64, "matrices": R^a float32

    def __post_init__(self) -> None:
        for a in self.powers:
            if not 0.0 <= a <= 1.0:
                raise SettingsError(f"rotation powers must lie in [0, 1], got {a}")
        self.target = Probe.resolve(self, [self.target])[0]
        if self.layers is None:
            self.layers = self.view_names
        super().__post_init__()

    @property
    def view_names(self) -> list[str]:
        return [f"rotated_{i}" for i in range(len(self.powers))]

    @property
    def rotation(self) -> torch.Tensor | None:
        return self.built.get("rotation")

    def resolve(self, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in self.view_names]
        if unknown:
            raise LayerError(f"a rotated probe reads {', '.join(self.view_names)}, not {', '.join(unknown)}")
        return list(dict.fromkeys(names))

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(images, [self.target])[self.target]
        if feats.dim() != 4:
            raise LayerError(f"layer {self.target!r} does not output N x C x H x W feature maps; "
                             "rotation needs a convolutional layer.")
        matrices = self._matrices(feats.shape[1], feats.device).to(feats.dtype)
        rotated = torch.einsum("poc,nchw->pnohw", matrices, feats) if len(matrices) else None
        out, j = {}, 0
        for name, a in zip(self.view_names, self.powers):
            if a == 0.0:
                out[name] = feats
            else:
                out[name] = rotated[j]
                j += 1
        return {name: out[name] for name in self.layers}

    def _matrices(self, channels: int, device: torch.device) -> torch.Tensor:
        if self.rotation is None or self.rotation.shape[0] != channels:
            self.built["rotation"] = random_rotation(channels, self.seed)
            rotated = [rotation_power(self.rotation, a) for a in self.powers if a != 0.0]
            self.built["matrices"] = (torch.stack(rotated).float() if rotated
                                      else torch.zeros(0, channels, channels))
        return self.built["matrices"].to(device)


@dataclass
class RotationResult:
    """Detector counts of one layer for each rotation power, and the dissection behind them."""

    layer: str
    powers: list[float]
    counts: list[dict]  # LayerResult.counts() per power
    seed: int
    rotation: torch.Tensor  # R, float64 (C, C)
    dissection: object  # netdissect Dissection with layers rotated_<i>

    def rows(self) -> list[dict]:
        """One CSV row per power: detectors, unique detectors per category and in total."""
        return [{"a": a, **count_columns(c)} for a, c in zip(self.powers, self.counts)]

    def summary(self) -> str:
        order = sorted(zip(self.powers, self.counts), key=lambda p: p[0])
        text = ", ".join(f"a={a:g}: {c['unique_detectors_total']}" for a, c in order)
        if all("significant_unique_detectors_total" in c for _, c in order):
            text += "; significant: " + ", ".join(f"a={a:g}: {c['significant_unique_detectors_total']}"
                                                  for a, c in order)
        return f"Unique detectors by rotation power ({text}); seed {self.seed}."


def rotate(model: nn.Module | Probe, dataset: str | os.PathLike, layer: str, *,
           powers: list[float] | tuple[float, ...] = DEFAULT_POWERS, seed: int = 0,
           out: str | os.PathLike | None = None, mean=None, std=None, input_size=None,
           **dissect_options) -> RotationResult:
    """Dissect `layer` of a model (or Probe) in the bases R^a for every a in `powers`, in one
    set of passes.  R is `random_rotation(channels, seed)`.  Other keyword options (quantile,
    iou_threshold, batch_size, workers, device, progress, ...) go to `netdissect.dissect`.
    With `out`, writes OUT/rotate.json, rotate.csv, rotate.{png,svg}, rotation.pt (R),
    experiment.json and the dissection under OUT/dissection (layer rotated_<i> is power i).
    """
    from netdissect.api import as_probe, dissect

    powers = [float(a) for a in powers]
    if not powers:
        raise SettingsError("give at least one rotation power a in [0, 1] (--powers)")
    base = as_probe(model, [layer], mean, std, input_size)
    probe = RotatedProbe(base.model, None, base.preprocess, name=base.name, aliases=base.aliases,
                         weights=base.weights, weights_fingerprint=base.weights_fingerprint,
                         target=layer, powers=powers, seed=seed)
    dissection = dissect(probe, dataset, report=False, **dissect_options)
    counts = [dissection[name].counts() for name in probe.view_names]
    result = RotationResult(probe.target, powers, counts, seed, probe.rotation, dissection)
    if out is not None:
        write_rotation(result, out)
    return result


def write_rotation(result: RotationResult, out: str | os.PathLike) -> ExperimentRecord:
    """Write rotate.json, rotate.csv, rotate.png/.svg, rotation.pt, experiment.json and the
    dissection under `out`; returns the record."""
    from pathlib import Path

    out = Path(out)
    result.dissection.save(out / "dissection")
    atomic_write_json(out / "rotate.json", {
        "layer": result.layer, "seed": result.seed,
        "powers": [{"a": a, "dissection_layer": f"rotated_{i}", **c}
                   for i, (a, c) in enumerate(zip(result.powers, result.counts))]})
    write_csv(out / "rotate.csv", result.rows())
    atomic_torch_save(out / "rotation.pt", result.rotation)
    order = sorted(range(len(result.powers)), key=lambda i: result.powers[i])
    unique_detectors_figure([result.powers[i] for i in order], [result.counts[i] for i in order],
                            out / "rotate", xlabel="rotation power a (0: unit basis, 1: random rotation)",
                            title=f"{result.layer}: unique detectors under rotation R^a (seed {result.seed})")
    record = ExperimentRecord("rotate", result.layer, result.summary(), "rotate",
                              ["rotate.json", "rotate.csv"])
    write_record(out, record)
    return record
