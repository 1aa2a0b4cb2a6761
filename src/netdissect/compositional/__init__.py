"""Compositional explanations: each unit's best logical formula of concepts (docs/method.md
section 13).

    formula.Formula        a formula as the beam search grows it: text, tree, length
    atoms.ConceptAtoms     the one pass over the data: pixels grouped by label set, per unit
    search.beam_search     the beam search over exact counts
    run.explain            the API (and `netdissect explain`): dissect, mask pass, search, save
"""
from netdissect.compositional.run import LayerExplanations, explain

__all__ = ["explain", "LayerExplanations"]
