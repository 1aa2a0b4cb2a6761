"""Mergeable statistics of the dissection passes (docs/method.md sections 4-8).

Each has the interface of `base.Stat`: `update(...)` with one batch, `merge(other)`,
`state_dict()` / `load_state_dict()`.  Counts are int64 and order statistics exact, so any
split of the data (batches, workers, processes, resumed runs) gives bit-identical results;
`distributed.merge_across_ranks` merges the shares of torchrun processes.

    quantile.TopQuantile   exact per-unit top quantile, the threshold T_k
    upsampled_quantile.UpsampledQuantile   the same over maps upsampled to the label size (PNAS)
    topk.TopImages         per-unit top images by the maximum activation
    topmaps.TopMaps        the raw maps of those top images
    tally.IoUTally         the int64 counts I, A (every definition), G
"""
from netdissect.stats.base import CombinedStat, Stat
from netdissect.stats.quantile import TopQuantile, quantile_buffer_size
from netdissect.stats.tally import IoUTally
from netdissect.stats.topk import TopImages
from netdissect.stats.topmaps import TopMaps
from netdissect.stats.upsampled_quantile import UpsampledQuantile

__all__ = ["Stat", "CombinedStat", "TopQuantile", "quantile_buffer_size", "IoUTally", "TopImages", "TopMaps",
           "UpsampledQuantile"]
