"""Why a demo CNN does or does not show axis alignment (issue 17): two measurements.

1. How much of the scene the toy world's concepts carry: a logistic regression on each
   image's ground-truth label fractions (colours, materials, objects, ...), trained on the
   train split, its accuracy on the val split.  When materials alone classify the scenes as
   well as the CNN does, the CNN need not grow object detectors.
2. How many directions the CNN's conv5 uses: on val images, the principal components that
   hold 90% of the variance of its units' activations (all positions), the participation
   ratio, unit pairs correlated above 0.8, and the share of positions where a unit is on.
   A layer collapsed onto a few class directions is as interpretable in any rotated basis.

    python benchmarks/check_demo_cnn.py [--dataset data/toyworld] [--weights FILE ...]

The shipped demo CNN and the same network with random weights are always measured; every
`--weights` file (written by `netdissect train-demo`, metadata beside it) is measured too.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

CATEGORY_SETS = [["color"], ["material"], ["color", "material"], ["object"], ["object", "part"],
                 ["color", "object", "part", "material"]]


def label_fractions(dataset: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per scene image and category: the fraction of its pixels under each label (N, L);
    scene class index (N,) and whether the image is in the train split (N,)."""
    from netdissect.data.broden import BrodenImages, collate_samples, load_broden

    broden = load_broden(dataset)
    scene_rows = broden.scene_images()
    rows = [i for i, _ in scene_rows]
    loader = torch.utils.data.DataLoader(BrodenImages(broden, images=False), batch_size=64,
                                         sampler=rows, num_workers=2, collate_fn=collate_samples)
    labels = len(broden.label_category)  # indexed by global label number
    category = np.asarray(broden.label_category)
    fractions = {c: [] for c in broden.categories}
    for batch in loader:
        planes = batch["planes"].long()  # (B, planes, h, w) global label numbers
        counts = torch.zeros(len(planes), labels)
        counts.scatter_add_(1, planes.flatten(1), torch.ones(planes.flatten(1).shape))
        counts = (counts / planes[0, 0].numel()).numpy()
        counts[:, 0] = 0
        for c, name in enumerate(broden.categories):
            fractions[name].append(counts * (category == c))
    fractions = {k: np.concatenate(v) for k, v in fractions.items()}
    scenes = sorted({name for _, name in scene_rows})
    y = np.array([scenes.index(name) for _, name in scene_rows])
    train = np.array([broden.rows[i].split == "train" for i in rows])
    return fractions, y, train


def probe_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Val accuracy of an L2-regularised logistic regression (LBFGS) fitted on train."""
    x = torch.tensor(x[:, x[train].std(0) > 0], dtype=torch.float32)
    x = (x - x[train].mean(0)) / x[train].std(0)
    y = torch.tensor(y)
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500)
    tr = torch.tensor(train)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[tr] @ w + b, y[tr]) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x[~tr] @ w + b).argmax(1) == y[~tr]).float().mean())


def conv5_dimension(model: torch.nn.Module, images: torch.Tensor) -> dict:
    from netdissect.models.trace import Trace
    from netdissect.train_demo import normalize

    with torch.no_grad(), Trace(model, "conv5") as trace:
        model(normalize(images))
    acts = trace.output.permute(0, 2, 3, 1).reshape(-1, trace.output.shape[1]).double()
    eigen = torch.linalg.eigvalsh(torch.cov(acts.T)).flip(0).clamp(min=0)
    std = acts.std(0)
    corr = torch.cov(acts.T) / (std[:, None] * std[None] + 1e-12)
    off = corr[~torch.eye(len(corr), dtype=torch.bool)].abs()
    return {"components_90": int((torch.cumsum(eigen, 0) / eigen.sum() < 0.9).sum()) + 1,
            "participation_ratio": round(float(eigen.sum() ** 2 / (eigen ** 2).sum()), 1),
            "pairs_corr_above_0.8": int((off > 0.8).sum()) // 2,
            "median_share_on": round(float((acts > 0).double().mean(0).median()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="data/toyworld")
    parser.add_argument("--weights", nargs="*", default=[], help="other train-demo weights files")
    parser.add_argument("--images", type=int, default=200, help="val images for conv5")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from netdissect.data.toyworld import ensure_toyworld
    from netdissect.models.demo_cnn import load_demo_cnn
    from netdissect.train_demo import load_scene_images

    world = ensure_toyworld(args.dataset)
    fractions, y, train = label_fractions(world)
    print("scene classification from ground-truth label fractions (val accuracy):")
    for cats in CATEGORY_SETS:
        x = np.concatenate([fractions[c] for c in cats], 1)
        print(f"  {'+'.join(cats):32s} {probe_accuracy(x, y, train):.3f}")
    models = {"shipped": load_demo_cnn(), "random weights": load_demo_cnn(pretrained=False)}
    models.update({path: load_demo_cnn(weights=path) for path in args.weights})
    images, _ = load_scene_images(world, models["shipped"].class_names, "val", limit=args.images)
    print(f"conv5 on {len(images)} val images:")
    for name, model in models.items():
        print(f"  {name:16s} {conv5_dimension(model.eval(), images)}")


if __name__ == "__main__":
    main()
