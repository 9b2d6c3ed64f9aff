"""Peak resident memory of the real CPU demo (`make demo`), its whole process tree, with a pass/fail against 3 GB.

Usage:
    python benchmarks/bench_demo_memory.py                       # the default demo, as `make demo` runs it
    python benchmarks/bench_demo_memory.py --limit-gb 3 -- --compare   # flags after `--` go to the demo
    python benchmarks/bench_demo_memory.py --timeline mem.csv    # also write every sample

It runs `python -m rasft_trl.demo --output-dir <temporary folder>` (the report folder is the only flag added, unless
the demo flags name one; it changes nothing but where the report goes) and samples the resident memory of the demo and of every process below
it (the math verifier's worker processes, compile helpers) every `--interval` seconds from `/proc`. It prints:

* `peak tree`: the largest sum of the tree's resident sets over the samples (what the machine has to hold);
* `peak largest process`: the largest resident set of a single process; besides the samples it reads each
  process's `VmHWM` (the kernel's own high-water mark, so a spike between two samples is not missed) and the
  `ru_maxrss` of the waited-for children, which is the number `/usr/bin/time -v` prints as "Maximum resident set
  size";
* the peak of each phase of the demo (from its `[demo] ...` lines), split into anonymous and file-backed memory
  (the page cache of mmap'd checkpoints is file-backed and reclaimable).

Then `PASS` or `FAIL`: the larger of the two peaks against `--limit-gb` (GB = 10^9 bytes), and last
`ratio demo_peak_vs_limit: X`. The model and
the warm start should be cached (`~/.cache/rasft-trl`, as after a first `make demo`); otherwise the first run also
converts and warm-starts them, which is a different (and one-off) phase.
Linux only (`/proc`). Exit status: 0 on PASS, 1 on FAIL, the demo's status if it failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def read_status(pid: int) -> dict[str, int] | None:
    """`VmRSS`, `VmHWM`, `RssAnon`, `RssFile` (kB) and `PPid` of a process, or None if it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "PPid"):
                    fields[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return fields if "VmRSS" in fields else None  # a zombie has no VmRSS


def process_tree(root: int) -> dict[int, dict[str, int]]:
    """Status of `root` and of every live process below it."""
    statuses = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            status = read_status(int(name))
            if status is not None:
                statuses[int(name)] = status
    children: dict[int, list[int]] = {}
    for pid, status in statuses.items():
        children.setdefault(status.get("PPid", 0), []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in statuses:
            tree[pid] = statuses[pid]
            todo.extend(children.get(pid, []))
    return tree


class TreeSampler:
    """Samples the process tree below `root` every `interval` seconds in a thread."""

    def __init__(self, root: int, interval: float, timeline: str | None):
        self.root, self.interval = root, interval
        self.phase = "start"
        self.peak_tree_kb, self.peak_tree_at, self.peak_tree_split = 0, "", (0, 0)
        self.peak_process_kb, self.peak_process_at = 0, ""
        self.hwm_kb: dict[int, int] = {}  # the kernel's high-water mark of each process seen
        self.max_processes = 0
        self.phases: dict[str, dict[str, int]] = {}
        self._timeline = open(timeline, "w") if timeline else None
        if self._timeline:
            self._timeline.write("seconds,phase,processes,tree_mb,anon_mb,file_mb,largest_mb\n")
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._timeline:
            self._timeline.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        tree = process_tree(self.root)
        if not tree:
            return
        total = sum(s["VmRSS"] for s in tree.values())
        anon = sum(s.get("RssAnon", 0) for s in tree.values())
        file = sum(s.get("RssFile", 0) + s.get("RssShmem", 0) for s in tree.values())
        largest = max(s["VmRSS"] for s in tree.values())
        for pid, s in tree.items():
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), s.get("VmHWM", 0))
        self.max_processes = max(self.max_processes, len(tree))
        phase = self.phase
        if total > self.peak_tree_kb:
            self.peak_tree_kb, self.peak_tree_at, self.peak_tree_split = total, phase, (anon, file)
        if largest > self.peak_process_kb:
            self.peak_process_kb, self.peak_process_at = largest, phase
        record = self.phases.setdefault(phase, {"tree": 0, "anon": 0, "file": 0, "processes": 0})
        if total > record["tree"]:
            record.update(tree=total, anon=anon, file=file)
        record["processes"] = max(record["processes"], len(tree))
        if self._timeline:
            seconds = time.perf_counter() - self._start
            self._timeline.write(
                f"{seconds:.1f},{phase},{len(tree)},{total / 1024:.0f},{anon / 1024:.0f},{file / 1024:.0f},"
                f"{largest / 1024:.0f}\n"
            )


def phase_of(line: str, current: str) -> str:
    """The demo phase that starts at an output line of the demo (its `[demo] ...` lines), else `current`."""
    if line.startswith("[demo] training "):
        return "train/" + line.split()[2]
    if line.startswith("[demo] ") and ": " in line and " s wall" in line:
        return "after " + line[len("[demo] ") :].split(":")[0]
    return current


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MiB ({kb * 1024 / 1e9:.2f} GB)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-gb", type=float, default=3.0, help="pass/fail limit in GB (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples (default: %(default)s)")
    parser.add_argument("--timeline", default=None, help="write every sample to this CSV file")
    parser.add_argument("demo_args", nargs="*", help="flags for `python -m rasft_trl.demo` (after `--`)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-demo-memory-") as output_dir:
        own_dir = any(a.split("=")[0] in ("--output-dir", "--output_dir") for a in args.demo_args)  # keep its report
        command = [sys.executable, "-m", "rasft_trl.demo", *([] if own_dir else ["--output-dir", output_dir]),
                   *args.demo_args]
        print("command:", " ".join(command), flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
        sampler = TreeSampler(proc.pid, args.interval, args.timeline)
        sampler.start()
        start = time.perf_counter()
        for line in proc.stdout:
            sys.stdout.write(line)
            sampler.phase = phase_of(line, sampler.phase)
        status = proc.wait()
        sampler.stop()
        seconds = time.perf_counter() - start
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # what /usr/bin/time -v reports
    largest_kb = max([sampler.peak_process_kb, maxrss_kb, *sampler.hwm_kb.values()])

    print("\n== bench_demo_memory")
    print(f"wall time: {seconds:.0f} s; processes in the tree at most: {sampler.max_processes}")
    print("peak per phase (tree sum; anonymous / file-backed):")
    for phase, record in sampler.phases.items():
        print(f"  {phase:28s} {record['tree'] / 1024:7,.0f} MiB  ({record['anon'] / 1024:,.0f} / "
              f"{record['file'] / 1024:,.0f}; {record['processes']} processes)")
    anon, file = sampler.peak_tree_split
    print(f"peak tree (sum of the tree's resident sets, sampled every {args.interval} s): "
          f"{mb(sampler.peak_tree_kb)} in phase '{sampler.peak_tree_at}' "
          f"(anonymous {anon / 1024:,.0f} MiB, file-backed {file / 1024:,.0f} MiB)")
    print(f"peak largest process: {mb(largest_kb)} (sampled {sampler.peak_process_kb / 1024:,.0f} MiB in phase "
          f"'{sampler.peak_process_at}'; VmHWM / ru_maxrss {max([maxrss_kb, *sampler.hwm_kb.values()]) / 1024:,.0f}"
          " MiB)")
    if status != 0:
        print(f"FAIL: the demo exited with status {status}")
        return status
    peak_gb = max(sampler.peak_tree_kb, largest_kb) * 1024 / 1e9
    verdict = "PASS" if peak_gb <= args.limit_gb else "FAIL"
    print(f"{verdict}: peak {peak_gb:.2f} GB {'<=' if verdict == 'PASS' else '>'} {args.limit_gb:g} GB")
    print(f"ratio demo_peak_vs_limit: {peak_gb / args.limit_gb:.2f}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
