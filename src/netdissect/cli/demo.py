"""`netdissect demo`, `train-demo`, `train-segmenter`, `finetune-segmenter` and `train-gan`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from netdissect.cli.options import add_run_options, add_settings_options, settings_from_args

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="dissect the demo CNN and EfficientNet-Lite0 on the toy world",
                       description="The main job on the embedded default: creates the toy world "
                                   "if absent, dissects the scene-trained demo CNN and "
                                   "EfficientNet-Lite0, writes results and a report, and prints "
                                   "a summary.")
    p.add_argument("--out", default="results/demo", help="result folder (default results/demo)")
    p.add_argument("--dataset", "--data", dest="dataset", default="data/toyworld",
                   help="toy world folder (created if absent; default data/toyworld)")
    p.add_argument("--images", type=int, default=2000, help="toy world size (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="toy world seed (default 0)")
    add_settings_options(p, only=["batch_size", "workers"])
    add_run_options(p)
    p.set_defaults(func=run_demo_command)

    p = sub.add_parser("train-demo", help="train the demo CNN on the toy world's scene labels",
                       description="Train the demo CNN on the scene labels of a toy world (a "
                                   "Broden-format folder), generated if missing.")
    p.add_argument("--dataset", "--data", dest="dataset", default="data/toyworld",
                   help="toy world folder (generated if missing)")
    p.add_argument("--images", type=int, default=2000, help="toy world size")
    p.add_argument("--world-seed", type=int, default=0, help="toy world seed")
    p.add_argument("--out", default="demo_cnn.pt", help="weights file to write (metadata next to it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_train_demo)

    p = sub.add_parser("train-segmenter",
                       help="train the toy-world segmenter (objects, parts, materials)",
                       description="Train the toy world's segmenter, the default of `netdissect "
                                   "segment`, on images rendered in memory from a toy world, "
                                   "and measure its IoU on a fresh one.")
    p.add_argument("--out", default="toyworld_segmenter.pt",
                   help="weights file to write (metadata next to it, .json)")
    p.add_argument("--images", type=int, default=4000, help="training images to render")
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation, order)")
    p.add_argument("--world-seed", type=int, default=1, help="toy world seed of the training "
                   "images (the demo's world is 0)")
    p.add_argument("--eval-seed", type=int, default=2, help="toy world seed of the evaluation "
                   "images (must differ from --world-seed)")
    p.add_argument("--eval-images", type=int, default=400,
                   help="evaluation images (0: no evaluation)")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_train_segmenter)

    p = sub.add_parser("finetune-segmenter",
                       help="fine-tune the toy-world segmenter for small images (toyworld64)",
                       description="Fine-tune the toy world's segmenter on images rendered in "
                                   "memory and area-averaged to --size (the toy GAN draws "
                                   "64x64 images, which the full-size segmenter labels poorly), "
                                   "and measure its IoU on a fresh world at that size.")
    p.add_argument("--out", default="toyworld_segmenter64.pt",
                   help="weights file to write (metadata next to it, .json)")
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--start-from", help="segmenter weights to start from (default: the shipped "
                                        "toyworld segmenter)")
    p.add_argument("--images", type=int, default=2000, help="training images to render")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world-seed", type=int, default=1)
    p.add_argument("--eval-seed", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=400,
                   help="evaluation images (0: no evaluation)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_finetune_segmenter)

    p = sub.add_parser("train-gan", help="train the toy world's GAN (zoo generator toyworld_gan)",
                       description="Train the small DCGAN of the zoo generator toyworld_gan on "
                                   "64x64 scene images rendered in memory from a toy world "
                                   "(seeded, deterministic on one machine for a given number "
                                   "of threads).")
    p.add_argument("--out", default="toyworld_gan.pt",
                   help="generator weights file to write (metadata next to it, .json)")
    p.add_argument("--images", type=int, default=2000,
                   help="toy-world images to render (texture images are left out)")
    p.add_argument("--steps", type=int, default=4000, help="training steps (batches)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batches, latents)")
    p.add_argument("--world-seed", type=int, default=1, help="toy world seed of the training "
                   "images (the demo's world is 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_train_gan)


def run_demo_command(args: argparse.Namespace) -> int:
    from netdissect.cli.dissect import print_summary
    from netdissect.demo import run_demo

    settings = settings_from_args(args)
    results = run_demo(out=args.out, data=args.dataset, images=args.images, seed=args.seed,
                       batch_size=settings.batch_size, workers=settings.workers,
                       device=args.device, progress=not args.quiet)
    print_summary(list(results.values()), Path(args.out))
    return 0


def run_train_demo(args: argparse.Namespace) -> int:
    from netdissect.data.toyworld import ensure_toyworld
    from netdissect.train_demo import train_demo

    world = ensure_toyworld(args.dataset, images=args.images, seed=args.world_seed,
                            progress=not args.quiet)
    meta = train_demo(world, args.out, seed=args.seed, epochs=args.epochs,
                      threads=args.threads, progress=not args.quiet)
    print(json.dumps({k: meta[k] for k in ("train_accuracy", "val_accuracy")}
                     | {"seconds": meta["training"]["seconds"], "weights": str(args.out)}))
    return 0


def run_train_segmenter(args: argparse.Namespace) -> int:
    from netdissect.data.segment.train import train_segmenter

    meta = train_segmenter(args.out, images=args.images, seed=args.seed,
                           world_seed=args.world_seed, eval_seed=args.eval_seed,
                           eval_images=args.eval_images, epochs=args.epochs,
                           threads=args.threads, progress=not args.quiet)
    evaluation = meta["evaluation"] or {}
    print(json.dumps({"miou": evaluation.get("miou"),
                      "texture_no_label_accuracy": evaluation.get("texture_no_label_accuracy"),
                      "seconds": meta["training"]["seconds"], "weights": str(args.out)}))
    return 0


def run_finetune_segmenter(args: argparse.Namespace) -> int:
    from netdissect.data.segment.train import finetune_segmenter

    meta = finetune_segmenter(args.out, size=args.size, images=args.images, seed=args.seed,
                              world_seed=args.world_seed, eval_seed=args.eval_seed,
                              eval_images=args.eval_images, epochs=args.epochs,
                              start_from=args.start_from, threads=args.threads,
                              progress=not args.quiet)
    evaluation = meta["evaluation"] or {}
    print(json.dumps({"miou": evaluation.get("miou"), "seconds": meta["training"]["seconds"],
                      "weights": str(args.out)}))
    return 0


def run_train_gan(args: argparse.Namespace) -> int:
    from netdissect.train_gan import train_gan

    meta = train_gan(args.out, images=args.images, steps=args.steps, seed=args.seed,
                     world_seed=args.world_seed, batch_size=args.batch_size,
                     threads=args.threads, progress=not args.quiet)
    last = meta["training"]["history"][-1]
    print(json.dumps({"d_loss": last["d_loss"], "g_loss": last["g_loss"],
                      "seconds": meta["training"]["seconds"], "weights": str(args.out)}))
    return 0
