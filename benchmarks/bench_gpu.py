"""GPU benchmark: ResNet-18 layer4 (random seeded weights) on N toy-world images, on CUDA.

Generates the toy world once (default 20,000 images, under --data), then times
1. the floor: every image decoded by the data loader and run through the whole model on the
   GPU, nothing else (pinned memory, non-blocking copies, as the engine does);
2. a full dissection of layer4 (both passes, results written, no HTML report);
and prints images per second per pass, the peak GPU memory, the data-loader workers, the
ratio of the dissection to the floor, and the estimate for a Broden-sized run (63,305
images) from these figures: fixed costs plus the measured cost per image.  The goal is a
Broden-sized run in under 60 s on one H100/H200-class GPU (NetDissect-Lite: about 20
minutes).  One command, a few minutes on one GPU with 16 cores:

    python benchmarks/bench_gpu.py [--images 20000] [--batch-size 256] [--workers 16]
    python benchmarks/bench_gpu.py --device cpu --images 64     # a smoke test without a GPU
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

BRODEN_IMAGES = 63305
GOAL_SECONDS = 60.0


def model():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def floor(data: Path, device: str, batch_size: int, workers: int) -> tuple[float, int]:
    """Seconds to decode every image and run the whole model on it; the number of images."""
    import torch

    from netdissect.data.broden import BrodenImages, collate_samples, load_broden
    from netdissect.models.preprocess import Preprocess

    broden = load_broden(data)
    net = model().to(device).to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(BrodenImages(broden, images=True, labels=False),
                                         batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_samples, pin_memory=device.startswith("cuda"),
                                         persistent_workers=False)
    preprocess = Preprocess()
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            net(preprocess(batch["image"].to(device, non_blocking=True)))
    synchronize(device)
    return time.perf_counter() - start, len(broden.rows)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def dissection(data: Path, out: Path, device: str, batch_size: int, workers: int) -> dict:
    import torch

    import netdissect

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = netdissect.dissect(model(), data, ["layer4"], device=device, batch_size=batch_size,
                                workers=workers, out=out, progress=False, report=False, restart=True)
    seconds = time.perf_counter() - start
    layer = result["layer4"]
    memory = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else 0.0
    return {"seconds": seconds, "timings": layer.meta["timings"], "pass2": layer.meta["pass2_source"],
            "detectors": layer.counts()["detectors"], "gpu_mb": memory}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "out")
    args = p.parse_args()

    import torch

    from netdissect.allocator import keep_freed_memory
    from netdissect.data.toyworld import ensure_toyworld

    keep_freed_memory()  # the floor runs with the allocator settings a dissection uses
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu for a smoke test")
    start = time.perf_counter()
    data = ensure_toyworld(args.data / f"toyworld-{args.images}", images=args.images, seed=0,
                           progress=False)
    print(f"toy world: {args.images} images ({time.perf_counter() - start:.0f} s to find or generate)")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), {os.cpu_count()} CPU cores, {args.workers} data-loader "
          f"workers, batch size {args.batch_size}, torch {torch.__version__}")

    floor_seconds, n = floor(data, args.device, args.batch_size, args.workers)
    print(f"floor (decode + forward): {floor_seconds:.1f} s, {n / floor_seconds:.0f} img/s")
    r = dissection(data, args.data / f"gpu-run-{args.images}", args.device, args.batch_size, args.workers)
    t = r["timings"]
    pass1, pass2 = t.get("activations_seconds", 0.0), t.get("tally_seconds", 0.0)
    fixed = r["seconds"] - pass1 - pass2
    print(f"dissection: {r['seconds']:.1f} s = pass 1 {pass1:.1f} s ({n / pass1:.0f} img/s) + "
          f"pass 2 {pass2:.1f} s ({n / max(pass2, 1e-9):.0f} img/s, from the {r['pass2']}) + "
          f"{fixed:.1f} s outside the passes; {r['detectors']} detectors")
    print(f"ratio to the floor: {r['seconds'] / floor_seconds:.2f} (passes only: "
          f"{(pass1 + pass2) / floor_seconds:.2f}); peak GPU memory {r['gpu_mb']:.0f} MB")
    estimate = fixed + (pass1 + pass2) / n * BRODEN_IMAGES
    verdict = "met" if estimate < GOAL_SECONDS else "not met"
    print(f"estimate for {BRODEN_IMAGES:,} images (Broden): {estimate:.0f} s "
          f"(goal < {GOAL_SECONDS:.0f} s on one H100/H200-class GPU: {verdict}; "
          f"NetDissect-Lite about 20 minutes)")


if __name__ == "__main__":
    main()
