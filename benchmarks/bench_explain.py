"""Compositional explanations benchmark: the unit-mask pass and the beam search at formula
lengths 1, 3 and 5, on the demo's toy world (2,000 images unless --images).

Layers: the demo CNN's conv5 (256 units), EfficientNet-Lite0's last block (_blocks.15) and,
for the goal, ResNet-18 layer4 (512 units, random seeded weights).  Each layer is dissected
first (its thresholds define the unit masks; a finished dissection in --out is reused), then
the mask pass runs once and the search once per length.  Prints the time per part, the mean
IoU per length, and an estimate for Broden's ADE20K part (22,210 images, ~1,200 labels, 512
units) from the measured cost per image and per scored candidate, beside the ~14 hours the
reference code (jayelm/compexp) takes for ResNet-18 layer4 at length 3 with 8 processes.
Goal on 2 CPU cores: length 3 on a 512-unit layer over 2,000 images in under 2 minutes
(mask pass + search, with the dissection reused).

    python benchmarks/bench_explain.py [--images 2000] [--models demo_cnn,efficientnet_lite0,resnet18]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

LAYERS = {"demo_cnn": "conv5", "efficientnet_lite0": "_blocks.15", "resnet18": "layer4"}
ADE = {"images": 22210, "labels": 1200, "units": 512}
REFERENCE_HOURS = 14.0


def probe_for(name: str):
    import torch
    import torchvision

    from netdissect.api import as_probe
    from netdissect.models.zoo import build_model

    if name == "resnet18":
        torch.manual_seed(0)
        return as_probe(torchvision.models.resnet18(weights=None).eval(), [LAYERS[name]])
    return build_model(name, layers=[LAYERS[name]])


def measure(name: str, data: Path, out: Path, lengths: list[int], beam: int, workers: int) -> dict:
    import netdissect
    from netdissect.compositional.run import collect_atoms
    from netdissect.compositional.search import beam_search
    from netdissect.engine.settings import Settings

    probe = probe_for(name)
    layer = probe.layers[0]
    start = time.perf_counter()
    dissection = netdissect.dissect(probe, data, out=out / name, progress=False, report=False,
                                    workers=workers)
    dissect_seconds = time.perf_counter() - start
    broden = netdissect.load_broden(data)
    if probe.preprocess.size is None:
        probe = dataclasses.replace(probe, preprocess=probe.preprocess.replace(
            size=(broden.rows[0].ih, broden.rows[0].iw)))
    start = time.perf_counter()
    with probe.session("cpu") as device:
        table = collect_atoms(probe, broden, dissection, set(), device,
                              Settings(workers=workers), progress=False)[layer]
    mask_seconds = time.perf_counter() - start
    import torch

    scored = torch.from_numpy(broden.label_category >= 0)
    present = torch.unique(table.atoms)
    present = present[(present > 0) & scored[present]]
    units = dissection[layer].units
    runs = {}
    for length in lengths:
        start = time.perf_counter()
        found = beam_search(table, units, present, broden.label_names, length=length, beam=beam)
        seconds = time.perf_counter() - start
        means = [sum(e.iou_by_length[n] for e in found) / units for n in range(length)]
        runs[length] = {"seconds": seconds, "means": means,
                        "candidates": units * beam * 3 * len(present) * (length - 1)}
    return {"name": name, "layer": layer, "units": units, "images": len(broden.rows),
            "labels": len(present), "atoms": len(table.pixels), "dissect_seconds": dissect_seconds,
            "mask_seconds": mask_seconds, "runs": runs}


def report(m: dict) -> None:
    print(f"\n{m['name']} {m['layer']}: {m['units']} units, {m['images']} images, "
          f"{m['labels']} labels, {m['atoms']} atoms")
    print(f"  dissection (thresholds; reused when in --out): {m['dissect_seconds']:.1f} s")
    print(f"  unit-mask pass: {m['mask_seconds']:.1f} s ({m['images'] / m['mask_seconds']:.0f} img/s)")
    for length, r in m["runs"].items():
        means = " ".join(f"{n + 1}:{v:.4f}" for n, v in enumerate(r["means"]))
        print(f"  length {length}: search {r['seconds']:.2f} s, {r['candidates']:,} candidates; "
              f"mean IoU by length {means}")
    if 3 in m["runs"]:
        total = m["mask_seconds"] + m["runs"][3]["seconds"]
        verdict = "met" if m["units"] >= 512 and total < 120 else ("n/a (fewer than 512 units)"
                                                                   if m["units"] < 512 else "MISSED")
        print(f"  length 3 total (mask pass + search): {total:.1f} s; goal < 120 s for 512 units "
              f"over 2,000 images: {verdict}")
        per_image = m["mask_seconds"] / m["images"] * (512 / m["units"])
        r = m["runs"][3]
        per_candidate = r["seconds"] / max(1, r["candidates"])
        candidates = ADE["units"] * 5 * 3 * ADE["labels"] * 2
        # the search's cost per candidate grows with the atoms, which grow with the images
        atoms_scale = ADE["images"] / m["images"]
        estimate = ADE["images"] * per_image + candidates * per_candidate * atoms_scale
        print(f"  ADE20K part estimate (22,210 images, 1,200 labels, 512 units, length 3): "
              f"{estimate / 60:.1f} min on this machine ({ADE['images'] * per_image / 60:.1f} min "
              f"mask pass + {candidates * per_candidate * atoms_scale / 60:.1f} min search, "
              f"assuming atoms grow with the images), against ~{REFERENCE_HOURS:g} h for the "
              f"reference code with 8 processes: {REFERENCE_HOURS * 3600 / estimate:.0f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--models", default="demo_cnn,efficientnet_lite0,resnet18")
    p.add_argument("--lengths", default="1,3,5")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "out")
    args = p.parse_args()

    from netdissect.data.toyworld import ensure_toyworld

    data = ensure_toyworld(args.data / f"toyworld-demo-{args.images}", images=args.images, seed=0,
                           progress=False)
    lengths = [int(v) for v in args.lengths.split(",")]
    for name in args.models.split(","):
        report(measure(name, data, args.data / f"explain-{args.images}", lengths, args.beam, args.workers))


if __name__ == "__main__":
    main()
