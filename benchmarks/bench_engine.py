"""Engine benchmark: dissect ResNet-18 layer4 (512 units at 7x7) on a generated Broden set.

Prints images per second per pass, the total time, the floor (the same images decoded and
run through the same model, nothing else), the ratio total/floor, and the peak memory
(resident set of the process, measured in a fresh child process per run).  Goal on 2 CPU
cores: total/floor <= 1.3, and the same peak memory for 1000 and 4000 images.

    python benchmarks/bench_engine.py --images 1000 [--images 4000] [--data benchmarks/out]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _model():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def child_floor(data: Path, batch_size: int, workers: int) -> dict:
    """Decode every image and run the whole model on it: the least any dissection must do."""
    import torch

    from netdissect.allocator import keep_freed_memory
    from netdissect.data.broden import BrodenImages, collate_samples, load_broden
    from netdissect.models.preprocess import Preprocess

    keep_freed_memory()  # the same allocator settings as a dissection (allocator.py)
    broden = load_broden(data)
    model = _model()
    loader = torch.utils.data.DataLoader(BrodenImages(broden, images=True, labels=False),
                                         batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_samples)
    preprocess = Preprocess()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            model(preprocess(batch["image"]))
    return {"seconds": time.perf_counter() - start, "images": len(broden.rows)}


def child_dissect(data: Path, batch_size: int, workers: int, out: Path) -> dict:
    import netdissect.api

    # Like the floor: imports and the model are ready before the clock starts.
    model = _model()
    start = time.perf_counter()
    # The HTML report is timed apart (`netdissect report`): the goal is about the passes.
    result = netdissect.api.dissect(model, data, ["layer4"], batch_size=batch_size, workers=workers,
                                    out=out, progress=False, report=False, restart=True)
    seconds = time.perf_counter() - start
    r = result["layer4"]
    return {"seconds": seconds, "timings": r.meta["timings"], "detectors": r.counts()["detectors"],
            "images": r.meta["dataset"]["images_processed"]}


def run_child(kind: str, data: Path, args) -> dict:
    """Run one measurement in a fresh process; add its peak resident memory (MB)."""
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, action="append", help="dataset sizes (default 1000)")
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--child", choices=["floor", "dissect"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        if args.child == "floor":
            result = child_floor(args.data, args.batch_size, args.workers)
        else:
            result = child_dissect(args.data, args.batch_size, args.workers, args.data / "result")
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch

    from netdissect.data.toyworld import ensure_toyworld

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, workers {args.workers}")
    for n in args.images or [1000]:
        data = ensure_toyworld(args.data / f"toyworld-{n}", images=n, seed=0)
        floor = run_child("floor", data, args)
        run = run_child("dissect", data, args)
        t = run["timings"]
        print(f"\n{n} images of 224x224, ResNet-18 layer4 (512 units at 7x7):")
        print(f"  pass 1 activations : {n / t['activations_seconds']:8.1f} img/s  ({t['activations_seconds']:.1f} s)")
        print(f"  pass 2 tally       : {n / t['tally_seconds']:8.1f} img/s  ({t['tally_seconds']:.1f} s)")
        print(f"  total              : {run['seconds']:8.1f} s   ({run['detectors']} detectors)")
        print(f"  floor              : {floor['seconds']:8.1f} s   ({n / floor['seconds']:.1f} img/s decode + forward)")
        print(f"  total / floor      : {run['seconds'] / floor['seconds']:8.2f}   (goal <= 1.3)")
        print(f"  peak memory        : {run['peak_mb']:8.0f} MB dissect, {floor['peak_mb']:.0f} MB floor")


if __name__ == "__main__":
    main()
