"""Distributed and checkpoint benchmark on the engine benchmark's data (ResNet-18 layer4).

Times the same `netdissect dissect` command run as one process, as two torchrun processes
(gloo on CPU; NCCL with --device cuda on a machine with two GPUs), and as one process saving
its state after every batch (the worst case of the checkpoint overhead; the default saves
every 300 s).  Prints the speed-up and the overhead.

    python benchmarks/bench_distributed.py [--images 1000] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    from netdissect.data.toyworld import ensure_toyworld

    data = ensure_toyworld(args.data / f"toyworld-{args.images}", images=args.images, seed=0)
    out = args.data / "distributed"
    threads = os.cpu_count() or 1
    dissect = ["-m", "netdissect", "dissect", "--dataset", str(data), "--model", "resnet18",
               "--weights", "random", "--layers", "layer4", "--device", args.device,
               "--batch-size", str(args.batch_size), "--no-report", "--quiet", "--restart"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    one = timed([*dissect, "--workers", "2", "--out", str(out / "one")], env)
    env2 = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // 2))}
    two = timed(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *dissect,
                 "--workers", "1", "--out", str(out / "two")], env2)
    saving = timed([*dissect, "--workers", "2", "--checkpoint-seconds", "0", "--out", str(out / "saving")], env)
    same = (out / "one" / "layer4" / "tally.csv").read_bytes() == (out / "two" / "layer4" / "tally.csv").read_bytes()
    print(f"{args.images} images, ResNet-18 layer4, device {args.device}, {threads} CPU cores")
    print(f"  1 process            : {one:7.1f} s")
    print(f"  2 processes (torchrun): {two:7.1f} s   speed-up {one / two:.2f}x   identical tally.csv: {same}")
    print(f"  1 process, state saved after every batch: {saving:7.1f} s   overhead {100 * (saving / one - 1):+.1f}%")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
