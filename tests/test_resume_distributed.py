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

    class Net(nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
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
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, **kw)
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


def test_two_process_gloo_run_is_bit_identical(broden_dir, reference, env, tmp_path):
    out = tmp_path / "out"
    done = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                *command(broden_dir, out)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_identical(reference, out)
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["dataset"]["images_processed"] == 60


def wait_for_state(out, phase, done_at_least, process, timeout=120):
    state_file = out / ".netdissect-state" / "state-rank0-of-1.pt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if state_file.is_file():
            try:
                state = torch.load(state_file, weights_only=True)
            except Exception:  # replaced while reading
                continue
            if state["phase"] == phase and state["done"] >= done_at_least:
                return state
        time.sleep(0.05)
    raise AssertionError("no saved state appeared")


@pytest.mark.parametrize("phase, sig", [(1, signal.SIGKILL), (2, signal.SIGTERM)])
def test_killed_run_resumes_bit_identical(broden_dir, reference, env, tmp_path, phase, sig):
    out = tmp_path / "out"
    slow = {**env, "SLOW_MODEL": "0.05"}
    args = command(broden_dir, out, "resumemodel:build", "conv1,conv2", "--checkpoint-seconds", "0",
                   "--cache-limit-gb", "0" if phase == 2 else "8")
    process = subprocess.Popen([sys.executable, *args], env=slow, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for_state(out, phase, 3, process)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    if sig == signal.SIGTERM:
        assert process.returncode == 143 and "run the same command again to resume" in err
    assert not (out / "conv1" / "tally.csv").exists()
    # A different model refuses the saved state and says what changed.
    refused = run(command(broden_dir, out, "resumemodel:other", "conv1,conv2"), env)
    assert refused.returncode == 2 and "weights changed" in refused.stderr and "--restart" in refused.stderr
    done = run(args, env)
    assert done.returncode == 0, done.stderr
    assert not (out / ".netdissect-state" / "state-rank0-of-1.pt").exists()
    assert_identical(reference, out)


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
