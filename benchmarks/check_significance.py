"""The demo's science with error bars (issue 17): which of the paper's findings survive the
permutation null and the bootstrap on the toy world?

1. Emergence: the demo CNN trained vs the same network with random weights (every layer).
2. Low to high: colour early, objects and parts late (the trained network's layers).
3. Axis alignment: conv5 in its own basis vs a full random rotation.

Each dissection runs with `--null N --bootstrap R`; the script prints, per row, detectors with
their 95% interval, significant detectors, unique and significant unique detectors, and the
detectors under shuffled labels, and the cost of the null and the bootstrap against a plain
run of the same layers.  Figures go to OUT/figures.json.

    python benchmarks/check_significance.py [--dataset data/toyworld] [--null 100]
        [--bootstrap 200] [--out benchmarks/out/check_significance]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


def row(name: str, counts: dict) -> dict:
    boot = counts.get("bootstrap", {})
    return {"run": name, "detectors": counts["detectors"],
            "detectors_interval": boot.get("detectors"),
            "significant": counts.get("significant_detectors"),
            "unique": counts["unique_detectors_total"],
            "unique_interval": boot.get("unique_detectors_total"),
            "significant_unique": counts.get("significant_unique_detectors_total"),
            "significant_unique_per_category": counts.get("significant_unique_detectors"),
            "unique_per_category": counts["unique_detectors"],
            "shuffled_detectors": counts.get("shuffled_labels", {}).get("detectors")}


def show(r: dict) -> str:
    def iv(v):
        return f"[{v[0]:g}-{v[1]:g}]" if v else ""
    per = " ".join(f"{k}:{v}" for k, v in (r["significant_unique_per_category"] or {}).items() if v)
    return (f"{r['run']:22s} det {r['detectors']:4d} {iv(r['detectors_interval']):12s} "
            f"sig {r['significant']!s:>4s}  unique {r['unique']:3d} {iv(r['unique_interval']):10s} "
            f"sig.unique {r['significant_unique']!s:>3s} ({per})  shuffled {r['shuffled_detectors'][0] if r['shuffled_detectors'] else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="data/toyworld")
    parser.add_argument("--images", type=int, default=2000, help="toy world size when generated")
    parser.add_argument("--null", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/out/check_significance")
    args = parser.parse_args()

    import netdissect
    from netdissect.data.toyworld import ensure_toyworld
    from netdissect.experiments import rotate
    from netdissect.models.zoo import build_model

    out = Path(args.out)
    world = ensure_toyworld(args.dataset, images=args.images)
    resampling = dict(null=args.null, bootstrap=args.bootstrap)
    figures: dict = {"null": args.null, "bootstrap": args.bootstrap, "rows": [], "seconds": {}}

    start = time.perf_counter()
    netdissect.dissect(build_model("demo_cnn"), world, LAYERS, out=out / "plain", report=False,
                       progress=False, restart=True)
    figures["seconds"]["plain"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    trained = netdissect.dissect(build_model("demo_cnn"), world, LAYERS, out=out / "trained",
                                 report=False, progress=False, restart=True, **resampling)
    figures["seconds"]["with_null_and_bootstrap"] = round(time.perf_counter() - start, 1)
    random = netdissect.dissect(build_model("demo_cnn", weights="random"), world, LAYERS,
                                out=out / "random", report=False, progress=False, restart=True,
                                **resampling)
    for layer in LAYERS:
        figures["rows"].append(row(f"trained {layer}", trained[layer].counts()))
    for layer in LAYERS:
        figures["rows"].append(row(f"random  {layer}", random[layer].counts()))
    rotation = rotate(build_model("demo_cnn"), world, "conv5", powers=[0.0, 1.0], seed=0,
                      out=out / "rotate", progress=False, restart=True, **resampling)
    for a, counts in zip(rotation.powers, rotation.counts):
        figures["rows"].append(row(f"conv5 rotated a={a:g}", counts))
    for r in figures["rows"]:
        print(show(r))
    extra = figures["seconds"]["with_null_and_bootstrap"] / figures["seconds"]["plain"]
    print(f"plain run of the 5 layers {figures['seconds']['plain']} s; with --null {args.null} "
          f"--bootstrap {args.bootstrap}: {figures['seconds']['with_null_and_bootstrap']} s "
          f"({extra:.2f}x)")
    (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures: {out / 'figures.json'}")


if __name__ == "__main__":
    main()
