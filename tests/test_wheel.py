"""The wheel installs and runs outside the repository (issue 15, item 4).

`python -m build --wheel` builds it from a copy of the sources; it must hold every file under
src/netdissect (the report templates, the demo CNN's weights and metadata).  It is installed
with `pip install --no-deps --no-index` into a fresh venv that sees the packages of the running
interpreter through a .pth file (a `--system-site-packages` venv would see the base
interpreter's, not those of the .venv this runs in), and its `netdissect` command dissects a
small generated dataset from a folder outside the repository.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from conftest import make_broden

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "netdissect"


def _build_missing() -> str | None:
    """Why the wheel cannot be built here, or None (the test extras provide both)."""
    try:
        import build  # noqa: F401
    except ImportError:
        return "the `build` package is not installed (pip install -e '.[test]')"
    try:
        major = int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        major = 0
    if major < 77:
        return "setuptools>=77 is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_build_missing() is not None, reason=str(_build_missing()))

MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
""")

CHECK_INSTALLED = textwrap.dedent("""
    import sys
    from pathlib import Path

    import netdissect
    from netdissect.models.zoo import build_model

    home = Path(sys.prefix)
    assert home in Path(netdissect.__file__).parents, netdissect.__file__
    probe = build_model("demo_cnn")  # the shipped weights and their metadata
    assert home in Path(probe.weights).parents, probe.weights
    print("installed", netdissect.__file__)
""")


def package_files() -> list[str]:
    """Every file of the package as the wheel names it: netdissect/<path>."""
    return sorted(f"netdissect/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def run(command: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (the build leaves build/ and *.egg-info there)."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "src" / "netdissect",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist",
         source], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("netdissect-*.whl")
    return wheel


def make_venv(root: Path, wheel: Path) -> Path:
    """A venv with the wheel installed, then the running interpreter's packages visible."""
    run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    # Installed before the outer packages are visible, so pip neither sees nor touches them.
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--no-cache-dir", wheel], cwd=root.parent)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=root.parent).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "outer_packages.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    return root


@pytest.mark.timeout(240)
def test_the_wheel_installs_and_dissects_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in package_files() if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)

    venv = make_venv(tmp_path / "venv", wheel)
    user = tmp_path / "user"  # outside the repository: nothing of src/ is importable
    (user / "models").mkdir(parents=True)
    (user / "models" / "tinymodel.py").write_text(MODEL_SOURCE)
    dataset = make_broden(user / "mydata", images=12)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(user / "models")
    netdissect = venv / "bin" / "netdissect"

    assert "usage: netdissect demo" in run([netdissect, "demo", "--help"], user, env).stdout
    assert "installed" in run([venv / "bin" / "python", "-c", CHECK_INSTALLED], user, env).stdout
    done = run([netdissect, "dissect", "--dataset", dataset, "--model", "tinymodel:build",
                "--layers", "0", "--workers", "0", "--batch-size", "6", "--quiet"], user, env)
    out = user / "results" / "tinymodel_build-mydata"
    assert "results will be written to results/tinymodel_build-mydata" in done.stderr
    for name in ("tally.csv", "units.json", "summary.json", "stats.pt"):
        assert (out / "0" / name).is_file(), name
    assert (out / "index.html").is_file()
