"""The training loop the embedded models share (the demo CNN, the toy-world segmenter).

    history = train_epochs(model, count, epochs, batch_size, loss_of, optimizer, schedule,
                           generator, desc="train demo CNN", progress=True)

Each epoch draws a seeded order of the `count` training examples and steps the optimizer and
the schedule once per batch of `batch_size`; `loss_of(indices)` returns the batch's loss (it
may draw from the same generator, for crops and flips).  Seeded and deterministic on one
machine for a given number of threads.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["train_epochs", "adamw_one_cycle"]


def adamw_one_cycle(model: torch.nn.Module, lr: float, epochs: int, count: int, batch_size: int,
                    warmup: float):
    """AdamW (weight decay 1e-4) and a one-cycle schedule that peaks at `lr` after the `warmup`
    share of the steps `train_epochs` makes (`epochs` of `count` examples in batches)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-count // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=warmup)
    return optimizer, schedule


def train_epochs(model: torch.nn.Module, count: int, epochs: int, batch_size: int,
                 loss_of: Callable[[torch.Tensor], torch.Tensor], optimizer, schedule,
                 generator: torch.Generator, desc: str, progress: bool = True) -> list[float]:
    """Train for `epochs`; returns the mean loss of each epoch (rounded to 4 places)."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=epochs * -(-count // batch_size), desc=desc, unit="batch")
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(count, generator=generator)
        total, seen = 0.0, 0
        for b in range(0, count, batch_size):
            idx = order[b:b + batch_size]
            loss = loss_of(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.3f}")
        history.append(round(total / seen, 4))
    if bar is not None:
        bar.close()
    return history
