"""The allocator settings (netdissect/allocator.py): freed feature maps stay in the process."""
import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="the settings are glibc's")

# Allocate and free a 64 MB tensor 20 times, counting the minor page faults it costs.  The
# heap settles first: torch's aligned allocations leave the first freed blocks too small for
# the next request until a few of them have merged.
CHILD = """
import json, resource, sys, torch
from netdissect.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
for _ in range(10):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _child(mode: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                          check=True, env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096  # one 64 MB tensor
    default, kept = _child("off"), _child("on")
    assert kept["applied"] is True
    assert default["faults"] >= 20 * pages * 0.9  # glibc maps and unmaps it every time
    assert kept["faults"] < 2 * pages  # served from the heap


def test_the_users_own_malloc_settings_are_left_alone():
    assert _child("on", MALLOC_MMAP_THRESHOLD_="131072")["applied"] is False
    assert _child("on", GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")["applied"] is False
