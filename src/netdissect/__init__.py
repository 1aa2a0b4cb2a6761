"""netdissect: Network Dissection of deep vision networks.

    import netdissect
    probe = netdissect.build_model("resnet18", weights="resnet18_places365.pth.tar")
    result = netdissect.dissect(probe, "broden1_224", out="results")
    result.frame("layer4")          # a pandas DataFrame, one row per unit

`dissect` runs the passes over a Broden-format dataset and writes the results and report;
`explain` finds each unit's best formula of concepts (compositional explanations);
`Dissection` holds a result (also `Dissection.load(OUT)`); `Probe` is a model with the layers
to read and its preprocessing, `build_model` makes one from a zoo name; `load_broden` reads
and checks a dataset.  Names are imported on first use, so `import netdissect` (and the
command line's --help) stay fast.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "dissect", "explain", "Dissection", "LayerResult", "Probe", "Preprocess",
           "Settings", "build_model", "load_broden", "Broden", "segment", "NetDissectError",
           "BrodenError", "DissectError"]

_WHERE = {
    "dissect": "netdissect.api", "explain": "netdissect.compositional.run", "Dissection": "netdissect.results",
    "LayerResult": "netdissect.results", "Probe": "netdissect.models.probe",
    "Preprocess": "netdissect.models.preprocess", "Settings": "netdissect.engine.settings",
    "build_model": "netdissect.models.zoo", "load_broden": "netdissect.data.broden",
    "Broden": "netdissect.data.broden", "segment": "netdissect.data.segment",
    "NetDissectError": "netdissect.errors",
    "BrodenError": "netdissect.errors", "DissectError": "netdissect.errors",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'netdissect' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    if name in ("dissect", "Dissection"):
        _show_dissections_in_notebooks()
    globals()[name] = value
    return value


def _show_dissections_in_notebooks() -> None:
    """A Dissection displays as the report's compact summary (results.py imports no report)."""
    from netdissect.results import Dissection

    Dissection.html_view = staticmethod(_notebook_summary)


def _notebook_summary(dissection) -> str:
    from netdissect.report.notebook import dissection_html

    return dissection_html(dissection)
