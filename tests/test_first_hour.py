"""What a new user meets in the first hour (issue 15, item 4).

`dissect` and `explain` without `--out` write to results/<model>-<dataset> in the current
directory and say so before the run starts; a run that takes up the saved state of an
interrupted one says where it resumes ("resuming from saved state: pass 2, 20 of 60 images"),
unless its progress is off, and records it on its Checkpoint.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from netdissect.cli import main
from netdissect.cli.options import default_out
from netdissect.engine.checkpoint import Checkpoint

TINY = ["--model", "conftest:tiny_net", "--layers", "conv1", "--workers", "0", "--quiet"]
# Save after every batch, never cache activations (pass 2 runs the model again): 60 images in
# batches of 20 are 3 forward calls per pass.
SAVING = ["--checkpoint-seconds", "0", "--cache-limit-gb", "0", "--batch-size", "20"]


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty current directory, with `failing:build` (TinyNet failing at its Nth forward
    call, N from FAIL_AT) importable."""
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        import os
        from conftest import FailingNet

        def build():
            return FailingNet(fail_at=int(os.environ["FAIL_AT"]))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("model, dataset, expected", [
    ("resnet18", "/data/broden1_224", "resnet18-broden1_224"),
    ("resnet18", "/data/broden1_224/", "resnet18-broden1_224"),
    ("timm:vit_small_patch16_224.augreg_in21k", "broden", "timm_vit_small_patch16_224.augreg_in21k-broden"),
    ("my.models:build", "my data", "my.models_build-my_data"),
    ("../x:y", "/", "x_y-dataset"),
])
def test_the_default_result_folder_is_named_after_model_and_dataset(model, dataset, expected):
    assert default_out(model, dataset) == Path("results") / expected


def test_dissect_without_out_writes_to_results_model_dataset(broden_dir, user_dir, capsys):
    assert main(["dissect", "--dataset", str(broden_dir), *TINY]) == 0
    captured = capsys.readouterr()
    out = Path("results") / f"conftest_tiny_net-{broden_dir.name}"
    assert f"results will be written to {out}\n" in captured.err
    assert str((user_dir / out).resolve()) in captured.out
    for name in ("tally.csv", "units.json", "summary.json", "stats.pt"):
        assert (user_dir / out / "conv1" / name).is_file()
    assert (user_dir / out / "index.html").is_file()


def test_explain_without_out_writes_to_results_model_dataset(broden_dir, user_dir, capsys):
    assert main(["explain", "--dataset", str(broden_dir), *TINY, "--length", "2", "--no-report"]) == 0
    captured = capsys.readouterr()
    out = Path("results") / f"conftest_tiny_net-{broden_dir.name}"
    assert f"results will be written to {out}\n" in captured.err
    assert (user_dir / out / "conv1" / "explanations.csv").is_file()


def test_a_given_out_is_used_as_it_is_and_not_announced(broden_dir, user_dir, capsys):
    assert main(["dissect", "--dataset", str(broden_dir), *TINY, "--no-report", "--out", "mine"]) == 0
    assert "results will be written" not in capsys.readouterr().err
    assert (user_dir / "mine" / "conv1" / "tally.csv").is_file()
    assert not (user_dir / "results").exists()


def interrupt(dataset: Path, fail_at: int, monkeypatch) -> None:
    """A run of `failing:build` into OUT that fails at forward call `fail_at`."""
    monkeypatch.setenv("FAIL_AT", str(fail_at))
    with pytest.raises(RuntimeError, match="on purpose"):
        main(["dissect", "--dataset", str(dataset), "--model", "failing:build", "--layers", "conv1",
              "--workers", "0", "--quiet", "--no-report", "--out", "out", *SAVING])
    assert Path("out/.netdissect-state/state-rank0-of-1.pt").is_file()


@pytest.mark.parametrize("fail_at, where", [(2, "pass 1, 20 of 60 images"),
                                            (5, "pass 2, 20 of 60 images")])
def test_a_resumed_run_says_where_it_resumes(broden_dir, user_dir, capsys, monkeypatch,
                                            fail_at, where):
    interrupt(broden_dir, fail_at, monkeypatch)
    capsys.readouterr()
    command = ["dissect", "--dataset", str(broden_dir), "--model", "conftest:tiny_net",
               "--layers", "conv1", "--workers", "0", "--no-report", "--out", "out", *SAVING]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert err.count("resuming from saved state") == 1
    assert f"resuming from saved state: {where}\n" in err
    assert not Path("out/.netdissect-state").exists()
    # Run again: the layer is reused, no saved state is left, nothing is said about resuming.
    assert main(command) == 0
    assert "resuming" not in capsys.readouterr().err


def test_a_quiet_resume_prints_nothing_but_records_where(broden_dir, user_dir, capsys, monkeypatch):
    interrupt(broden_dir, 5, monkeypatch)
    state_file = Path("out/.netdissect-state/state-rank0-of-1.pt")
    key = torch.load(state_file, map_location="cpu", weights_only=True)["key"]
    checkpoint = Checkpoint(Path("out"), 0, 1, key, every_seconds=0.0)
    line = checkpoint.announce_resume(checkpoint.load(), 60, show=False)
    assert line == "resuming from saved state: pass 2, 20 of 60 images"
    assert checkpoint.resumed == {"pass": 2, "images_done": 20, "images": 60}
    capsys.readouterr()
    assert main(["dissect", "--dataset", str(broden_dir), *TINY, "--no-report", "--out", "out",
                 *SAVING]) == 0
    assert "resuming" not in capsys.readouterr().err
