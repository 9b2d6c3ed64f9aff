"""Adversarial tests of the sandbox: one (or a few) per guarantee of its threat model.

Each test runs a hostile program and checks three things: the sandbox reports a failure, it stays
within its time limit, and the side effect did not happen on the host.
"""

from __future__ import annotations

import json
import marshal
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from rasft_trl.verifiers.sandbox import SANDBOX_STATUSES, Sandbox, SandboxResult
from rasft_trl.verifiers.sandbox import runner as runner_module  # where Sandbox looks up the harness

TIMEOUT = 3.0  # generous: the CI machine may be loaded; every "fast" assertion below is well under it


@pytest.fixture(scope="module", params=["all_layers", "in_process_guards_only"])
def sandbox(request) -> Sandbox:
    # Every adversarial test runs twice: with the kernel layers (network namespace, Landlock, seccomp, the work
    # folder's tmpfs) where the machine has them, and without them, so that each guarantee is shown to hold on
    # kernels without.
    kernel = request.param == "all_layers"
    return Sandbox(timeout_s=TIMEOUT, memory_mb=512, max_output_bytes=4096, landlock=kernel, network_namespace=kernel,
                   seccomp=kernel, tmpfs=kernel)


@pytest.fixture(scope="module")
def isolation(sandbox) -> dict:
    return sandbox.run("x = 1", "assert x == 1").details["isolation"]


def run(sandbox: Sandbox, program: str, tests: str = "assert True", **kw) -> SandboxResult:
    t0 = time.monotonic()
    result = sandbox.run(textwrap.dedent(program), textwrap.dedent(tests), **kw)
    elapsed = time.monotonic() - t0
    assert result.status in SANDBOX_STATUSES
    assert elapsed < sandbox.timeout_s + 2.0, f"the sandbox overran its limit: {elapsed:.2f}s"
    result.details["elapsed"] = elapsed
    return result


def group_members(pgid: int) -> list[int]:
    """Live processes still in process group `pgid` (field 5 of /proc/<pid>/stat; zombies are dead: an
    orphaned grandchild's zombie waits for init to reap it, which some container inits never do)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(name))
    return members


# ---------------------------------------------------------------------------------------- basics


def test_correct_program_passes(sandbox):
    r = run(sandbox, "def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\nassert add(-1, 1) == 0")
    assert r.status == "passed", r
    assert r.passed


def test_failing_assert_is_reported_with_its_line(sandbox):
    r = run(sandbox, "def add(a, b):\n    return a - b\n", "assert add(0, 0) == 0\nassert add(1, 2) == 3")
    assert r.status == "assertion_failed"
    assert r.details["line"] == 2 and r.details["test"] == "assert add(1, 2) == 3"


def test_syntax_error(sandbox):
    assert run(sandbox, "def f(:\n    pass").status == "syntax_error"


def test_runtime_error(sandbox):
    r = run(sandbox, "def f():\n    return 1 / 0\n", "assert f() == 1")
    assert r.status == "runtime_error" and r.details["exception"] == "ZeroDivisionError"


def test_broken_tests_cannot_judge(sandbox):
    assert run(sandbox, "x = 1", "assert x ==").status == "test_error"
    assert run(sandbox, "x = 1", "import no_such_module_xyz\nassert x == 1").status == "test_error"


# ---------------------------------------------------------------------------------------- separate process


def test_fresh_interpreter_in_its_own_process_group(sandbox):
    r = run(
        sandbox,
        """
        import os, sys
        info = (os.getpid(), os.getpgid(0), os.getsid(0), sorted(m for m in ("torch", "numpy") if m in sys.modules))
        """,
        f"assert info[0] != {os.getpid()}\nassert info[1] == info[0] == info[2]\nassert info[3] == []",
    )
    assert r.status == "passed", r


# ---------------------------------------------------------------------------------------- the parent survives


KILL_PARENT = {
    "os.kill": "import os\nos.kill(os.getppid(), 9)",
    "killpg": "import os\nos.killpg(os.getpgid(os.getppid()), 9)",
    "pidfd": "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)",
}


@pytest.mark.parametrize("kernel_layers", [True, False])
@pytest.mark.parametrize("attack", sorted(KILL_PARENT))
def test_cannot_kill_the_parent(attack, kernel_layers):
    # The sandbox runs in a helper process: if the guarantee failed, the helper dies, not pytest.
    script = textwrap.dedent(
        f"""
        import json, sys
        from rasft_trl.verifiers.sandbox import Sandbox
        sb = Sandbox(timeout_s={TIMEOUT}, landlock={kernel_layers}, network_namespace={kernel_layers})
        r = sb.run({KILL_PARENT[attack]!r} + "\\nimport time\\ntime.sleep(0.5)", "assert True")
        print(json.dumps({{"status": r.status, "violations": r.details.get("violations")}}))
        """
    )
    t0 = time.monotonic()
    helper = subprocess.run(  # own session: a successful killpg must not reach pytest
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert helper.returncode == 0, f"the parent was killed: rc={helper.returncode} stderr={helper.stderr[-2000:]}"
    out = json.loads(helper.stdout.strip().splitlines()[-1])
    assert out["status"] == "sandbox_violation", out
    assert time.monotonic() - t0 < TIMEOUT + 30


# ---------------------------------------------------------------------------------------- processes


PROCESS_ATTACKS = {
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "fork_caught": "import os\nfor _ in range(100):\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "subprocess": "import subprocess\nsubprocess.Popen(['sleep', '60'])",
    "os_system": "import os\nos.system('sleep 60 &')",
    "posix_spawn": "import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], {})",
    "multiprocessing": "import multiprocessing as mp, time\nmp.Process(target=time.sleep, args=(60,)).start()",
    "pty": "import pty\npty.fork()",
    "ctypes_fork": "import ctypes\nctypes.CDLL(None).fork()",
    "fork_exec": (
        "import _posixsubprocess, os\n"
        "_posixsubprocess.fork_exec(['/bin/sleep', '60'], [b'/bin/sleep'], True, (), None, None, -1, -1, -1, -1,"
        " -1, -1, -1, -1, False, False, None, None, None, -1, None, False)"
    ),
}


@pytest.mark.parametrize("attack", sorted(PROCESS_ATTACKS))
def test_process_creation_is_refused_and_nothing_survives(sandbox, attack):
    r = run(sandbox, PROCESS_ATTACKS[attack] + "\ndef f():\n    return 1\n", "assert f() == 1")
    assert r.status == "sandbox_violation", r
    assert r.details["elapsed"] < TIMEOUT
    assert group_members(r.details["pid"]) == []


def test_group_kill_does_not_depend_on_the_in_process_guards(monkeypatch):
    # Replace the harness by a script that forks grandchildren (as if the audit hook had been bypassed):
    # the parent still kills the whole process group at the end of the run.
    rogue = (
        "def _harness_main(job):\n    import os, time\n    if os.fork() == 0:\n        os.fork()\n    time.sleep(60)\n"
    )
    monkeypatch.setattr(runner_module, "_harness_code", lambda: marshal.dumps(compile(rogue, "<rogue>", "exec")))
    r = Sandbox(timeout_s=1.0).run("", "assert True")
    assert r.status == "timeout" and r.duration_s < 2.5
    assert group_members(r.details["pid"]) == []


def test_a_child_that_never_reads_its_job_cannot_block_the_parent(monkeypatch):
    monkeypatch.setattr(runner_module, "_BOOTSTRAP", "import time\ntime.sleep(60)")
    r = Sandbox(timeout_s=1.0).run("x = 1\n" * 100_000, "assert True")  # job far above the pipe buffer
    assert r.status == "timeout" and r.duration_s < 2.5


def test_a_broken_harness_is_a_visible_sandbox_error(monkeypatch, caplog):
    monkeypatch.setattr(runner_module, "_BOOTSTRAP", "import sys\nsys.exit('harness broke')")
    r = Sandbox(timeout_s=TIMEOUT).run("x = 1", "assert x == 1")
    assert r.status == "sandbox_error" and "harness broke" in r.stderr
    assert "Sandbox error" in caplog.text


def _world_executable(path: str) -> bool:
    """True if `path` and every directory above it can be used by any user (for `user="nobody"`)."""
    path = os.path.realpath(path)
    parts = path.split("/")
    dirs = ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]
    return all(os.stat(d).st_mode & 0o001 for d in dirs) and bool(os.stat(path).st_mode & 0o005 == 0o005)


SYSTEM_PYTHON = "/usr/bin/python3"


def test_process_limit_is_enforced():
    # RLIMIT_NPROC counts threads too; the kernel ignores it for root, so as root the sandbox drops to nobody.
    kw = {}
    if os.geteuid() == 0:
        if not (os.path.exists(SYSTEM_PYTHON) and _world_executable(SYSTEM_PYTHON)):
            pytest.skip("as root this needs an interpreter that user nobody can run")
        kw = {"python_executable": SYSTEM_PYTHON, "user": "nobody"}
    program = textwrap.dedent(
        """
        import os, threading, time
        uid, n = os.getuid(), 0
        try:
            for _ in range(50):
                threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
                n += 1
        except RuntimeError:
            pass
        """
    )
    r = Sandbox(timeout_s=TIMEOUT, max_processes=5, **kw).run(program, "assert n == 5\nassert uid != 0")
    assert r.status == "passed", r


def test_another_interpreter_gets_the_same_guards():
    if not os.path.exists(SYSTEM_PYTHON) or os.path.realpath(SYSTEM_PYTHON) == os.path.realpath(sys.executable):
        pytest.skip("no second interpreter")
    sb = Sandbox(timeout_s=TIMEOUT, python_executable=SYSTEM_PYTHON)
    assert sb.run("def f():\n    return 1", "assert f() == 1").status == "passed"
    r = sb.run("def f():\n    return 0", "x = 1\nassert f() == 1")
    assert r.status == "assertion_failed" and r.details["line"] == 2 and r.details["test"] == "assert f() == 1"
    assert sb.run(*TAMPERING["always_equal"]).status == "tampered"
    assert sb.run(PROCESS_ATTACKS["fork_bomb"], "assert True").status == "sandbox_violation"


# ---------------------------------------------------------------------------------------- time and memory


def test_infinite_loop_times_out():
    sb = Sandbox(timeout_s=1.0)
    t0 = time.monotonic()
    r = sb.run("while True:\n    pass", "assert True")
    assert r.status == "timeout" and time.monotonic() - t0 < 2.5
    assert group_members(r.details["pid"]) == []


def test_cpu_time_limit_ends_a_busy_program_before_the_wall_clock():
    r = Sandbox(timeout_s=8.0, cpu_time_s=1).run("while True:\n    pass", "assert True")
    assert r.status == "timeout" and r.details["limit"] == "cpu_time"
    assert r.duration_s < 5.0


def test_sleeping_program_times_out_on_the_wall_clock():
    r = Sandbox(timeout_s=1.0).run("import time\ntime.sleep(60)", "assert True")
    assert r.status == "timeout" and r.details["limit"] == "wall_clock" and r.duration_s < 2.5


@pytest.mark.parametrize(
    "alloc", ["x = bytearray(10 * 1024**3)", "x = [0] * (10 * 1024**3 // 8)", "x = ' ' * (10 * 1024**3)"]
)
def test_ten_gigabyte_allocation_fails_inside_the_sandbox(sandbox, alloc):
    r = run(sandbox, alloc)
    assert r.status == "memory", r
    assert r.details["elapsed"] < TIMEOUT


def test_deep_recursion(sandbox):
    r = run(sandbox, "def f(n):\n    return f(n + 1)\n", "f(0)")
    assert r.status == "runtime_error" and r.details["exception"] == "RecursionError"


def test_unbounded_recursion_with_the_limit_lifted():
    # The frames fill the address space (or the C stack overflows): the child fails within the time limit,
    # and the host is untouched.
    program = "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)"
    r = Sandbox(timeout_s=2.0, memory_mb=256).run(program, "assert True")
    assert r.status in ("runtime_error", "memory", "timeout"), r
    assert r.duration_s < 3.5
    assert group_members(r.details["pid"]) == []


# ---------------------------------------------------------------------------------------- filesystem


def test_temporary_directory_is_fresh_and_removed(sandbox):
    r = run(
        sandbox,
        "import os\ncwd = os.getcwd()\nprint(cwd)\nlisting = os.listdir('.')\nopen('f.txt', 'w').write('ok')",
        "assert listing == []\nassert open('f.txt').read() == 'ok'",
    )
    assert r.status == "passed", r
    cwd = r.stdout.strip()
    assert cwd.startswith("/") and "rasft-sandbox-" in cwd
    assert not os.path.exists(cwd)


WRITE_ATTACKS = {
    "open": "open(TARGET, 'w').write('pwned')",
    "pathlib": "import pathlib\npathlib.Path(TARGET).write_text('pwned')",
    "os_open": "import os\nos.close(os.open(TARGET, os.O_WRONLY | os.O_CREAT))",
    "relative": "import os\nrel = os.path.relpath(TARGET, os.getcwd())\nopen(rel, 'w').write('pwned')",
    "rename": "open('a', 'w').write('pwned')\nimport os\nos.rename('a', TARGET)",
    "shutil": "open('a', 'w').write('pwned')\nimport shutil\nshutil.copy('a', TARGET)",
    "symlink": "import os\nos.symlink(os.path.dirname(TARGET), 'link')\nopen('link/' + os.path.basename(TARGET), 'w')",
    "caught": "try:\n    open(TARGET, 'w').write('pwned')\nexcept OSError:\n    pass",
}


@pytest.mark.parametrize("attack", sorted(WRITE_ATTACKS))
def test_cannot_write_outside_the_temporary_directory(sandbox, tmp_path, attack):
    target = tmp_path / "host_file.txt"
    r = run(sandbox, f"TARGET = {str(target)!r}\n" + WRITE_ATTACKS[attack])
    assert r.status == "sandbox_violation", r
    assert not target.exists()


def test_cannot_delete_or_chmod_host_files(sandbox, tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("keep")
    target.chmod(0o644)
    for attack in (
        "import os\nos.remove(TARGET)",
        "import os\nos.chmod(TARGET, 0o777)",
        "import shutil, os\nshutil.rmtree(os.path.dirname(TARGET))",
    ):
        r = run(sandbox, f"TARGET = {str(target)!r}\n" + attack)
        assert r.status == "sandbox_violation", (attack, r)
    assert target.read_text() == "keep" and (target.stat().st_mode & 0o777) == 0o644


def test_kernel_blocks_writes_the_audit_hook_cannot_see(sandbox, isolation, tmp_path):
    # os.open(..., dir_fd=) hides the directory from the audit hook (an O_PATH open reads nothing and is
    # allowed anywhere): only Landlock stops it.
    if not isolation["landlock_abi"]:
        pytest.skip("Landlock is off here (not available, or disabled in this parametrization)")
    r = run(
        sandbox,
        f"import os\nfd = os.open({str(tmp_path)!r}, os.O_PATH)\n"
        "os.open('x.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    )
    assert r.status == "runtime_error" and r.details["exception"] == "PermissionError", r
    assert not (tmp_path / "x.txt").exists()


READ_ATTACKS = {
    "open": "data = open(TARGET).read()",
    "pathlib": "import pathlib\ndata = pathlib.Path(TARGET).read_text()",
    "os_open": "import os\nfd = os.open(TARGET, os.O_RDONLY)\ndata = os.read(fd, 100).decode()",
    "relative": "import os\ndata = open(os.path.relpath(TARGET, os.getcwd())).read()",
    "listdir": "import os\ndata = ' '.join(os.listdir(os.path.dirname(TARGET)))",
    "glob": "import glob, os\ndata = ' '.join(glob.glob(os.path.dirname(TARGET) + '/*'))",
    "linecache": "import linecache\ndata = linecache.getline(TARGET, 1)",
    "caught": "try:\n    data = open(TARGET).read()\nexcept OSError:\n    data = ''",
}
SECRET = "rasft-secret-7f3a9c"


@pytest.fixture(params=["tmp", "beside_the_checkout"])
def secret_file(request, tmp_path):
    """A secret in /tmp itself (where the sandbox's own folders live) or in another folder outside the
    sandbox (pytest's tmp_path)."""
    if request.param == "tmp":
        fd, path = tempfile.mkstemp(prefix="rasft-secret-", suffix=".txt", dir="/tmp")
        os.write(fd, (SECRET + "\n").encode())
        os.close(fd)
        yield path
        os.remove(path)
    else:
        path = tmp_path / "credentials.txt"
        path.write_text(SECRET + "\n")
        yield str(path)


@pytest.mark.parametrize("attack", sorted(READ_ATTACKS))
def test_cannot_read_outside_the_temporary_directory(sandbox, secret_file, attack):
    program = f"TARGET = {secret_file!r}\n" + READ_ATTACKS[attack] + "\nprint(data)"
    r = run(sandbox, program, f"assert {SECRET!r} not in data and {os.path.basename(secret_file)!r} not in data")
    assert r.status == "sandbox_violation", r
    assert SECRET not in r.stdout + r.stderr + repr(r.details)


def test_kernel_blocks_reads_the_audit_hook_cannot_see(sandbox, isolation, secret_file):
    # Through an O_PATH descriptor of the secret's folder, the audit hook sees only a relative name that
    # looks like a file of the sandbox's own folder: only Landlock's read rules stop it.
    if not isolation["landlock_reads"]:
        pytest.skip("Landlock is off here (not available, or disabled in this parametrization)")
    directory, name = os.path.split(secret_file)
    r = run(
        sandbox,
        f"import os\nfd = os.open({directory!r}, os.O_PATH)\n"
        f"print(os.read(os.open({name!r}, os.O_RDONLY, dir_fd=fd), 100))",
    )
    assert r.status == "runtime_error" and r.details["exception"] == "PermissionError", r
    assert SECRET not in r.stdout + r.stderr


def test_reads_inside_the_folder_and_of_the_interpreter_still_work(sandbox):
    r = run(
        sandbox,
        """
        import json, os, sys, linecache, importlib.util
        open("data.json", "w").write(json.dumps({"a": 1}))
        loaded = json.load(open("data.json"))
        names = sorted(os.listdir("."))
        source = linecache.getline(json.__file__, 1)
        """,
        "assert loaded == {'a': 1}\nassert names == ['data.json']\nassert source",
    )
    assert r.status == "passed", r


def test_read_paths_opens_a_data_file_to_the_program(tmp_path):
    data = tmp_path / "table.csv"
    data.write_text("x,y\n1,2\n")
    program = f"rows = open({str(data)!r}).read().splitlines()"
    assert Sandbox(timeout_s=TIMEOUT).run(program, "assert rows == ['x,y', '1,2']").status == "sandbox_violation"
    r = Sandbox(timeout_s=TIMEOUT, read_paths=[str(data)]).run(program, "assert rows == ['x,y', '1,2']")
    assert r.status == "passed", r
    r = Sandbox(timeout_s=TIMEOUT, confine_reads=False).run(program, "assert rows == ['x,y', '1,2']")
    assert r.status == "passed", r
    assert r.details["isolation"]["landlock_reads"] is False


def test_file_size_limit():
    r = Sandbox(timeout_s=TIMEOUT, max_file_mb=1).run("open('big', 'wb').write(b'x' * (8 * 2**20))", "assert True")
    assert r.status == "runtime_error" and "File too large" in r.details["message"], r


# ---------------------------------------------------------------------------------------- network


@pytest.mark.parametrize(
    "attack",
    [
        "import socket\ns = socket.create_connection(('127.0.0.1', PORT), timeout=1)\ns.sendall(b'pwned')",
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', PORT))",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'pwned', ('127.0.0.1', PORT))",
        "import urllib.request\nurllib.request.urlopen(f'http://127.0.0.1:{PORT}/', timeout=1)",
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', PORT), timeout=1)\nexcept OSError:\n    pass",
    ],
)
def test_no_network(sandbox, attack):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))  # loopback only
        listener.listen(1)
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        r = run(sandbox, f"PORT = {port}\n" + attack)
        assert r.status == "sandbox_violation", r
        with pytest.raises(socket.timeout):
            listener.accept()


def test_socketpair_for_asyncio_is_allowed(sandbox):
    r = run(sandbox, "import asyncio\nasync def f():\n    return 3\nx = asyncio.run(f())", "assert x == 3")
    assert r.status == "passed", r


def test_common_libraries_work_under_the_guards():
    pytest.importorskip("numpy")
    pytest.importorskip("sympy")
    program = textwrap.dedent(
        """
        import asyncio, collections, concurrent.futures, dataclasses, enum, inspect, logging, pathlib, sqlite3
        import tempfile, traceback, unittest.mock, warnings
        import numpy as np
        import sympy
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("x").info("hello")
        P = collections.namedtuple("P", "a b")
        E = enum.Enum("E", "A B")
        @dataclasses.dataclass
        class D:
            x: int
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            r = list(ex.map(abs, [-1, -2]))
        with tempfile.TemporaryDirectory() as d:
            pathlib.Path(d, "f").write_text("x")
        sqlite3.connect(":memory:").execute("create table t(x)")
        inspect.stack()
        traceback.format_stack()
        warnings.warn("w")
        with unittest.mock.patch("builtins.print"):
            print("hidden")
        s = sympy.simplify("x + x")
        a = np.linalg.inv(np.eye(3))
        """
    )
    tests = "assert r == [1, 2]\nassert D(1) == D(1)\nassert P(1, 2) == (1, 2)\n"
    tests += "assert str(s) == '2*x'\nassert a[0, 0] == 1"
    r = Sandbox(timeout_s=30).run(program, tests)
    assert r.status == "passed", r


# ---------------------------------------------------------------------------------------- environment and I/O


def test_scrubbed_environment_and_closed_stdin(sandbox, monkeypatch):
    monkeypatch.setenv("RASFT_TEST_SECRET", "hunter2")
    r = run(
        sandbox,
        "import os, sys\nenv = dict(os.environ)\ndata = sys.stdin.read()",
        "assert 'RASFT_TEST_SECRET' not in env\nassert data == ''\nassert env['HOME'] == os.getcwd()",
    )
    assert r.status == "passed", r
    r = run(sandbox, "x = input()")
    assert r.status == "runtime_error" and r.details["exception"] == "EOFError"


def test_captured_output_is_capped(sandbox):
    r = run(sandbox, "import sys\nprint('a' * 10**6)\nsys.stderr.write('b' * 10**6)\nprint('done')", "assert True")
    assert r.status == "passed"
    assert len(r.stdout) <= sandbox.max_output_bytes and len(r.stderr) <= sandbox.max_output_bytes
    assert r.details["output_truncated"] == {"stdout": True, "stderr": True}


# ---------------------------------------------------------------------------------------- early exits


EARLY_EXITS = {
    "sys_exit": "import sys\nsys.exit(0)",
    "raise_systemexit": "raise SystemExit",
    "os_exit": "import os\nos._exit(0)",
    "exit_builtin": "exit(0)",
    "atexit": "import atexit, os, sys\natexit.register(os._exit, 0)\nsys.exit(0)",
    "exit_in_tested_function": "import sys\ndef f():\n    sys.exit(0)",
    "os_exit_in_tested_function": "import os\ndef f():\n    os._exit(0)",
    "thread_exits_during_tests": (
        "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(0))).start()\n"
        "def f():\n    time.sleep(2)\n    return 0"
    ),
    "exit_code_zero_after_fake_output": "print('All tests passed!')\nimport os\nos._exit(0)",
}


@pytest.mark.parametrize("attack", sorted(EARLY_EXITS))
def test_early_exit_is_a_failure(sandbox, attack):
    r = run(sandbox, EARLY_EXITS[attack], "assert f() == 1\nassert False, 'unreachable'")
    assert r.status == "early_exit", r


def test_forged_reports_on_every_descriptor_do_not_pass(sandbox):
    forge = textwrap.dedent(
        """
        import os
        fake = b"S" + b"0" * 32 + b" " + repr(("passed", {})).encode() + b"\\n"
        for fd in range(0, 300):
            try:
                os.write(fd, fake)
            except OSError:
                pass
        def f():
            return 0
        """
    )
    assert run(sandbox, forge, "assert f() == 1").status == "assertion_failed"


# ---------------------------------------------------------------------------------------- tampering

TRACER = """
import sys
def tracer(frame, event, arg):  # skips every line of the tests
    if event == "line" and frame.f_code.co_filename == "<tests>":
        frame.f_lineno += 1
    return tracer
"""
# attack -> (program, tests): each test fails for an honest program; the attack tries to make it pass.
TAMPERING = {
    "rebind_assertionerror": ("AssertionError = Exception\ndef f():\n    return 0", "assert f() == 1"),
    "builtins_assertionerror": (
        "import builtins\nbuiltins.AssertionError = type('E', (Exception,), {})\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "builtins_dict": (
        "import builtins\nbuiltins.__dict__['AssertionError'] = KeyError\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "monkeypatch_print": (
        "import builtins\nbuiltins.print = lambda *a, **k: None\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "patch_len": ("import builtins\nbuiltins.len = lambda x: 3\ndef f():\n    return [1]", "assert len(f()) == 3"),
    "patch_math_isclose": (
        "import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 0.0",
        "import math\nassert math.isclose(f(), 1.0)",
    ),
    "replace_math_module": (
        "import sys, types\nm = types.ModuleType('math')\nm.isclose = lambda *a, **k: True\nsys.modules['math'] = m\n"
        "def f():\n    return 0.0",
        "import math\nassert math.isclose(f(), 1.0)",
    ),
    "settrace_at_import": (TRACER + "sys.settrace(tracer)\ndef f():\n    return 0", "assert f() == 1"),
    "settrace_from_tested_function": (
        TRACER + "def f():\n    sys._getframe(1).f_trace = tracer\n    sys.settrace(tracer)\n    return 0",
        "x = f()\nassert x == 1",
    ),
    "threading_settrace": (
        TRACER + "import threading\nthreading.settrace(tracer)\n"
        "def f():\n    t = threading.Thread(target=int)\n    t.start()\n"
        "    t.join()\n    return 0",
        "assert f() == 1",
    ),
    "always_equal": (
        "class Eq:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Eq()",
        "assert f() == 1",
    ),
    "always_equal_nested": (
        "class Eq:\n    def __eq__(self, other):\n        return True\ndef f():\n    return [Eq(), Eq()]",
        "assert f() == [1, 2]",
    ),
    "always_equal_via_type_call": (
        "Eq = type('Eq', (), {'__eq__': lambda s, o: True})\ndef f():\n    return Eq()",
        "assert f() == 1",
    ),
    "always_equal_staticmethod": (
        "class Eq:\n    __eq__ = staticmethod(lambda a, b: True)\ndef f():\n    return Eq()",
        "assert f() == 1",
    ),
    "always_less": (
        "class Lt:\n    def __lt__(self, other):\n        return True\ndef f():\n    return Lt()",
        "assert f() < 0",
    ),
    "always_contains": (
        "class C:\n    def __contains__(self, x):\n        return True\ndef f():\n    return C()",
        "assert 5 in f()",
    ),
    "always_truthy": (
        "class T:\n    def __bool__(self):\n        return True\ndef f():\n    return T()",
        "assert f()",
    ),
    "gc_walk": ("import gc\nobjs = gc.get_objects()\ndef f():\n    return 0", "assert f() == 1"),
    "audit_hook": ("import sys\nsys.addaudithook(lambda *a: None)\ndef f():\n    return 0", "assert f() == 1"),
    "ctypes_memmove": (
        "import ctypes\nb = ctypes.create_string_buffer(8)\nctypes.memmove(b, b'12345678', 8)\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "ctypes_from_address": (
        "import ctypes\nctypes.c_int.from_address(id(1))\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "raise_rlimit": (
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\ndef f():\n    return 0",
        "assert f() == 1",
    ),
    "proc_self_mem": ("open('/proc/self/mem', 'rb')\ndef f():\n    return 0", "assert f() == 1"),
}


@pytest.mark.parametrize("attack", sorted(TAMPERING))
def test_tampering_does_not_turn_a_failure_into_a_pass(sandbox, attack):
    program, tests = TAMPERING[attack]
    r = run(sandbox, program, tests)
    assert r.status in ("assertion_failed", "tampered", "sandbox_violation", "runtime_error"), r


def test_tampering_is_named(sandbox):
    r = run(sandbox, *TAMPERING["builtins_assertionerror"])
    assert r.status == "tampered" and "builtins.AssertionError" in r.details["tampering"][0]
    assert run(sandbox, *TAMPERING["always_equal"]).status == "tampered"
    assert run(sandbox, *TAMPERING["patch_math_isclose"]).status == "tampered"
    assert run(sandbox, *TAMPERING["settrace_at_import"]).status == "sandbox_violation"


def test_program_defined_equality_between_program_objects_is_allowed(sandbox):
    program = "class P:\n    def __init__(self, v):\n        self.v = v\n"
    program += "    def __eq__(self, o):\n        return self.v == o.v\n"
    r = run(sandbox, program, "assert P(1) == P(1)\nassert P(1) != P(2)")
    assert r.status == "passed", r


def test_print_cannot_fake_a_pass(sandbox):
    r = run(sandbox, "print('PASSED')\nprint(repr(('passed', {})))\ndef f():\n    return 0", "assert f() == 1")
    assert r.status == "assertion_failed"


# ---------------------------------------------------------------------------------------- threads


def test_lingering_threads_neither_keep_the_sandbox_alive_nor_flip_the_result(sandbox):
    program = textwrap.dedent(
        """
        import threading, time
        threading.Thread(target=time.sleep, args=(600,)).start()                 # non-daemon, outlives tests
        def spin():
            while True:
                pass
        threading.Thread(target=spin, daemon=True).start()                      # spins forever
        def f(x):
            return x + 1
        """
    )
    r = run(sandbox, program, "assert f(1) == 2")
    assert r.status == "passed" and r.details["elapsed"] < TIMEOUT, r
    assert group_members(r.details["pid"]) == []
    r = run(sandbox, program, "assert f(1) == 3")
    assert r.status == "assertion_failed" and r.details["elapsed"] < TIMEOUT, r


def test_thread_that_writes_fake_reports_after_the_tests(sandbox):
    program = textwrap.dedent(
        """
        import os, threading
        def spam():
            fake = b"0" * 32 + b" " + repr(("passed", {})).encode() + b"\\n"
            while True:
                for fd in range(3, 64):
                    try:
                        os.write(fd, fake)
                    except OSError:
                        pass
        threading.Thread(target=spam, daemon=True).start()
        def f():
            return 0
        """
    )
    assert run(sandbox, program, "assert f() == 1").status in ("assertion_failed", "timeout")


def test_the_total_written_to_disk_is_capped():
    sandbox = Sandbox(timeout_s=20.0, max_file_mb=8, max_disk_mb=24)
    # 40 files of 4 MiB: each under max_file_mb, together far above max_disk_mb
    flood = "for i in range(40):\n    open(f'f{i}.bin', 'wb').write(b'x' * (4 << 20))\nimport time\ntime.sleep(5)"
    r = sandbox.run(flood, "assert True")
    assert r.status == "disk_quota" and r.details["limit_mb"] == 24, r
    many = "for i in range(20000):\n    open(f'e{i}', 'w').close()"  # empty files count too
    assert sandbox.run(many, "assert True").status == "disk_quota"
    small = "open('f.bin', 'wb').write(b'x' * (1 << 20))\nx = 1"
    assert sandbox.run(small, "assert x == 1").status == "passed"
