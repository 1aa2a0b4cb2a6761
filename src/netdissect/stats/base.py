"""The one interface every statistic shares, and `CombinedStat`, several of them as one.

    stat.update(...)            feed one batch (arguments differ by statistic)
    stat.merge(other)           fold in the same statistic of another share of the data
    stat.state_dict()           plain tensors and numbers, to save or to send to other ranks
    stat.load_state_dict(state) restore it (into a statistic built with the same shape)

Every statistic of netdissect is a sum of int64 counts or an exact order statistic, so
`merge` is exact: any split of the data (batches, processes, resumed runs) gives bit-identical
results.  The pattern follows baukit's runningstats (`Stat`, `CombinedStat`), with `merge`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Stat", "CombinedStat"]


@runtime_checkable
class Stat(Protocol):
    def update(self, *args, **kwargs) -> None: ...

    def merge(self, other) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class CombinedStat:
    """Named statistics kept together: `parts["quantile"]` or `combined.quantile`.

    `merge`, `state_dict` and `load_state_dict` apply to every part (the state is a dict of
    the parts' states by name); each part is updated on its own, since their batches differ.
    """

    def __init__(self, **parts: Stat):
        self.parts: dict[str, Stat] = dict(parts)

    def __getattr__(self, name: str):
        parts = self.__dict__.get("parts", {})
        if name in parts:
            return parts[name]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> Stat:
        return self.parts[name]

    def update(self, *args, **kwargs) -> None:
        raise TypeError(f"{type(self).__name__}: update each part on its own")

    def merge(self, other: "CombinedStat") -> None:
        for name, part in self.parts.items():
            part.merge(other.parts[name])

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = [name for name in self.parts if name not in state]
        if missing:
            raise ValueError(f"saved statistics lack {', '.join(missing)}")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
