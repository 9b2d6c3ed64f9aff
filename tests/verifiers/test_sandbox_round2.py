"""Adversarial tests of the sandbox, round 2 (issue 27): device nodes and immutable files as root, trees the
cleanup could not remove, files held open after `unlink`, Unix sockets once the audit hook is off, and the same
attacks as user `nobody`.

Most attacks are run with every kernel layer and again with some of them switched off, so that each layer is
shown to stop the attack on its own. Tests that need root (device nodes, immutable flags, another user) are
skipped for other users.
"""

from __future__ import annotations

import inspect
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from rasft_trl.verifiers import sandbox as sandbox_module
from rasft_trl.verifiers.code import CodeVerifier
from rasft_trl.verifiers.sandbox import Sandbox

TIMEOUT = 5.0
ROOT = os.geteuid() == 0
LINUX = sys.platform.startswith("linux")
needs_root = pytest.mark.skipif(not ROOT, reason="the attack needs root (the default user=None when training as root)")
linux_only = pytest.mark.skipif(not LINUX, reason="Linux kernel layers")

SYSTEM_PYTHON = "/usr/bin/python3"
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20

# The documented frame trick (docs/verifiers.md, "Not covered"): the program's caller is the harness, whose locals
# hold the audit hook's table of handlers; replacing every handler by a no-op switches the hook off. Everything
# after this runs with only the kernel layers in the way.
HOOK_OFF = """
import sys
_table = sys._getframe(1).f_locals["handlers"]
for _event in [*_table, "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"]:
    _table[_event] = lambda args: None
"""


def run(sb: Sandbox, program: str, tests: str = "assert True"):
    t0 = time.monotonic()
    result = sb.run(textwrap.dedent(program), textwrap.dedent(tests))
    assert time.monotonic() - t0 < sb.timeout_s + 3.0
    return result


def program_output(result) -> dict:
    """The program reports what its attack achieved on its last stdout line (a dict literal)."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result
    import ast

    return ast.literal_eval(lines[-1])


def run_folders(sb: Sandbox) -> list[str]:
    """Folders of finished runs still present under this sandbox's per-process root."""
    return os.listdir(sandbox_module._reaper(sb.tmp_root, sb.user is not None).root)


def set_flags(path: str, flags: int) -> None:
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
    finally:
        os.close(fd)


def nobody_can_run(path: str) -> bool:
    path = os.path.realpath(path)
    parts = path.split("/")
    dirs = ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]
    return all(os.stat(d).st_mode & 0o001 for d in dirs) and os.stat(path).st_mode & 0o005 == 0o005


@pytest.fixture
def world_dir():
    """A temporary directory that user nobody can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="rasft-round2-")
    os.chmod(path, 0o711)
    yield path
    sandbox_module._remove_tree(path)
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------- the hook can be switched off


@linux_only
def test_the_frame_trick_switches_the_audit_hook_off(tmp_path):
    # The premise of the socket test below: with the hook off and no kernel layer, a file outside can be read.
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    sb = Sandbox(timeout_s=TIMEOUT, landlock=False, network_namespace=False, seccomp=False, tmpfs=False)
    r = run(sb, HOOK_OFF + f"data = open({str(secret)!r}).read()\nprint(repr({{'data': data}}))")
    assert r.status == "passed", r
    assert program_output(r)["data"] == "s3cret"


# ---------------------------------------------------------------------------------------- item 1: device nodes, flags

MKNOD = """
import os, stat
out = {"created": False, "read": 0}
try:
    os.mknod("kmsg", stat.S_IFCHR | 0o600, os.makedev(1, 11))  # /dev/kmsg, the kernel log
    out["created"] = True
except OSError as exc:
    out["mknod_error"] = exc.errno
try:
    fd = os.open("kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out["read"] = len(os.read(fd, 4096))
except OSError as exc:
    out["open_error"] = exc.errno
try:
    os.mknod("disk", stat.S_IFBLK | 0o600, os.makedev(7, 0))  # a loop device
    out["block_created"] = True
except OSError as exc:
    out["block_error"] = exc.errno
os.mkfifo("fifo")  # FIFOs stay allowed
print(repr(out))
"""

# Each configuration leaves at least one layer that stops the attack on its own.
LAYERS = {
    "all_layers": {},
    "capabilities_and_seccomp": {"landlock": False, "network_namespace": False, "tmpfs": False},
    "capabilities_only": {"landlock": False, "network_namespace": False, "tmpfs": False, "seccomp": False},
    "landlock_only": {"network_namespace": False, "tmpfs": False, "seccomp": False, "_keep_capabilities": True},
}


def layered(name: str, **kw) -> Sandbox:
    options = {**LAYERS[name], **kw}
    keep = options.pop("_keep_capabilities", False)
    sb = Sandbox(timeout_s=TIMEOUT, **options)
    if keep:
        sb._drop_capabilities = False
    return sb


@needs_root
@linux_only
@pytest.mark.parametrize("layers", sorted(LAYERS))
def test_root_program_cannot_create_device_nodes(layers):
    r = run(layered(layers), MKNOD)
    assert r.status == "passed", r
    out = program_output(r)
    assert out["created"] is False and out["read"] == 0, out
    assert "block_created" not in out, out
    assert out["mknod_error"] in (1, 13) and out["block_error"] in (1, 13), out  # EPERM / EACCES


@needs_root
@linux_only
def test_root_program_runs_without_capabilities():
    r = run(Sandbox(timeout_s=TIMEOUT), "x = 1")
    assert r.status == "passed", r
    assert r.details["isolation"]["capabilities_dropped"] is True, r.details
    r = run(
        Sandbox(timeout_s=TIMEOUT, landlock=False, confine_reads=False),
        HOOK_OFF + "caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapBnd', 'CapPrm'))]",
        "assert all(line.split()[1] == '0000000000000000' for line in caps), caps",
    )
    assert r.status == "passed", r


IMMUTABLE = """
import fcntl, os, struct
out = {}
with open("stuck", "w") as fh:
    fh.write("x")
os.mkdir("appendonly")
for name, flag in (("stuck", 0x10), ("appendonly", 0x20)):
    fd = os.open(name, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x40086602, struct.pack("i", flag))  # FS_IOC_SETFLAGS
        out[name] = "set"
    except OSError as exc:
        out[name] = exc.errno
    finally:
        os.close(fd)
print(repr(out))
"""


@needs_root
@linux_only
@pytest.mark.parametrize("layers", ["all_layers", "capabilities_only", "capabilities_and_seccomp"])
def test_root_program_cannot_make_files_immutable(layers, tmp_path):
    sb = layered(layers, tmp_root=str(tmp_path))
    r = run(sb, IMMUTABLE)
    assert r.status == "passed", r
    assert program_output(r) == {"stuck": 1, "appendonly": 1}  # EPERM
    assert run_folders(sb) == [] and sb.cleanup_failures == 0


def _supports_flags(path) -> bool:
    probe = os.path.join(path, "probe")
    open(probe, "w").close()
    try:
        set_flags(probe, FS_APPEND_FL)
        set_flags(probe, 0)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


@needs_root
@linux_only
def test_cleanup_clears_immutable_and_append_only_flags(tmp_path):
    # Belt and braces: whatever set them, the run's cleanup and the watchdog clear the flags before removing.
    if not _supports_flags(str(tmp_path)):
        pytest.skip("the filesystem of the temporary directory has no inode flags")
    for remover in ("cleanup", "watchdog"):
        tree = tmp_path / remover
        (tree / "dir").mkdir(parents=True)
        (tree / "dir" / "file").write_text("x")
        (tree / "frozen").write_text("x")
        set_flags(str(tree / "dir" / "file"), FS_APPEND_FL)
        set_flags(str(tree / "dir"), FS_APPEND_FL)
        set_flags(str(tree / "frozen"), FS_IMMUTABLE_FL)
        if remover == "cleanup":
            assert sandbox_module._remove_tree(str(tree)) == []
        else:
            watchdog = subprocess.run(
                [sys.executable, "-I", "-S", "-c", sandbox_module._reaper_code(), str(tree)],
                input=b"", timeout=60, check=False,
            )
            assert watchdog.returncode == 0
        assert not tree.exists(), remover


# ---------------------------------------------------------------------------------------- item 2: trees

DEEP_TREE = """
import os
path = "d"
for _ in range(1600):
    os.mkdir(path)
    path += "/d"
os.makedirs("locked/inner")
with open("locked/inner/file", "w") as fh:
    fh.write("x")
os.chmod("locked/inner", 0)
os.chmod("locked", 0)
def f():
    return 1
"""


@linux_only
@pytest.mark.parametrize("tmpfs", [True, False])
def test_deep_and_locked_trees_are_removed_without_raising(tmpfs, tmp_path):
    sb = Sandbox(timeout_s=TIMEOUT, tmpfs=tmpfs, tmp_root=str(tmp_path))
    r = run(sb, DEEP_TREE, "assert f() == 1")  # before round 2: RecursionError out of Sandbox.run
    assert r.status == "passed", r
    assert run_folders(sb) == [] and sb.cleanup_failures == 0


@linux_only
def test_code_verifier_never_raises_for_a_tree_the_program_built(tmp_path):
    verifier = CodeVerifier(sandbox=Sandbox(timeout_s=TIMEOUT, tmpfs=False, tmp_root=str(tmp_path)), num_workers=2)
    response = f"```python\n{textwrap.dedent(DEEP_TREE)}```"
    results = verifier.verify_batch([response, response], ["assert f() == 1", "assert f() == 2"])
    assert [r.reason for r in results] == ["passed", "assertion_failed"]
    assert verifier.stats["cleanup_failures"] == 0


def build_deep_tree(root: str, depth: int = 1600) -> None:
    """A tree as a program builds it: `depth` nested folders, and a subtree nobody may enter (chmod 000)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
            fh.write("bottom")
    finally:
        os.close(fd)
    os.makedirs(os.path.join(root, "locked", "inner"))
    with open(os.path.join(root, "locked", "inner", "file"), "w") as fh:
        fh.write("x")
    os.chmod(os.path.join(root, "locked", "inner"), 0)
    os.chmod(os.path.join(root, "locked"), 0)


@linux_only
def test_the_watchdog_removes_a_deep_tree_after_the_trainer_dies(tmp_path):
    reaper = sandbox_module._Reaper(str(tmp_path), False)
    os.mkdir(os.path.join(reaper.root, "run-x"))
    build_deep_tree(os.path.join(reaper.root, "run-x"))
    os.close(reaper._write_end)  # as when the trainer dies
    reaper.process.wait(timeout=60)
    assert not os.path.exists(reaper.root)


@needs_root
@linux_only
def test_a_non_root_watchdog_removes_a_deep_locked_tree(world_dir):
    # As a user without root's permission bypass, a chmod-000 folder can be neither read nor emptied until the
    # remover gives it back its permissions.
    if not (os.path.exists(SYSTEM_PYTHON) and nobody_can_run(SYSTEM_PYTHON)):
        pytest.skip("needs an interpreter that user nobody can run")
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.chmod(world_dir, 0o1777)  # like /tmp, where the watchdog's root lives
    root = os.path.join(world_dir, "root")
    os.makedirs(os.path.join(root, "run-x"))
    for path in (root, os.path.join(root, "run-x")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    build = "import os, sys\n" + inspect.getsource(build_deep_tree) + "build_deep_tree(sys.argv[1])"
    as_nobody = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": [], "timeout": 120, "check": True}
    subprocess.run([SYSTEM_PYTHON, "-I", "-S", "-c", build, os.path.join(root, "run-x")], **as_nobody)
    look = [SYSTEM_PYTHON, "-c", f"import os; os.listdir({root!r} + '/run-x/locked')"]
    peek = subprocess.run(look, **{**as_nobody, "check": False}, capture_output=True, text=True)
    assert "PermissionError" in peek.stderr  # nobody cannot look into what it locked
    watchdog = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", "-c", sandbox_module._reaper_code(), root], input=b"", **as_nobody
    )
    assert watchdog.returncode == 0
    assert not os.path.exists(root)


# ---------------------------------------------------------------------------------------- item 3: disk quota

DELETED_BUT_OPEN = """
import os, time
fds, chunk = [], b"x" * (1 << 20)
for i in range(24):
    fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
    for _ in range(15):
        os.write(fd, chunk)
    os.unlink(f"f{i}")  # invisible to a scan of the folder, still on disk while the descriptor is open
    fds.append(fd)
    print(i, flush=True)
    time.sleep(0.05)
time.sleep(1)
"""


@linux_only
@pytest.mark.parametrize("tmpfs", [True, False])
def test_files_held_open_after_unlink_count_against_the_disk_quota(tmpfs):
    sb = Sandbox(timeout_s=TIMEOUT, max_disk_mb=64, tmpfs=tmpfs)
    r = run(sb, DELETED_BUT_OPEN)
    assert r.status == "disk_quota", r  # before round 2: "passed", with 360 MiB written
    written = len(r.stdout.split())
    if tmpfs:  # exact: the fifth file does not fit in 64 MiB (ENOSPC)
        assert r.details["isolation"]["disk_tmpfs"] is True
        assert written == 4, r.stdout
    else:  # measured every 0.1 s while the program writes a file every 0.05 s: a few files over, not 24
        assert written < 16, r.stdout


@linux_only
def test_the_tmpfs_quota_is_exact_and_a_small_program_passes():
    sb = Sandbox(timeout_s=TIMEOUT, max_disk_mb=8)
    write = "with open('f', 'wb') as fh:\n    fh.write(b'x' * ({} << 20))\n"
    r = run(sb, write.format(7), "import os\nassert os.path.getsize('f') >> 20 == 7")
    assert r.status == "passed", r
    assert r.details["isolation"]["disk_tmpfs"] is True
    r = run(sb, write.format(9))  # ENOSPC: the harness reports the quota, not the OSError
    assert r.status == "disk_quota", r
    caught = f"try:\n{textwrap.indent(write.format(9), '    ')}except OSError:\n    pass\n"
    r = run(sb, caught + "import time\ntime.sleep(2)")
    assert r.status == "disk_quota" and r.duration_s < 1.5, r  # killed by the parent's check, not the clock


# ---------------------------------------------------------------------------------------- item 4: sockets

CONNECT = """
import socket
out = {}
for name, kind, path in ROUTES:
    try:
        if name == "socket":
            s = socket.socket(socket.AF_UNIX, kind)
            s.connect(path)
            s.send(b"escaped")
        else:  # a socket pair (allowed, asyncio needs one) re-aimed at an outside address
            s, _ = socket.socketpair(socket.AF_UNIX, kind)
            s.sendto(b"escaped", path)
        out[name + str(int(kind))] = "connected"
    except OSError as exc:
        out[name + str(int(kind))] = exc.errno
for family in ("AF_NETLINK", "AF_PACKET", "AF_INET"):
    try:
        socket.socket(getattr(socket, family), socket.SOCK_DGRAM)
        out[family] = "created"
    except OSError as exc:
        out[family] = exc.errno
print(repr(out))
"""

SOCKET_LAYERS = {
    "all_layers": {},
    "seccomp_only": {"landlock": False, "network_namespace": False, "tmpfs": False},
}


@linux_only
@pytest.mark.parametrize("layers", sorted(SOCKET_LAYERS))
def test_unix_sockets_outside_are_unreachable_with_the_audit_hook_off(layers, tmp_path):
    stream_path, dgram_path = str(tmp_path / "stream.sock"), str(tmp_path / "dgram.sock")
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        stream.bind(stream_path)
        stream.listen(4)
        dgram.bind(dgram_path)
        os.chmod(tmp_path, 0o755)
        routes = [
            ("socket", socket.SOCK_STREAM, stream_path),
            ("socket", socket.SOCK_DGRAM, dgram_path),
            ("pair", socket.SOCK_DGRAM, dgram_path),
        ]
        program = HOOK_OFF + f"ROUTES = {[(n, int(k), p) for n, k, p in routes]!r}\n" + CONNECT
        r = run(Sandbox(timeout_s=TIMEOUT, **SOCKET_LAYERS[layers]), program)
        assert r.status == "passed", r
        out = program_output(r)
        assert "connected" not in out.values() and "created" not in out.values(), out
        stream.setblocking(False)
        dgram.setblocking(False)
        with pytest.raises(BlockingIOError):
            stream.accept()
        with pytest.raises(BlockingIOError):
            dgram.recv(100)
    finally:
        stream.close()
        dgram.close()


@linux_only
def test_socketpair_and_asyncio_still_work_under_the_kernel_filter():
    program = """
    import asyncio, socket
    a, b = socket.socketpair()
    a.send(b"ping")
    got = b.recv(4)
    async def main():
        await asyncio.sleep(0)
        return 7
    value = asyncio.run(main())
    """
    r = run(Sandbox(timeout_s=TIMEOUT), program, "assert got == b'ping' and value == 7")
    assert r.status == "passed", r
    assert r.details["isolation"]["seccomp"] is True


@linux_only
def test_kernel_filter_refuses_process_creation_and_signals_with_the_hook_off():
    program = HOOK_OFF + """
import os, signal
out = {}
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    out["fork"] = "forked"
except OSError as exc:
    out["fork"] = exc.errno
try:
    os.kill(os.getppid(), 0)
    out["kill"] = "signalled"
except OSError as exc:
    out["kill"] = exc.errno
import threading
t = threading.Thread(target=lambda: None)
t.start()
t.join()
out["thread"] = "ok"
print(repr(out))
"""
    r = run(Sandbox(timeout_s=TIMEOUT, landlock=False, network_namespace=False), program)
    assert r.status == "passed", r
    assert program_output(r) == {"fork": 1, "kill": 1, "thread": "ok"}


def bpf_run(program: bytes, arch: int, nr: int, args=()) -> int:
    """What a classic-BPF seccomp program returns for one system call (the instructions `_seccomp_filter` uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *[(a & (2**64 - 1)) for a in [*args, 0, 0, 0, 0, 0, 0][:6]])
    code = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == 0x54:
            acc &= k
        elif op == 0x06:
            return k
        elif op in (0x15, 0x35, 0x45):
            pc += jt if (acc == k if op == 0x15 else acc >= k if op == 0x35 else acc & k) else jf
        else:
            raise AssertionError(f"unexpected instruction {op:#x}")


@pytest.mark.parametrize("machine", sorted(sandbox_module._SECCOMP_SYSCALLS))
def test_the_seccomp_program_decides_as_documented(machine):
    # Runs everywhere (no kernel needed): the filter's decisions, read off the program itself.
    arch, nr = sandbox_module._SECCOMP_SYSCALLS[machine]
    allow, eperm, enosys = 0x7FFF0000, 0x00050001, 0x00050026
    pid = 4242
    program = sandbox_module._seccomp_filter(pid, machine)

    def decide(name, *args):
        return bpf_run(program, arch, nr[name], args)

    assert bpf_run(program, arch, 63, ()) == allow  # anything unlisted (read on arm64, uname on x86-64)
    assert decide("socket", socket.AF_UNIX, 1, 0) == eperm and decide("connect", 3, 0x1000, 110) == eperm
    assert decide("sendto", 3, 0x1000, 4, 0, 0, 0) == allow and decide("sendto", 3, 0x1000, 4, 0, 0x2000, 16) == eperm
    assert decide("sendto", 3, 0x1000, 4, 0, 1 << 40, 16) == eperm  # an address above 4 GiB
    thread = 0x3D0F00  # glibc's pthread_create flags (CLONE_VM | ... | CLONE_THREAD | ...)
    assert decide("clone", thread) == allow and decide("clone", 0x01200011) == eperm  # fork()'s flags
    assert decide("clone", thread | 0x10000000) == eperm and decide("clone3", 0x1000, 88) == enosys
    assert decide("kill", pid, 0) == allow and decide("kill", pid + 1, 9) == eperm and decide("kill", -1, 9) == eperm
    assert decide("tgkill", pid, pid + 1, 10) == allow and decide("tgkill", 1, 1, 9) == eperm
    assert decide("mknodat", -100, 0x1000, stat.S_IFCHR | 0o600, 0x10B) == eperm
    assert decide("mknodat", -100, 0x1000, stat.S_IFBLK | 0o600, 0x700) == eperm
    assert decide("mknodat", -100, 0x1000, stat.S_IFIFO | 0o600, 0) == allow
    assert decide("ioctl", 3, FS_IOC_SETFLAGS, 0x1000) == eperm and decide("ioctl", 3, 0x541B, 0x1000) == allow
    for name in ("ptrace", "unshare", "mount", "io_uring_setup", "memfd_create", "execve", "pidfd_open", "bpf"):
        assert decide(name) == eperm, name
    assert bpf_run(program, 0x40000003, 102, ()) == eperm  # i386 (socketcall) on x86-64: another arch value
    if machine == "x86_64":
        assert decide("fork") == eperm and decide("mknod", 0x1000, stat.S_IFCHR | 0o600, 0x10B) == eperm
        assert bpf_run(program, arch, 0x40000000 | 41, ()) == eperm  # x32 socket()
    assert sandbox_module._seccomp_filter(pid, "sparc") is None


def test_tests_that_import_os_or_signal_are_not_tampering():
    # The harness replaces os.pidfd_open and signal.pidfd_send_signal by refusing stubs; its snapshot of the modules
    # the tests import used to be taken before, so every program was "tampered" when the tests imported os.
    sb = Sandbox(timeout_s=TIMEOUT)
    r = run(sb, "def f():\n    return 1", "import os, signal\nassert f() == 1")
    assert r.status == "passed", r
    r = run(sb, "import os\nos.pidfd_open = lambda *a: 0\ndef f():\n    return 1", "import os\nassert f() == 1")
    assert r.status == "tampered", r


# ---------------------------------------------------------------------------------------- item 5: as user nobody


@needs_root
@linux_only
def test_the_attacks_fail_for_an_unprivileged_sandbox_user(world_dir):
    if not (os.path.exists(SYSTEM_PYTHON) and nobody_can_run(SYSTEM_PYTHON)):
        pytest.skip("as root this needs an interpreter that user nobody can run")
    sb = Sandbox(timeout_s=TIMEOUT, user="nobody", python_executable=SYSTEM_PYTHON, max_disk_mb=64)
    r = run(sb, "import os\nids = (os.geteuid(), os.getuid())", "assert ids[0] != 0 and ids[1] != 0")
    assert r.status == "passed", r
    out = program_output(run(sb, MKNOD))
    assert out["created"] is False and out["read"] == 0 and "block_created" not in out, out
    assert program_output(run(sb, IMMUTABLE)) == {"stuck": 1, "appendonly": 1}
    assert run(sb, DELETED_BUT_OPEN).status == "disk_quota"
    r = run(sb, DEEP_TREE, "assert f() == 1")
    assert r.status == "passed" and run_folders(sb) == [] and sb.cleanup_failures == 0, r
    path = os.path.join(world_dir, "stream.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen(1)
        program = HOOK_OFF + f"ROUTES = [('socket', 1, {path!r})]\n" + CONNECT
        out = program_output(run(sb, program))
        assert "connected" not in out.values() and "created" not in out.values(), out
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
