"""Distributed runs, resumed runs and reused layers give results bit-identical to a plain run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

MODEL_SOURCE = textwrap.dedent("""
    import os, time
    import torch
    from torch import nn

    _forwards = 0

    class Net(nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            # FORWARD_MARKERS: each call writes FORWARD_MARKERS/forward-NNNN, and call number
            # BLOCK_AT_FORWARD waits there until FORWARD_MARKERS/release exists.
            markers = os.environ.get("FORWARD_MARKERS")
            if markers:
                global _forwards
                _forwards += 1
                open(os.path.join(markers, f"forward-{_forwards:04d}"), "w").close()
                if _forwards == int(os.environ.get("BLOCK_AT_FORWARD", "0")):
                    while not os.path.exists(os.path.join(markers, "release")):
                        time.sleep(0.01)
            time.sleep(float(os.environ.get("SLOW_MODEL", "0")))
            return self.conv2(self.conv1(x))

    def build():
        return Net(0)

    def other():
        return Net(1)
""")


@pytest.fixture
def env(tmp_path):
    (tmp_path / "resumemodel.py").write_text(MODEL_SOURCE)
    return {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def command(data, out, model="resumemodel:build", layers="conv1,conv2", *extra):
    return ["-m", "netdissect", "dissect", "--dataset", str(data), "--model", model, "--layers", layers,
            "--quantile", "0.02", "--batch-size", "4", "--workers", "0", "--no-report", "--quiet",
            "--out", str(out), *extra]


def run(args, env, **kw):
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=240, **kw)
    return done


def assert_identical(a, b, layers=("conv1", "conv2")):
    for layer in layers:
        assert (a / layer / "tally.csv").read_bytes() == (b / layer / "tally.csv").read_bytes()
        assert (a / layer / "units.json").read_bytes() == (b / layer / "units.json").read_bytes()
        sa = torch.load(a / layer / "stats.pt", weights_only=True)
        sb = torch.load(b / layer / "stats.pt", weights_only=True)
        for key, value in sa.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, sb[key]), (layer, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, broden_dir):
    folder = tmp_path_factory.mktemp("reference")
    (folder / "resumemodel.py").write_text(MODEL_SOURCE)
    env = {**os.environ, "PYTHONPATH": str(folder) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = run(command(broden_dir, folder / "out"), env)
    assert done.returncode == 0, done.stderr
    return folder / "out"


@pytest.mark.timeout(180)
def test_two_process_gloo_run_is_bit_identical(broden_dir, reference, env, tmp_path):
    out = tmp_path / "out"
    done = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                *command(broden_dir, out)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_identical(reference, out)
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["dataset"]["images_processed"] == 60


STATE = (".netdissect-state", "state-rank0-of-1.pt")


def wait_until_blocked(out, markers, call, process, timeout=120):
    """Until the model is inside forward call `call` (where it waits for markers/release) and
    the run's state file exists. Both stay so while the run waits: no window to catch."""
    deadline = time.monotonic() + timeout
    while not ((markers / f"forward-{call:04d}").exists() and out.joinpath(*STATE).is_file()):
        assert process.poll() is None, f"the run ended before forward call {call}: {process.communicate()}"
        assert time.monotonic() < deadline, f"forward call {call} not reached in {timeout} s"
        time.sleep(0.02)


# Forward calls of a run of 60 images in batches of 4 (15 batches), the state saved after every
# batch (--checkpoint-seconds 0):
# - with the activation cache (a slow model, --cache-limit-gb 8): call 1 is batch 1, call 2 times
#   the model once more for the cache decision, calls 3-16 are batches 2-15 of pass 1, and pass 2
#   reads the cache. Call 5 is batch 4 of pass 1: the state holds 3 batches of pass 1.
# - without it (--cache-limit-gb 0): calls 1-15 are pass 1, calls 16-30 pass 2 (the model runs
#   again). Call 19 is batch 4 of pass 2: the state holds 3 batches of pass 2.
@pytest.mark.timeout(180)
@pytest.mark.parametrize("phase, sig, block_at", [(1, signal.SIGKILL, 5), (2, signal.SIGTERM, 19)],
                         ids=["sigkill-pass1", "sigterm-pass2"])
def test_killed_run_resumes_bit_identical(broden_dir, reference, env, tmp_path, phase, sig, block_at):
    out, markers = tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    blocked = {**env, "FORWARD_MARKERS": str(markers), "BLOCK_AT_FORWARD": str(block_at),
               "SLOW_MODEL": "0.05" if phase == 1 else "0"}
    args = command(broden_dir, out, "resumemodel:build", "conv1,conv2", "--checkpoint-seconds", "0",
                   "--cache-limit-gb", "0" if phase == 2 else "8")
    process = subprocess.Popen([sys.executable, *args], env=blocked, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until_blocked(out, markers, block_at, process)
        process.send_signal(sig)
        if sig == signal.SIGTERM:
            (markers / "release").touch()  # SIGTERM stops the run after the batch in hand
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    state = torch.load(out.joinpath(*STATE), weights_only=True)
    if sig == signal.SIGTERM:
        assert process.returncode == 143 and "run the same command again to resume" in err
        assert state["phase"] == 2 and state["done"] == 4 and state["cache_sizes"] is None
    else:
        assert process.returncode == -signal.SIGKILL
        assert state["phase"] == 1 and state["done"] == 3 and state["cache_sizes"] is not None
    assert not (out / "conv1" / "tally.csv").exists()
    # A different model refuses the saved state and says what changed.
    refused = run(command(broden_dir, out, "resumemodel:other", "conv1,conv2"), env)
    assert refused.returncode == 2 and "weights changed" in refused.stderr and "--restart" in refused.stderr
    done = run(args, env)
    assert done.returncode == 0, done.stderr
    assert not out.joinpath(*STATE).exists()
    assert_identical(reference, out)


@pytest.mark.timeout(180)
def test_restart_discards_state_and_added_layer_reuses_finished_one(broden_dir, reference, env, tmp_path):
    out = tmp_path / "out"
    assert run(command(broden_dir, out, "resumemodel:build", "conv1"), env).returncode == 0
    first = (out / "conv1" / "summary.json").read_text()
    done = run(command(broden_dir, out, "resumemodel:build", "conv1,conv2"), env)
    assert done.returncode == 0, done.stderr
    assert (out / "conv1" / "summary.json").read_text() == first  # reused, not recomputed
    assert_identical(reference, out)
    # --restart recomputes everything (new timings), with the same numbers.
    assert run(command(broden_dir, out, "resumemodel:build", "conv1,conv2", "--restart"), env).returncode == 0
    assert (out / "conv1" / "summary.json").read_text() != first
    assert_identical(reference, out)
