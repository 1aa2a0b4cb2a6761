"""Write the reference outputs that tests/test_golden.py compares against.

They were written by netdissect 752bbe6 (before the redesign of issue 11), so the test shows
that the files the method decides (tally.csv, units.json, summary.json's counts) stay
byte-identical.  Run it again only on purpose, when a change of the numbers is intended:

    python tests/golden/make_golden.py
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# The configurations: name -> keyword options of netdissect.dissect.
CONFIGS = {
    "default": {},
    "lite-q02-subset": {"definition": "lite", "quantile": 0.02, "iou_threshold": 0.05,
                        "categories": ["object", "material", "color", "texture"], "top_k": 4},
}
LAYERS = ["conv1", "conv2"]
COUNT_KEYS = ("units", "detectors", "distinct_labels", "unique_detectors",
              "unique_detectors_total", "iou_threshold", "definition")


def summary_counts(path: Path) -> dict:
    summary = json.loads(path.read_text())
    return {k: summary[k] for k in COUNT_KEYS}


def main() -> None:
    import netdissect
    from conftest import TinyNet, make_broden

    with tempfile.TemporaryDirectory() as tmp:
        data = make_broden(Path(tmp) / "broden", images=60)
        for name, options in CONFIGS.items():
            out = Path(tmp) / name
            netdissect.dissect(TinyNet(), data, LAYERS, out=out, workers=0, progress=False,
                               report=False, **options)
            for layer in LAYERS:
                target = HERE / name / layer
                target.mkdir(parents=True, exist_ok=True)
                for file in ("tally.csv", "units.json"):
                    shutil.copyfile(out / layer / file, target / file)
                (target / "counts.json").write_text(
                    json.dumps(summary_counts(out / layer / "summary.json"), indent=1) + "\n")
    print(f"written under {HERE}")


if __name__ == "__main__":
    main()
