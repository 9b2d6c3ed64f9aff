"""Run an untrusted Python program against trusted tests, in a separate, limited process.

Threat model
============

The programs come from a policy model during training (and from models under evaluation). We assume
they can be *wrong*, *destructive by accident* (`rm`-like code, fork loops, huge allocations, infinite
loops) and *reward-hacking* (exit early with status 0, redefine `AssertionError`, patch builtins,
`print` or `math.isclose`, install a trace function that skips the failing line, return an object
whose `__eq__` is always true). We do **not** defend against a program written against this harness
by someone who has read it: it runs in the same process as the harness, and a process cannot keep
secrets from code running inside it. The kernel-enforced layers still bound what such a program can
do to the host.

Each guarantee below has adversarial tests in `tests/verifiers/test_sandbox.py` and
`tests/verifiers/test_sandbox_round2.py`, run with and without the kernel layers, and as root also as
`user="nobody"`. The modules of this package each carry their part of the threat model (what is covered and what is
not) in their docstrings:

- `policy.py`: what a program may read (`SYSTEM_READ_PATHS`), the statuses a run ends with, `SandboxResult`.
  **Filesystem reads**; reads without Landlock.
- `runner.py`: `Sandbox`, the parent's side of a run (spawning, the job, collecting output and the report, the
  verdict, the group kill). **Separate process**, **Time**, **Environment and I/O**; a grandchild that calls
  `setsid()`.
- `harness.py`: what runs in the child (`_BOOTSTRAP`, `_harness_main`): resource limits, the audit hook, the
  program, the tampering checks, the tests, the report. **Memory**, **Processes**, **Signals**, **Proof of
  completion**, **Tampering**; a program that introspects the harness, comparisons laundered through arithmetic.
- `isolation.py`: the kernel layers the child applies to itself (`_isolate`): network and mount namespaces, the
  tmpfs, Landlock, capabilities, installing the system-call filter. **Privileges**, **Filesystem writes**; what
  holds without Landlock.
- `seccomp.py`: the system-call filter the parent builds for each child. **Network and other sockets**; what holds
  without the filter.
- `quota.py`: the parent's measure of the disk quota. **Disk quota**; what holds without the tmpfs.
- `cleanup.py`: removing a run's folder whatever the program did to it, and the watchdog that cleans up after a
  trainer that dies. **Cleanup, also when the trainer dies**.

The in-process guards (the audit hook, the tampering checks) are a tripwire against reward hacking, not a security
boundary; the OS limits, the capabilities dropped, the system-call filter, the group kill, the namespaces, the tmpfs
and Landlock are.

Not covered by any layer:

- CPU and memory are limited per process, not per cgroup: bound the machine's load with `num_workers`.
- No protection against kernel exploits, side channels, or timing-dependent flakiness (a correct but
  slow program on an overloaded machine times out).
"""

from __future__ import annotations

# The internals stay reachable under the names they had when the sandbox was one module (`sandbox._remove_tree`,
# `sandbox._seccomp_filter`, ...). To patch one, patch the module that uses it (`runner._BOOTSTRAP`), not this one.
from .cleanup import _REAPER_LOOP, _REAPERS, _Reaper, _reaper, _reaper_code, _remove_tree  # noqa: F401
from .harness import _BOOTSTRAP, _harness_code, _harness_main, _harness_source, _rewrite_asserts  # noqa: F401
from .isolation import _isolate  # noqa: F401
from .policy import SANDBOX_STATUSES, SYSTEM_READ_PATHS, SandboxResult
from .quota import (  # noqa: F401
    _DISK_CHECK_INTERVAL_S,
    _disk_usage,
    _open_deleted_bytes,
    _over_disk_quota,
    _tmpfs_full,
)
from .runner import Sandbox, _find_record, _has_exited, _site_packages_dirs  # noqa: F401
from .seccomp import _SECCOMP_REFUSED, _SECCOMP_SYSCALLS, _seccomp_filter, _seccomp_template  # noqa: F401

__all__ = ["SANDBOX_STATUSES", "SYSTEM_READ_PATHS", "Sandbox", "SandboxResult"]
