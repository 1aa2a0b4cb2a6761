"""The toy-world check of `netdissect segment` (issue 13): does a segmenter's dataset give the
same dissection as the hand-labelled one?

1. Generate a fresh toy world (images + ground truth; a seed the segmenter never trained on).
2. Segment its images with the `toyworld` segmenter (and the colour namer: --colors) into a
   second Broden folder.
3. Print the segmenter's mean IoU per category against the ground truth (goal: >= 0.8).
4. Dissect the demo CNN on both folders over the same categories (object, part, material,
   color), with each definition, and print how often a unit's label agrees between the two,
   among the units that are detectors on the ground truth (goal: >= 90%).

    python benchmarks/check_segment.py [--images 1000] [--seed 11] [--layers conv4,conv5]
        [--definitions original,pnas] [--out benchmarks/out/check_segment]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CATEGORIES = ["object", "part", "material", "color"]


def agreement(truth, segmented) -> dict:
    """Unit-label agreement between two LayerResults of the same units."""
    a, b = truth.labelled_units(), segmented.labelled_units()
    detectors = [u for u in a if u.detector]
    same = sum(1 for u in detectors if b[u.unit].label == u.label)
    both = sum(1 for u in detectors if b[u.unit].detector)
    return {"detectors_truth": len(detectors), "detectors_segmented": sum(u.detector for u in b),
            "detectors_in_both": both, "same_label": same,
            "agreement": same / len(detectors) if detectors else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11, help="toy world seed (not a training seed)")
    parser.add_argument("--layers", default="conv4,conv5")
    parser.add_argument("--definitions", default="original,pnas")
    parser.add_argument("--out", default="benchmarks/out/check_segment")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import netdissect
    from netdissect.data.segment import segment_images
    from netdissect.data.segment.evaluate import segmentation_iou
    from netdissect.data.toyworld import ensure_toyworld
    from netdissect.models.zoo import build_model

    out = Path(args.out)
    layers = args.layers.split(",")
    figures: dict = {"images": args.images, "seed": args.seed}
    start = time.perf_counter()
    truth = ensure_toyworld(out / "truth", images=args.images, seed=args.seed)
    figures["generate_seconds"] = round(time.perf_counter() - start, 1)

    # The toy world keeps its label PNGs beside the images: segment the JPEG images only, under
    # the same relative names (rows of the two folders are matched by name).
    photos = out / "photos"
    for image in sorted((truth / "images").rglob("*.jpg")):
        target = photos / image.relative_to(truth / "images")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, target)
    start = time.perf_counter()
    segmented = out / "segmented"
    segment_images(photos, "toyworld", segmented, colors=True, batch_size=args.batch_size)
    figures["segment_seconds"] = round(time.perf_counter() - start, 1)

    scores = segmentation_iou(truth, segmented, CATEGORIES)
    figures["mean_iou"] = {c: round(s["mean_iou"], 4) for c, s in scores.items()}
    print("segmenter mean IoU per category (goal >= 0.8):")
    for category, s in scores.items():
        worst = sorted((v["iou"], name) for name, v in s["labels"].items() if v["truth_pixels"])[:3]
        print(f"  {category:9s} {s['mean_iou']:.3f}   lowest: "
              + ", ".join(f"{name} {iou:.2f}" for iou, name in worst))

    figures["agreement"] = {}
    for definition in args.definitions.split(","):
        results = {}
        for name, folder in (("truth", truth), ("segmented", segmented)):
            results[name] = netdissect.dissect(
                build_model("demo_cnn", layers=layers), folder, layers, categories=CATEGORIES, definition=definition,
                out=out / f"dissect-{definition}-{name}", report=False, progress=False)
        for layer in layers:
            a = agreement(results["truth"][layer], results["segmented"][layer])
            figures["agreement"][f"{definition}/{layer}"] = a
            print(f"{definition:8s} {layer}: {a['same_label']} of {a['detectors_truth']} ground-truth "
                  f"detectors keep their label on the segmented folder ({100 * a['agreement']:.1f}%; "
                  f"goal >= 90%); detectors {a['detectors_truth']} -> {a['detectors_segmented']}")
    (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures: {out / 'figures.json'}")


if __name__ == "__main__":
    main()
