"""Mergeable statistics of the dissection passes.

Each statistic has the same small interface: `update(...)` with one batch, `merge(other)`,
`state_dict()` / `load_state_dict()`.  Counts are int64 and order statistics exact, so any
split of the data (batches, workers, processes, resumed runs) gives bit-identical results.
"""
from netdissect.stats.quantile import TopQuantile, quantile_buffer_size
from netdissect.stats.tally import IoUTally
from netdissect.stats.topk import TopImages

__all__ = ["TopQuantile", "quantile_buffer_size", "IoUTally", "TopImages"]
