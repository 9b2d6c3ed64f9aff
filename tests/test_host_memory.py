"""`release_freed_memory`: freed tensors go back to the system instead of staying in the process's heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
import torch
from rasft_trl.host_memory import release_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "fixed":
    assert release_freed_memory()
# a freed 16 MB block raises glibc's dynamic mmap threshold to 16 MB: smaller tensors then come from the heap
big = torch.ones(4 * 2**20)
del big
base = rss_mb()
tensors = [torch.ones(2 * 2**20) for _ in range(48)]  # 48 x 8 MB
keep = tensors[-1]  # the last one stays alive, at the top of the heap
del tensors
print(round(rss_mb() - base))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_freed_tensors_leave_the_resident_set():
    def retained(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    dynamic, fixed = retained("dynamic"), retained("fixed")
    assert dynamic > 300  # glibc's default: the heap keeps the 47 freed tensors (376 MB)
    assert fixed < 40  # fixed threshold: each was mapped on its own and unmapped when freed
