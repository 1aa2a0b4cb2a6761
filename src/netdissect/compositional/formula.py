"""Logical formulas of concepts, as the beam search builds them (docs/method.md section 13).

A formula starts from one label and grows one step at a time: `F OR L`, `F AND L` or
`F AND NOT L`, where F is the formula so far and L a label.  It is stored as that sequence
(`first`, `steps`); its text is fully parenthesised (`((water OR river) AND NOT blue)`), its
tree nested lists (`["and", ["or", "water", "river"], ["not", "blue"]]`), and its length
counts the leaves plus one per NOT, as in the reference code of Mu & Andreas (2020).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Formula", "OPS", "OP_WORDS", "OP_LENGTH"]

# The three ways to extend a formula, in the order candidates are generated.
OPS = ("or", "and", "and not")
OP_WORDS = {"or": "OR", "and": "AND", "and not": "AND NOT"}
OP_LENGTH = {"or": 1, "and": 1, "and not": 2}  # the new leaf, plus 1 for a NOT


@dataclass(frozen=True)
class Formula:
    """`first` (a global label number), then `steps`: (op, label number) pairs."""

    first: int
    steps: tuple[tuple[str, int], ...] = ()

    def extend(self, op: str, label: int) -> "Formula":
        return Formula(self.first, self.steps + ((op, label),))

    @property
    def length(self) -> int:
        return 1 + sum(OP_LENGTH[op] for op, _ in self.steps)

    @property
    def leaves(self) -> int:
        return 1 + len(self.steps)

    def labels(self) -> list[int]:
        return [self.first] + [label for _, label in self.steps]

    def text(self, names: list[str]) -> str:
        text = names[self.first]
        for op, label in self.steps:
            text = f"({text} {OP_WORDS[op]} {names[label]})"
        return text

    def tree(self, names: list[str]):
        tree = names[self.first]
        for op, label in self.steps:
            leaf = ["not", names[label]] if op == "and not" else names[label]
            tree = ["or" if op == "or" else "and", tree, leaf]
        return tree

    def evaluate(self, member) -> torch.Tensor:
        """The formula's truth value, given `member(label)`: a boolean tensor saying where
        that label is present (any shape, the same for every label)."""
        value = member(self.first)
        for op, label in self.steps:
            leaf = member(label)
            if op == "or":
                value = value | leaf
            elif op == "and":
                value = value & leaf
            else:
                value = value & ~leaf
        return value
