"""netdissect: Network Dissection of deep vision networks.

The public API:

    import netdissect
    result = netdissect.dissect(model, "broden1_224", ["layer4"], out="results")
    result.frame("layer4")          # a pandas DataFrame, one row per unit

`dissect` runs the passes over a Broden-format dataset; `Dissection` holds the result (also
`Dissection.load(OUT)` from a result folder); `load_broden` reads and checks a dataset.
"""
__version__ = "0.1.0"

from netdissect.data.broden import Broden, BrodenError, load_broden
from netdissect.dissect import DissectError, dissect
from netdissect.results import Dissection, LayerResult

__all__ = ["__version__", "dissect", "Dissection", "LayerResult", "load_broden", "Broden",
           "BrodenError", "DissectError"]
