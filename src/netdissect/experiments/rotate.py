"""Axis alignment (METHOD.md section 10): dissect a layer in a randomly rotated channel basis.

Network Dissection counts a unit as interpretable when its own axis aligns with a concept.  To
test whether that alignment is special, the paper rotates the layer's channel vector at every
position by a Haar-random orthogonal matrix R (det +1) before thresholds and tally, and by its
partial powers R^a, a in [0, 1], which interpolate from the identity (a = 0) to R (a = 1).  A
full rotation keeps the representation's information (R is invertible) but removes most
unique detectors: interpretable units are special directions.

All powers are dissected in the same passes over the data.  Without touching the engine, the
model is wrapped in `RotatedLayers`: a forward hook on the target layer feeds R^a . x (an
einsum over channels) through one identity child module `rotated_<i>` per power, and
`netdissect.dissect` captures those children as if they were layers.  a = 0 passes the
layer's own output through unchanged, so it reproduces the plain dissection bit for bit.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from netdissect.experiments.common import (add_model_arguments, load_cli_model, number_list,
                                           print_outputs, resolve_layer, unique_detectors_figure,
                                           write_csv, write_json)
from netdissect.models.capture import LayerError, find_module, first_tensor
from netdissect.report.experiments import refresh_overviews
from netdissect.files import atomic_torch_save

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
        raise ValueError(f"rotation power must be in [0, 1], got {a}")
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


class RotatedLayers(nn.Module):
    """`model` plus one identity child `rotated_<i>` per power a_i, fed R^a_i . (layer output).

    Dissecting the layers `rotated_0`, `rotated_1`, ... of this wrapper dissects `layer` of
    `model` in each rotated basis, all in one forward pass.  R is `random_rotation(C, seed)`,
    built at the first forward pass, when the layer's channel count C is known; a = 0 passes
    the layer's output through untouched.  The model's own output is returned unchanged (the
    rotated features do not feed back into the network).
    """

    def __init__(self, model: nn.Module, layer: str, powers: list[float], seed: int = 0):
        super().__init__()
        for a in powers:
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"rotation powers must lie in [0, 1], got {a}")
        self.model = model
        self.layer = layer
        self.target = find_module(model, layer)
        self.powers = [float(a) for a in powers]
        self.seed = seed
        self.rotation: torch.Tensor | None = None  # R, float64, once the channels are known
        self.matrices: torch.Tensor | None = None  # R^a for the powers a != 0, float32
        for i in range(len(self.powers)):
            self.add_module(f"rotated_{i}", nn.Identity())

    @property
    def layer_names(self) -> list[str]:
        """The names to pass to `dissect`, one per power, in order."""
        return [f"rotated_{i}" for i in range(len(self.powers))]

    def _build(self, channels: int, device: torch.device) -> None:
        self.rotation = random_rotation(channels, self.seed)
        rotated = [rotation_power(self.rotation, a) for a in self.powers if a != 0.0]
        self.matrices = (torch.stack(rotated).float().to(device) if rotated
                         else torch.zeros(0, channels, channels, device=device))

    def _hook(self, module: nn.Module, inputs, output) -> None:
        feats = first_tensor(output)
        if feats is None or feats.dim() != 4:
            raise LayerError(f"layer {self.layer!r} does not output N x C x H x W feature maps; "
                             "rotation needs a convolutional layer.")
        if self.matrices is None or self.matrices.shape[-1] != feats.shape[1]:
            self._build(feats.shape[1], feats.device)
        matrices = self.matrices.to(feats.device, feats.dtype)
        rotated = torch.einsum("poc,nchw->pnohw", matrices, feats) if len(matrices) else None
        j = 0
        for i, a in enumerate(self.powers):
            child = getattr(self, f"rotated_{i}")
            if a == 0.0:
                child(feats)
            else:
                child(rotated[j])
                j += 1

    def forward(self, x: torch.Tensor):
        handle = self.target.register_forward_hook(self._hook)
        try:
            return self.model(x)
        finally:
            handle.remove()


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
        rows = []
        for a, c in zip(self.powers, self.counts):
            rows.append({"a": a, "units": c["units"], "detectors": c["detectors"],
                         "unique_detectors_total": c["unique_detectors_total"],
                         **{f"unique_{cat}": n for cat, n in c["unique_detectors"].items()}})
        return rows


def rotate(model: nn.Module, dataset: str | os.PathLike, layer: str, *,
           powers: list[float] | tuple[float, ...] = DEFAULT_POWERS, seed: int = 0,
           out: str | os.PathLike | None = None, iou_threshold: float = 0.04,
           **dissect_options) -> RotationResult:
    """Dissect `layer` of `model` in the bases R^a for every a in `powers` (one set of passes).

    R is `random_rotation(channels, seed)`.  Other keyword options (quantile, mean, std,
    batch_size, workers, device, progress, ...) go to `netdissect.dissect`.  With `out`, writes
    OUT/rotate.json, OUT/rotate.csv, OUT/rotate.{png,svg}, OUT/rotation.pt (R) and the
    dissection under OUT/dissection (layer rotated_<i> is power i).
    """
    from netdissect.dissect import dissect

    powers = [float(a) for a in powers]
    if not powers:
        raise ValueError("give at least one rotation power a in [0, 1]")
    wrapper = RotatedLayers(model, layer, powers, seed)
    dissection = dissect(wrapper, dataset, wrapper.layer_names, iou_threshold=iou_threshold,
                         **dissect_options)
    counts = [dissection[name].counts() for name in wrapper.layer_names]
    result = RotationResult(layer, powers, counts, seed, wrapper.rotation, dissection)
    if out is not None:
        write_rotation(result, out)
    return result


def write_rotation(result: RotationResult, out: str | os.PathLike) -> Path:
    """Write rotate.json, rotate.csv, rotate.png/.svg, rotation.pt and the dissection under `out`."""
    out = Path(out)
    result.dissection.save(out / "dissection")
    write_json(out / "rotate.json", {
        "layer": result.layer, "seed": result.seed,
        "powers": [{"a": a, "dissection_layer": f"rotated_{i}", **c}
                   for i, (a, c) in enumerate(zip(result.powers, result.counts))]})
    write_csv(out / "rotate.csv", result.rows())
    atomic_torch_save(out / "rotation.pt", result.rotation)
    order = sorted(range(len(result.powers)), key=lambda i: result.powers[i])
    unique_detectors_figure([result.powers[i] for i in order], [result.counts[i] for i in order],
                            out / "rotate", xlabel="rotation power a (0: unit basis, 1: random rotation)",
                            title=f"{result.layer}: unique detectors under rotation R^a (seed {result.seed})")
    refresh_overviews(out)
    return out


def add_rotate_parser(subparsers) -> argparse.ArgumentParser:
    """`netdissect rotate`: dissect a layer in randomly rotated bases R^a."""
    p = subparsers.add_parser(
        "rotate", help="dissect a layer after rotating its channel basis (axis-alignment test)",
        description="Dissect one layer in the bases R^a of a Haar-random rotation R for several "
                    "powers a (0 = the units themselves, 1 = fully rotated), in one set of passes.")
    p.add_argument("--dataset", required=True, help="Broden-format folder (holds index.csv)")
    add_model_arguments(p)
    p.add_argument("--layer", required=True, help="the layer to rotate (module name or alias)")
    p.add_argument("--powers", type=number_list(float, "--powers", "numbers in [0, 1]"), default=list(DEFAULT_POWERS),
                   help="comma-separated rotation powers a in [0, 1] (default 0,0.2,...,1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random rotation (default 0)")
    p.add_argument("--quantile", type=float, default=0.005, help="top quantile q of T_k")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="detector IoU threshold")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_rotate)
    return p


def run_rotate(args: argparse.Namespace) -> int:
    """The handler of `netdissect rotate`; prints detectors per power and returns 0."""
    info, mean, std, size = load_cli_model(args)
    layer = resolve_layer(info, args.layer)
    result = rotate(info.model, args.dataset, layer, powers=args.powers, seed=args.seed,
                    out=args.out, iou_threshold=args.iou_threshold, quantile=args.quantile,
                    mean=mean, std=std, input_size=size, batch_size=args.batch_size,
                    workers=args.workers, device=args.device, progress=not args.quiet)
    print("a      detectors  unique")
    for row in result.rows():
        print(f"{row['a']:<6g} {row['detectors']:<10d} {row['unique_detectors_total']}")
    print_outputs(args.out)
    return 0
