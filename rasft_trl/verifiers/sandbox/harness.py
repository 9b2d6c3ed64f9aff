"""The harness: what runs in the sandboxed child, before and around the untrusted program.

The child starts with `_BOOTSTRAP` (`python -I -S -B -c _BOOTSTRAP`), which reads the job from stdin and runs the
harness: `_harness_main`, with `_rewrite_asserts` and the kernel layers' `_isolate` (`isolation.py`). The harness comes
as source (`_harness_source`: `inspect.getsource` of those three functions) or, when the child runs the trainer's own
interpreter, as that source compiled once and marshalled (`_harness_code`). Everything shipped must therefore be
self-contained: imports inside the functions, no annotations, and nothing of this package but each other. In the
child, in order: stdin becomes `/dev/null`, the resource limits (`RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_FSIZE`,
`RLIMIT_CORE`, `RLIMIT_NOFILE`, `RLIMIT_NPROC`), the kernel layers, the tests' modules imported, the audit hook
(PEP 578, irremovable), the program, the tampering checks, the tests, and the report on the result channel.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Memory.** `RLIMIT_AS` (`memory_mb`): a 10 GB allocation fails inside the sandbox with
  `MemoryError` (`"memory"`); unbounded recursion ends the child only.
- **Processes.** Process creation (`os.fork`, `subprocess`, `os.system`, `os.exec*`, `posix_spawn`,
  `pty`, multiprocessing, `_posixsubprocess`, `ctypes`' `fork`) is refused by an audit hook (PEP 578;
  it cannot be removed from Python code), by the kernel's system-call filter (seccomp, `seccomp=True`:
  `fork`, `vfork`, `clone` without `CLONE_THREAD`, `execve`; threads stay allowed), Landlock (where
  available) denies `execve`, and the process group is killed at the end. `RLIMIT_NPROC` (`max_processes`
  more tasks than the user already has; exactly `max_processes` more inside a user namespace) is a further
  layer for non-root users only: **as root the kernel does not enforce `RLIMIT_NPROC`**, so there the
  guarantee rests on the audit hook, the filter and the group kill (threads are not limited), unless the
  sandbox drops to another user (`user="nobody"`).
- **Signals.** `os.kill`, `os.killpg`, `signal.pthread_kill` and pidfd signalling are refused by the
  hook; the filter lets `kill`/`tgkill`/`rt_*sigqueueinfo` reach the program's own pid only and refuses
  `tkill` and pidfds, and with Landlock ABI >= 6 the kernel also refuses signals to any process outside
  the sandbox: the program cannot kill the trainer.
- **Proof of completion.** A run passes only if the harness writes a per-run random nonce, followed by
  its verdict, to the result channel *after the last test ran*. The exit status is never trusted:
  `sys.exit(0)`, `os._exit(0)`, `raise SystemExit`, `atexit` hooks or a thread calling `os._exit`
  before the end are `"early_exit"`, and fake reports without the nonce are ignored. After its report
  the harness calls `os._exit`, so threads that outlive the tests neither keep the sandbox alive nor
  change the verdict.
- **Tampering.** Tests run in their own namespace with a copy of the builtins taken before the
  program ran; `assert` raises the interpreter's own `AssertionError` whatever the program rebinds.
  `sys.settrace`/`sys.setprofile` (also from threads), `gc` object walks, `sys._current_frames`, new
  audit hooks, `resource.setrlimit`, `ctypes` symbol look-ups and `from_address`, and loading a
  library the program wrote are refused. Changes the program made to the `builtins` module or to the
  modules the tests import (`math.isclose = ...`, a fake `sys.modules["math"]`) are detected before
  the tests run. With `strict_asserts=True`, a comparison or truth test in an `assert` between an
  object whose `__eq__`/`__lt__`/`__contains__`/`__bool__`/... is defined by the program and a
  built-in value (the "always-equal object" hack, also nested in lists) fails. Tampering ends as
  `"tampered"`; any refused operation as `"sandbox_violation"`, even if the program caught the error.

The audit hook also refuses writes and reads outside the allowed places (see "Filesystem writes" in `isolation.py`
and "Filesystem reads" in `policy.py`) and sockets other than `AF_UNIX` (see "Network and other sockets" in
`seccomp.py`).

Not covered:

- A program that introspects the harness (walks `sys._getframe().f_back`, or the frames of a caught
  exception's traceback, up to the harness and reads or changes its locals) can read the nonce and
  forge a pass. Frames cannot be hidden without breaking `collections.namedtuple`, `enum`, `logging`
  and `traceback`, which read them. `ctypes` stays importable (sympy needs it) and its pointers can
  read and write the process's memory; crafted bytecode (`types.CodeType`, `marshal`; asyncio needs
  `code.replace`) can corrupt the interpreter. Either can switch the in-process guards off (so can
  replacing the handlers in the harness's frame, `sys._getframe(1).f_locals["handlers"]`: the tests use
  this to show what the kernel layers hold on their own). The in-process guards are a tripwire against
  reward hacking, not a security boundary; the OS limits, the capabilities dropped, the system-call
  filter, the group kill, the namespaces, the tmpfs and Landlock are.
- Comparisons laundered through arithmetic (`abs(x - y) < eps` with a program-defined `__sub__`),
  module attributes patched *while* the tests run, and the tests' own (trusted) code are not checked.
"""

from __future__ import annotations

import inspect
import marshal

from .isolation import _isolate

# The child runs `_BOOTSTRAP`: it reads the job (marshalled data) from stdin, then runs the harness, which
# comes as a marshalled code object (same interpreter; compiling the harness would cost ~15 ms per run) or
# as source. The harness gets a private copy of the builtins, so that a program patching the `builtins`
# module cannot change what the harness calls. Nothing stays in `__main__`'s globals but `_b`.
_BOOTSTRAP = """\
def _b():
    import builtins, marshal, os, sys
    if sys.platform.startswith("linux"):  # die with the trainer (PR_SET_PDEATHSIG = 1, SIGKILL = 9)
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)
        if os.getppid() == 1:  # the trainer died before prctl
            os._exit(1)
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    job = marshal.loads(b"".join(chunks))
    del chunks
    harness = job.pop("harness")
    code = marshal.loads(harness) if isinstance(harness, bytes) else compile(harness, "<rasft-harness>", "exec")
    namespace = {"__builtins__": dict(builtins.__dict__), "__name__": "__rasft_harness__"}
    exec(code, namespace)
    namespace.pop("_harness_main")(job)
_b()
"""

_HARNESS_SOURCE: str | None = None
_HARNESS_CODE: bytes | None = None


def _harness_source() -> str:
    global _HARNESS_SOURCE
    if _HARNESS_SOURCE is None:
        _HARNESS_SOURCE = "\n\n".join(inspect.getsource(fn) for fn in (_rewrite_asserts, _isolate, _harness_main))
    return _HARNESS_SOURCE


def _harness_code() -> bytes:
    global _HARNESS_CODE
    if _HARNESS_CODE is None:
        _HARNESS_CODE = marshal.dumps(compile(_harness_source(), "<rasft-harness>", "exec", dont_inherit=True))
    return _HARNESS_CODE


def _rewrite_asserts(tree):
    """`assert t` -> `assert __rasft_truth__(t')`, where t' has `a <op> b` -> `__rasft_cmp__("<Op>", a, b)`.

    The helpers (defined by the harness) refuse comparisons between a program-defined object and a
    built-in value. Chained comparisons and `is` / `is not` (which cannot be overloaded) are left alone.
    Self-contained: it is also shipped to the child when the child runs another interpreter.
    """
    import ast

    class WrapCompares(ast.NodeTransformer):
        def visit_Compare(self, node):
            self.generic_visit(node)
            if len(node.ops) != 1 or isinstance(node.ops[0], (ast.Is, ast.IsNot)):
                return node
            op = ast.Constant(type(node.ops[0]).__name__)
            return ast.Call(ast.Name("__rasft_cmp__", ast.Load()), [op, node.left, node.comparators[0]], [])

    class StrictAsserts(ast.NodeTransformer):
        def visit_Assert(self, node):
            node.test = ast.Call(ast.Name("__rasft_truth__", ast.Load()), [WrapCompares().visit(node.test)], [])
            return node

    return ast.fix_missing_locations(StrictAsserts().visit(tree))


# --------------------------------------------------------------------------------------------------
# Everything below runs in the child, before and around the untrusted program. It must be
# self-contained (it is shipped as source) and must not call anything the program can patch after the
# program started: module functions are bound to locals first, builtins come from a private copy.
# --------------------------------------------------------------------------------------------------


def _harness_main(job):  # pragma: no cover - executed in the sandboxed child
    import _functools
    import builtins
    import marshal
    import os
    import resource
    import sys

    # ---- 0. stdin (from which the bootstrap read the job) becomes /dev/null
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    sys.argv = [""]
    nonce = job.pop("nonce").encode("ascii")
    chan = job["channel_fd"]
    tmpdir = job["tmpdir"]
    module_name = job["module_name"]
    entry_point = job["entry_point"]
    sys.path.extend(job["site_dirs"])

    # Everything used after the program starts is bound here.
    write, exit_now, fstat, getcwd, readlink, fspath = os.write, os._exit, os.fstat, os.getcwd, os.readlink, os.fspath
    statvfs = os.statvfs
    gettrace, getprofile, settrace, setprofile = sys.gettrace, sys.getprofile, sys.settrace, sys.setprofile
    exact_str = str.__str__
    OrigAssertionError = AssertionError
    stdout, stderr = sys.stdout, sys.stderr
    chan_stat = fstat(chan)
    chan_id = (chan_stat.st_dev, chan_stat.st_ino)
    violations = []
    tamper_notes = []
    isolation = {
        "landlock_abi": 0,
        "landlock_reads": False,
        "network_namespace": False,
        "disk_tmpfs": False,
        "capabilities_dropped": False,
        "seccomp": False,
        "nproc_limit": None,
    }

    def text(value, limit=1500):
        if not isinstance(value, str):
            return "<not a string>"
        value = exact_str(value)
        return value if len(value) <= limit else value[:limit] + "...[truncated]"

    def report(status, info):
        """Write nonce + verdict to the channel and end the process at once (threads die with it)."""
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # a closed or broken pipe must not prevent the report
                write(2, b"rasft-harness: could not flush an output stream\n")
        info["isolation"] = isolation
        if violations:
            info["violations"] = violations[:20]
        if tamper_notes:
            info["tampering"] = tamper_notes[:20]
        body = repr((status, info)).encode("utf-8", "backslashreplace")
        if len(body) > 3500:  # pipe writes up to PIPE_BUF (4096) bytes are atomic
            body = repr((status, {"isolation": isolation, "message": "report truncated"})).encode()
        try:
            st = fstat(chan)
            if (st.st_dev, st.st_ino) == chan_id:  # the program may have closed and reused the fd
                write(chan, nonce + b" " + body + b"\n")
        finally:
            exit_now(0)

    # ---- 1. resource limits
    def limit(res, soft, hard=None):
        hard = soft if hard is None else hard
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    limit(resource.RLIMIT_CPU, job["cpu_time_s"], job["cpu_time_s"] + 1)
    limit(resource.RLIMIT_AS, job["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, job["max_file_bytes"])
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, job["max_open_files"])
    linux = sys.platform.startswith("linux")
    if linux and os.getuid() != 0:  # RLIMIT_NPROC counts every task of the user; not enforced for root
        uid, tasks = os.getuid(), 0
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat("/proc/" + name).st_uid == uid:
                        tasks += len(os.listdir("/proc/" + name + "/task"))
                except (FileNotFoundError, PermissionError, ProcessLookupError):
                    continue  # the process ended while we counted, or is hidden from us
        isolation["nproc_limit"] = tasks + job["max_processes"]
        limit(resource.RLIMIT_NPROC, isolation["nproc_limit"])

    # ---- 2. kernel isolation, best effort: namespaces, tmpfs, Landlock, no capabilities, system-call filter
    # What the program may read (None: anything): its folder, the interpreter's own files (every directory
    # on sys.path: the standard library, lib-dynload, site-packages), the system's shared libraries, and the
    # caller's read_paths. Both spellings of a symlinked root count for the audit hook; Landlock resolves.
    read_roots = None
    if job["confine_reads"]:
        read_roots = []
        for path in [*sys.path, *job["read_paths"]]:
            if isinstance(path, str) and path.startswith("/") and os.path.exists(path):
                for spelling in (os.path.normpath(path), os.path.realpath(path)):
                    if spelling != "/" and spelling not in read_roots:
                        read_roots.append(spelling)
    if linux:
        _isolate(job, isolation, read_roots, limit)

    # ---- 3. the trusted tests, analysed and compiled by the parent; pre-import their modules
    def fail_tests(message):
        report("test_error", {"message": text(message)})

    meta = job["tests_meta"]
    test_functions, test_classes, test_modules = meta["functions"], meta["classes"], meta["modules"]
    defines_check, calls_check = meta["defines_check"], meta["calls_check"]
    if job["tests_code"] is not None:  # same interpreter as the parent: a marshalled code object
        tests_code = marshal.loads(job["tests_code"])
    else:  # another interpreter: rewrite and compile here
        import ast

        tests_tree = ast.parse(job["tests_source"], "<tests>")
        if job["strict_asserts"]:
            tests_tree = _rewrite_asserts(tests_tree)
        tests_code = compile(tests_tree, "<tests>", "exec", dont_inherit=True)
    tests_lines = job["tests_source"].splitlines()

    guarded = {}
    for name in test_modules:
        if name == module_name or name.startswith(module_name + "."):
            continue
        try:
            __import__(name)
        except ImportError as exc:
            fail_tests(f"the tests import {name!r}, which is not available in the sandbox: {exc}")
        guarded[name] = sys.modules[name]
    guarded.pop("sys", None)  # programs legitimately touch sys (setrecursionlimit, stdout wrappers)
    if "exit" not in builtins.__dict__:  # -S skips site, which defines exit()/quit()
        import _sitebuiltins

        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    pristine_builtins = dict(builtins.__dict__)
    real_builtins_dict = builtins.__dict__

    # ---- 4. the audit hook (irremovable): processes, signals, network, writes outside tmpdir, introspection
    import _posixsubprocess
    import _signal  # `signal` copies its functions from `_signal` when it is imported

    def refuse(event, detail=""):
        violations.append(text(f"{event} {detail}".strip(), 300))
        raise PermissionError(f"sandbox: {event} is not allowed")

    settrace(None)
    setprofile(None)
    preloaded = frozenset(sys.modules)
    root = tmpdir.rstrip("/") or "/"
    o_path = getattr(os, "O_PATH", 0)
    # (exact paths, prefixes) the audit hook lets the program read; None: reads are not confined
    read_prefixes = None
    if read_roots is not None:
        readable = [root, *read_roots]
        read_prefixes = (frozenset(readable), tuple(path.rstrip("/") + "/" for path in readable))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    af_unix = 1
    writable_devices = ("/dev/null", "/dev/stdout", "/dev/stderr")

    def absolute(path, dir_fd=None):
        """Lexically normalised absolute path (no symlinks can exist in tmpdir: links are refused)."""
        if isinstance(path, int):
            try:
                return readlink(f"/proc/self/fd/{path:d}")
            except OSError:
                return ""
        if isinstance(path, bytes):
            path = bytes.decode(path, "utf-8", "surrogateescape")
        elif not isinstance(path, str):
            path = fspath(path)
            if isinstance(path, bytes):
                path = bytes.decode(path, "utf-8", "surrogateescape")
        path = exact_str(path)
        if not path.startswith("/"):
            if dir_fd is not None and dir_fd >= 0:
                base = absolute(dir_fd)
            else:
                base = getcwd()
            path = base + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    def inside(path, dir_fd=None):
        p = absolute(path, dir_fd)
        return p == root or p.startswith(root + "/")

    def check_write(event, path, dir_fd=None):
        if not inside(path, dir_fd):
            refuse(event, absolute(path, dir_fd))

    def on_open(args):
        path, mode, flags = args[0], args[1], args[2]
        if isinstance(path, int):
            return  # wrapping an already-open descriptor
        writing = (isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
            isinstance(flags, int) and flags & write_flags
        )
        p = absolute(path)
        if writing:
            if p not in writable_devices and not (p == root or p.startswith(root + "/")):
                refuse("open for writing", p)
        elif p.startswith("/proc/"):
            owner = p.split("/")[2]
            if owner in ("self", "thread-self") or owner.isdigit():
                refuse("open", p)  # /proc/self/mem, /proc/<pid>/... : the harness's memory and fds
            check_read("open for reading", p)
        elif not (isinstance(flags, int) and flags & o_path):  # O_PATH opens give no access to the contents
            check_read("open for reading", p)

    def check_read(event, p):
        if read_prefixes is not None and p not in read_prefixes[0] and not p.startswith(read_prefixes[1]):
            refuse(event, p)

    def on_list(args):
        path = args[0] if args else None
        check_read("list", absolute("." if path is None else path))

    def on_path(event, dir_fd_at):
        def handler(args):
            dir_fd = args[dir_fd_at] if dir_fd_at is not None and len(args) > dir_fd_at else None
            check_write(event, args[0], dir_fd if isinstance(dir_fd, int) else None)

        return handler

    def on_two_paths(event):
        def handler(args):
            src_fd = args[2] if len(args) > 2 else None
            dst_fd = args[3] if len(args) > 3 else None
            check_write(event, args[0], src_fd)
            check_write(event, args[1], dst_fd)

        return handler

    def on_refuse(event):
        def handler(args):
            refuse(event)

        return handler

    def on_socket_new(args):
        if args[1] != af_unix:
            refuse("socket", f"family {args[1]!r}")

    def on_import(args):
        if args[0] in preloaded:  # a module that was loaded before is being re-imported: sys.modules tampering
            refuse("re-import", args[0])

    def on_dlopen(args):
        # ctypes stays importable (sympy needs it); a library the program wrote itself would run native code.
        name = args[0]
        if isinstance(name, bytes):
            name = bytes.decode(name, "utf-8", "surrogateescape")
        if isinstance(name, str) and "/" in name and inside(name):
            refuse("ctypes.dlopen", name)

    handlers = {"open": on_open, "import": on_import, "socket.__new__": on_socket_new, "ctypes.dlopen": on_dlopen,
                "os.listdir": on_list, "os.scandir": on_list}
    # (event, position of its dir_fd argument) as raised by CPython 3.10-3.13
    for event, dir_fd_at in (
        ("os.remove", 1),
        ("os.rmdir", 1),
        ("os.mkdir", 2),
        ("os.chmod", 2),
        ("os.chown", 3),
        ("os.utime", 3),
        ("os.truncate", None),
        ("os.setxattr", None),
        ("os.removexattr", None),
        ("os.mkfifo", 2),
        ("os.mknod", 3),
        ("os.chdir", None),
        ("os.chflags", None),
        ("os.lchflags", None),
        ("shutil.rmtree", 1),
    ):
        handlers[event] = on_path(event, dir_fd_at)
    for event in ("os.rename", "os.link"):
        handlers[event] = on_two_paths(event)
    for event in (
        "os.symlink",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.exec",
        "os.system",
        "os.spawn",
        "os.kill",
        "os.killpg",
        "os.chroot",
        "os.setns",
        "os.unshare",
        "signal.pthread_kill",
        "subprocess.Popen",
        "pty.spawn",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys.addaudithook",
        "sys.monitoring.register_callback",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "resource.setrlimit",
        "resource.prlimit",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
    ):
        handlers[event] = on_refuse(event)
    handlers_get = handlers.get

    def audit_hook(event, args):
        handler = handlers_get(event)
        if handler is not None:
            handler(args)
        elif event.startswith("socket."):
            refuse(event)  # connect, bind, sendto, sendmsg, name resolution

    def refuse_stub(name):
        # A C-level callable that raises the audit event `name` (refused below). Not a Python function:
        # its __globals__ would hand the program the harness's private builtins.
        handlers[name] = on_refuse(name)
        return _functools.partial(sys.audit, name)

    # Process creation and signalling that do not raise audit events of their own.
    _posixsubprocess.fork_exec = refuse_stub("_posixsubprocess.fork_exec")
    holders = [(os, "pidfd_open"), (_signal, "pidfd_send_signal")]
    if "signal" in sys.modules:
        holders.append((sys.modules["signal"], "pidfd_send_signal"))
    for holder, attr in holders:
        if hasattr(holder, attr):
            setattr(holder, attr, refuse_stub(f"{holder.__name__}.{attr}"))
    # Taken after the stubs replaced os.pidfd_open & co., or tests that import os or signal would find them "changed".
    guarded_snapshot = {name: dict(mod.__dict__) for name, mod in guarded.items()}
    sys.addaudithook(audit_hook)

    # ---- 5. strict-assert helpers
    plain_scalars = (int, float, complex, str, bytes, bool, type(None))
    compare_dunders = (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__contains__",
        "__bool__",
        "__len__",
    )
    compare_ops = {
        "Eq": lambda a, b: a == b,
        "NotEq": lambda a, b: a != b,
        "Lt": lambda a, b: a < b,
        "LtE": lambda a, b: a <= b,
        "Gt": lambda a, b: a > b,
        "GtE": lambda a, b: a >= b,
        "In": lambda a, b: a in b,
        "NotIn": lambda a, b: a not in b,
    }
    program_globals = [None]

    def program_defined(obj):
        for klass in type(obj).__mro__:
            namespace = klass.__dict__
            for dunder in compare_dunders:
                fn = namespace.get(dunder)
                if fn is None:
                    continue
                fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod
                if getattr(fn, "__globals__", None) is program_globals[0]:
                    return True
        return False

    def tainted(obj):
        stack, seen = [obj], 0
        while stack and seen < 10000:
            x = stack.pop()
            seen += 1
            if type(x) in plain_scalars:
                continue
            if program_defined(x):
                return True
            if isinstance(x, dict):
                stack.extend(dict.keys(x))
                stack.extend(dict.values(x))
            elif isinstance(x, list):
                stack.extend(list.__iter__(x))
            elif isinstance(x, tuple):
                stack.extend(tuple.__iter__(x))
            elif isinstance(x, frozenset):
                stack.extend(frozenset.__iter__(x))
            elif isinstance(x, set):
                stack.extend(set.__iter__(x))
        return False

    def strict_compare(op, a, b):
        if tainted(a) != tainted(b):
            note = (
                "assert compares a value of a class whose comparison is defined by the program with a built-in value"
            )
            tamper_notes.append(note)
            raise OrigAssertionError("sandbox: " + note)
        return compare_ops[op](a, b)

    def strict_truth(value):
        if type(value) is not bool and program_defined(value):
            note = "assert tests the truth of an object whose __bool__/__len__ is defined by the program"
            tamper_notes.append(note)
            raise OrigAssertionError("sandbox: " + note)
        return value

    # ---- 6. run the program as module `solution`
    def where(exc, filename):
        """Line of `filename` where `exc` was raised (innermost), with its source when known."""
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        info = {}
        if line is not None:
            info["line"] = line
            if filename == "<tests>" and 0 < line <= len(tests_lines):
                info["test"] = text(tests_lines[line - 1].strip(), 300)
        return info

    def describe(exc, filename):
        info = where(exc, filename)
        info["exception"] = text(type(exc).__name__, 100)
        try:
            if isinstance(exc, SyntaxError):
                info["message"] = text(f"{exc.msg} (line {exc.lineno})", 500)
            else:
                info["message"] = text(BaseException.__str__(exc), 500)
        except BaseException:  # a program-defined __str__ may raise anything; the verdict is already known
            info["message"] = "<unprintable>"
        return info

    def classify(exc, phase):
        if isinstance(exc, SystemExit):
            return "early_exit"
        if isinstance(exc, MemoryError):
            return "memory"
        if phase == "tests" and isinstance(exc, OrigAssertionError):
            return "assertion_failed"
        return "runtime_error"

    def over_disk_quota():
        """The folder's tmpfs holds more than max_disk_mb: it is sized to just exceed it, so this also catches a
        program that failed on ENOSPC, or keeps deleted files open."""
        try:
            fs = statvfs(tmpdir)
        except OSError:
            return False
        return (fs.f_blocks - fs.f_bfree) * fs.f_frsize > job["max_disk_bytes"] or fs.f_ffree == 0

    def finish(status, info):
        if violations:
            status = "sandbox_violation"
        elif tamper_notes:
            status = "tampered"
        elif isolation["disk_tmpfs"] and over_disk_quota():
            status = "disk_quota"
            info["limit_mb"] = job["max_disk_bytes"] // 2**20
        report(status, info)

    def check_untampered():
        for key, value in pristine_builtins.items():
            if real_builtins_dict.get(key, pristine_builtins) is not value:
                tamper_notes.append(text(f"builtins.{key} was changed by the program", 200))
        for name, snapshot in guarded_snapshot.items():
            mod = guarded[name]
            if sys.modules.get(name) is not mod:
                tamper_notes.append(text(f"sys.modules[{name!r}] was replaced by the program", 200))
                continue
            current = mod.__dict__
            for key, value in snapshot.items():
                if current.get(key, snapshot) is not value:
                    tamper_notes.append(text(f"{name}.{key} was changed by the program", 200))
        if gettrace() is not None or getprofile() is not None:
            tamper_notes.append("a trace or profile function is installed")

    module = type(sys)(module_name)
    module.__dict__["__builtins__"] = builtins
    sys.modules[module_name] = module
    program_globals[0] = module.__dict__
    write(chan, b"S")  # the program starts now (a harness that dies before this is a sandbox error)
    try:
        program_code = compile(job.pop("program"), "<solution>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        finish("syntax_error", describe(exc, "<solution>"))
    except BaseException as exc:  # MemoryError / RecursionError in the compiler
        finish(classify(exc, "program"), describe(exc, "<solution>"))
    try:
        exec(program_code, module.__dict__)
    except BaseException as exc:
        info = describe(exc, "<solution>")
        info["phase"] = "program"
        finish(classify(exc, "program"), info)
    check_untampered()
    if tamper_notes or violations:
        finish("tampered", {"phase": "program"})
    if entry_point is not None and entry_point not in module.__dict__:
        finish("missing_entry_point", {"message": text(f"the program does not define {entry_point!r}")})

    # ---- 7. the tests, in their own namespace with pristine builtins
    namespace = dict(module.__dict__)
    namespace.update(
        {
            "__builtins__": dict(pristine_builtins),
            "__name__": "__rasft_tests__",
            "__rasft_cmp__": strict_compare,
            "__rasft_truth__": strict_truth,
        }
    )
    current = "<module>"

    def parameter_sets(fn):
        """pytest.mark.parametrize expanded to keyword-argument dicts (cartesian product)."""
        sets = [{}]
        for mark in getattr(fn, "pytestmark", ()):
            if getattr(mark, "name", None) != "parametrize":
                continue
            names, values = mark.args[0], mark.args[1]
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",") if n.strip()]
            expanded = []
            for params in sets:
                for value in values:
                    if type(value).__name__ == "ParameterSet":
                        value = value.values
                    elif len(names) == 1:
                        value = (value,)
                    expanded.append({**params, **dict(zip(names, value))})
            sets = expanded
        return sets

    def call_test(target, label):
        """Call a test function or bound method once per parameter set; fixtures are not supported."""
        nonlocal current
        current = label
        fn = getattr(target, "__func__", target)
        code = fn.__code__
        skip = 1 if fn is not target else 0
        required = code.co_varnames[skip : code.co_argcount - len(fn.__defaults__ or ())]
        for kwargs in parameter_sets(fn):
            missing = [name for name in required if name not in kwargs]
            if missing:
                fail_tests(f"{label} needs pytest fixtures {missing}, which the sandbox does not provide")
            target(**kwargs)

    try:
        exec(tests_code, namespace)
        for name in test_functions:
            if callable(namespace.get(name)):
                call_test(namespace[name], name)
        for name in test_classes:
            cls = namespace.get(name)
            if isinstance(cls, type):
                for attr in list(vars(cls)):
                    if attr.startswith("test") and callable(getattr(cls, attr)):
                        instance = cls()
                        method = getattr(instance, attr)
                        if hasattr(instance, "setup_method"):
                            instance.setup_method(method)
                        call_test(method, f"{name}.{attr}")
                        if hasattr(instance, "teardown_method"):
                            instance.teardown_method(method)
        if entry_point is not None and defines_check and not calls_check and callable(namespace.get("check")):
            current = f"check({entry_point})"
            namespace["check"](namespace[entry_point])
    except BaseException as exc:
        info = describe(exc, "<tests>")
        info["phase"] = "tests"
        info["test_name"] = current
        finish(classify(exc, "tests"), info)
    if gettrace() is not None or getprofile() is not None:
        tamper_notes.append("a trace or profile function is installed")
    finish("passed", {})
