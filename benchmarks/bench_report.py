"""Report benchmark: the image strips and the whole HTML report of a 512-unit layer.

Dissects ResNet-18 layer4 (random weights, torch.manual_seed(0)) on a generated 1,000-image
toy world of 224x224 images (both reused from --out when already there), then times
`write_report` on it, writing the report to a scratch folder beside the results.  Prints units
per second for the strips alone (`write_strips`, the strip pass of each layer page) and the
total report time.  Unless --no-before, it also times the strip pass as it was before
issue 15 (`BeforeStrips` below, a copy of that code: one unit after another, float overlays,
progressive JPEGs), alternating with the report, so both figures come from the same machine
in the same minutes.

Measured on the 2-core development machine (best of 3, before and after alternating; two
runs with no other job running):

    before (issue 15): strips 14.1-15.9 s = 32-36 units/s, whole report about 15-17 s
    after:             strips  3.0-3.5 s = 145-168 units/s, whole report 4.1-4.7 s
                       strips 4.5-4.6x faster (run by run 4.3x-4.8x); CPU time 2.7-2.9x less

The two threads bring about 1.4x on that machine (its two CPUs slow each other down); with
another CPU-bound job running beside it they bring nothing, and the strips were then 3.2-3.3x
faster than before.

    python benchmarks/bench_report.py [--out benchmarks/out] [--repeat 3] [--no-before]
"""
from __future__ import annotations

import argparse
import io
import shutil
import time
from collections import OrderedDict
from pathlib import Path

IMAGES = 1000
LAYER = "layer4"


def dissection(out: Path):
    """The results of ResNet-18 layer4 on the toy world, dissected once and then reused."""
    import torch
    import torchvision

    import netdissect
    from netdissect.data.toyworld import ensure_toyworld

    data = ensure_toyworld(out / f"toyworld-{IMAGES}", images=IMAGES, seed=0)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return netdissect.dissect(model, data, [LAYER], out=out / f"report-resnet18-{IMAGES}",
                              report=False, progress=False)


class BeforeStrips:
    """The strips as drawn before issue 15, for comparison: per unit, the float overlay at
    image size, a float antialiased shrink, max-pool outline, progressive optimised JPEG."""

    def __init__(self, images_dir, image_names, height=112, cache_size=1024, quality=80):
        self.images_dir, self.image_names = Path(images_dir), image_names
        self.height, self.quality = height, quality
        self._cache, self._cache_size = OrderedDict(), cache_size

    def image(self, index):
        from netdissect.data.images import load_rgb
        from netdissect.files import confined

        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        pixels = load_rgb(confined(self.images_dir, self.image_names[index]))
        self._cache[index] = pixels
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return pixels

    def thumbnails(self, overlay, mask):
        import torch
        import torch.nn.functional as F

        h, w = overlay.shape[-2:]
        height = self.height
        width = max(1, round(w * height / h))
        small = F.interpolate(overlay, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        small_mask = F.interpolate(mask[:, None].float(), size=(height, width), mode="area")[:, 0] >= 0.5
        m = small_mask[:, None].float()
        edge = (small_mask & (-F.max_pool2d(-m, kernel_size=3, stride=1, padding=1)[:, 0] < 0.5))[:, None]
        colour = torch.tensor((255, 214, 0), dtype=small.dtype)[None, :, None, None]
        return torch.where(edge, colour, small).round().clamp(0, 255).to(torch.uint8)

    def strip(self, indices, maps, threshold, count=10):
        import torch
        import torch.nn.functional as F
        from PIL import Image

        keep = [i for i, index in enumerate(indices.tolist()[:count]) if index >= 0]
        if not keep:
            return None
        images = [self.image(int(indices[i])) for i in keep]
        pieces = [None] * len(keep)
        sizes = {}
        for j, img in enumerate(images):
            sizes.setdefault(tuple(img.shape[-2:]), []).append(j)
        for group in sizes.values():
            batch = torch.stack([images[j] for j in group])
            up = F.interpolate(maps[[keep[j] for j in group]][:, None].float(), size=batch.shape[-2:],
                               mode="bilinear", align_corners=False)[:, 0]
            mask = up > threshold
            overlay = batch.float() * (0.2 + 0.8 * mask[:, None].float())
            for j, thumb in zip(group, self.thumbnails(overlay, mask)):
                pieces[j] = thumb
        width = sum(p.shape[-1] for p in pieces) + 2 * (len(pieces) - 1)
        canvas = torch.full((3, self.height, width), 255, dtype=torch.uint8)
        x = 0
        for p in pieces:
            canvas[:, :, x:x + p.shape[-1]] = p
            x += p.shape[-1] + 2
        return Image.fromarray(canvas.permute(1, 2, 0).numpy())

    def encode(self, strip):
        buffer = io.BytesIO()
        strip.save(buffer, format="JPEG", quality=self.quality, optimize=True, progressive=True)
        return buffer.getvalue()


def before_strips(result, layer, folder: Path, top: int = 10) -> tuple[float, float]:
    """Seconds (wall clock, CPU) for the strip pass as it was before issue 15 (torch at one
    thread, as write_report sets it)."""
    import torch

    from netdissect.files import atomic_write_bytes
    from netdissect.report.writer import open_images

    current, _ = open_images(result, None)
    images = BeforeStrips(current.images_dir, current.image_names)
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for k in range(layer.units):
            strip = images.strip(layer.top_indices[k], layer.top_maps[k], float(layer.thresholds[k]), top)
            if strip is not None:
                atomic_write_bytes(folder / f"unit-{k:04d}.jpg", images.encode(strip))
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--repeat", type=int, default=3, help="timings per figure (before and after "
                        "alternate); the best is kept")
    parser.add_argument("--no-before", action="store_true", help="skip the pre-issue-15 strip pass")
    args = parser.parse_args()

    from netdissect.report import writer
    from netdissect.report.strips import default_workers
    from netdissect.report.writer import write_report

    result = dissection(args.out)
    layer = result[LAYER]
    scratch = args.out / f"report-bench-{IMAGES}"
    print(f"{LAYER}: {layer.units} units, {len(result.image_names)} images, "
          f"strip threads {default_workers()}")

    # The strip pass on its own: time write_layer's calls of write_strips.
    inner = writer.write_strips
    strip_times: list[tuple[float, float]] = []

    def timed(*a, **kw):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*a, **kw)
        finally:
            strip_times.append((time.perf_counter() - start, time.process_time() - cpu))

    # Before and after alternate, so that a change in the machine's load hits both alike.
    befores, totals, strips, before_cpu, after_cpu = [], [], [], [], []
    for _ in range(args.repeat):
        if not args.no_before:
            shutil.rmtree(scratch, ignore_errors=True)
            seconds, cpu = before_strips(result, layer, scratch / "strips")
            befores.append(seconds)
            before_cpu.append(cpu)
        shutil.rmtree(scratch, ignore_errors=True)
        strip_times.clear()
        writer.write_strips = timed
        try:
            start = time.perf_counter()
            write_report(result, out_dir=scratch, progress=False)
            totals.append(time.perf_counter() - start)
        finally:
            writer.write_strips = inner
        strips.append(sum(t for t, _ in strip_times))
        after_cpu.append(sum(c for _, c in strip_times))

    def runs(seconds: list[float]) -> str:
        return ", ".join(f"{s:.2f}" for s in seconds)

    folder = scratch / writer.layer_view(layer, result.image_names).folder / "strips"
    files = sorted(folder.glob("*.jpg"))
    size = sum(p.stat().st_size for p in files)
    best = min(strips)
    if befores:
        before = min(befores)
        print(f"before  strips  {before:6.2f} s  {layer.units / before:6.1f} units/s   (runs: {runs(befores)}; "
              f"CPU {runs(before_cpu)} s)")
    print(f"after   strips  {best:6.2f} s  {layer.units / best:6.1f} units/s   "
          f"(runs: {runs(strips)}; CPU {runs(after_cpu)} s, all threads; {len(files)} files, "
          f"{size / 2**20:.1f} MiB)")
    print(f"after   whole report {min(totals):6.2f} s   (runs: {runs(totals)})")
    if befores:
        ratios = sorted(b / a for b, a in zip(befores, strips))
        print(f"strips: {before / best:.1f}x faster (best against best; run by run "
              f"{', '.join(f'{r:.1f}x' for r in ratios)}); whole report about "
              f"{min(totals) - best + before:.1f} s before, {min(totals):.1f} s after; CPU time "
              f"{min(before_cpu) / min(after_cpu):.1f}x less")

if __name__ == "__main__":
    main()
