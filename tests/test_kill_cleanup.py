"""A process that is verifying math and code leaves nothing behind when it is killed (SIGKILL, SIGTERM) or
interrupted (Ctrl-C): no verifier worker, no fork server, no sandboxed program, no sandbox folder."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent('''
    import multiprocessing.forkserver as fs, os, signal, sys
    # as in a terminal: a test runner started in the background may have left SIGINT ignored, which children inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rasft_trl.verifiers import CodeVerifier, MathVerifier, Sandbox

    math = MathVerifier(num_workers=2)
    assert math.verify("\\\\boxed{{\\\\sqrt{{2}}/2}}", "\\\\frac{{1}}{{\\\\sqrt{{2}}}}").correct  # starts the workers
    pids = [w.process.pid for w in math._pool._workers] + [fs._forkserver._forkserver_pid]
    print("PIDS", *pids, flush=True)
    code = CodeVerifier(sandbox=Sandbox(timeout_s=120, cpu_time_s=120, tmp_root={tmp!r},
                                         env={{"RASFT_TEST_MARKER": {marker!r}}}))
    print("READY", flush=True)
    code.verify_batch(["import time\\ntime.sleep(100)"] * 2, ["assert True"] * 2)
    print("DONE", flush=True)
''')


def marked_processes(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    if marker.encode() in handle.read():
                        with open(f"/proc/{name}/stat") as stat:
                            if stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                                found.append(int(name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_nothing_survives_the_verifying_process(how, tmp_path):
    marker = f"rasft-kill-test-{os.getpid()}-{how}"
    tmp = str(tmp_path / "sandbox-root")
    os.makedirs(tmp)
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tmp=tmp, marker=marker)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pids = []
    for line in proc.stdout:
        if line.startswith("PIDS"):
            pids = [int(p) for p in line.split()[1:]]
        if line.startswith("READY"):
            break
    assert pids and all(alive(p) for p in pids), proc.stderr.read() if proc.poll() is not None else pids
    assert wait_until(lambda: len(marked_processes(marker)) == 2, 30), "the sandboxed programs did not start"
    assert any(name.startswith("rasft-sandbox-") for name in os.listdir(tmp))

    sent = time.monotonic()
    proc.send_signal(how)
    proc.wait(timeout=30)
    if how == signal.SIGINT:  # Ctrl-C stops the verifying process promptly (the programs sleep for 100 s)
        assert time.monotonic() - sent < 2.0
    assert wait_until(lambda: not any(alive(p) for p in pids), 5), [p for p in pids if alive(p)]
    assert wait_until(lambda: not marked_processes(marker), 5), marked_processes(marker)
    assert wait_until(lambda: not os.listdir(tmp), 5), os.listdir(tmp)
