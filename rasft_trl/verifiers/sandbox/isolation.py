"""The kernel layers the sandboxed child applies to itself before the program starts (Linux, best effort).

`_isolate` runs in the child, called by the harness (`harness.py`) after the resource limits and before the tests are
loaded and the audit hook is installed; it is shipped to the child as source with the harness, so it must be
self-contained (its imports are inside it) and use no annotations. In order: a new network namespace and a private
mount namespace (as root directly, otherwise inside a new user namespace), the run's folder as a size-limited tmpfs
(see `quota.py`), Landlock, every capability dropped, and last the system-call filter built by the parent
(`seccomp.py`), which refuses the `unshare`, `mount` and `capset` calls the layers before it need. Each layer is best
effort: what was in effect is written into `details["isolation"]`.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Privileges.** A run as root (the default `user=None` when training as root) drops every capability
  (effective, permitted, inheritable, ambient and the bounding set) before the program starts: it is
  uid 0 in name only. It cannot make device nodes (`CAP_MKNOD`), immutable or append-only files
  (`CAP_LINUX_IMMUTABLE`), mounts, raw sockets, nor bypass file permissions (files of other users
  are judged by their mode bits) or signal other users' processes (`details["isolation"]
  ["capabilities_dropped"]`). The filter also refuses `mknod`/`mknodat` of character and block devices,
  the `ioctl`s that set inode flags (`FS_IOC_SETFLAGS`, `FS_IOC_FSSETXATTR`), `ptrace`,
  `process_vm_readv/writev`, `unshare`, `setns`, mounts, keyrings, `bpf`, `perf_event_open`, `userfaultfd`
  and `memfd_create`.
- **Filesystem writes.** The child runs in a fresh temporary directory, removed afterwards. Writes,
  deletions, renames, `chmod`, links and `mkdir` outside it (except `/dev/null`) are refused by the
  audit hook and, where Landlock is available (Linux >= 5.13), by the kernel, which also covers
  `dir_fd`, symlinks and any other route; Landlock refuses device nodes even inside it (`MAKE_CHAR`,
  `MAKE_BLOCK` are handled and granted nowhere). `RLIMIT_FSIZE` (`max_file_mb`) caps file sizes; `RLIMIT_CORE`
  is 0. Opening `/proc/self/*` (the harness's memory and descriptors) is refused.

Landlock also enforces the read policy of `policy.py` ("Filesystem reads"), denies `execve`, TCP `bind`/`connect`
(ABI >= 4) and, with ABI >= 6, abstract Unix sockets and signals outside the sandbox.

Not covered:

- Without Landlock: writes through `os.open(..., dir_fd=...)` or a `PathLike` that changes its value
  between calls are not seen by the audit hook, and `execve` is only stopped by the hook and the filter.
  Without Landlock ABI >= 6 and without the filter (an architecture other than x86-64 and arm64, or a kernel
  without seccomp: `details["isolation"]["seccomp"]`), signals are only stopped by the hook.
"""


def _isolate(job, isolation, read_roots, limit):  # pragma: no cover - executed in the sandboxed child
    """Apply the kernel layers to this process; records what took effect in `isolation`. `read_roots`: what the
    program may read (None: anything); `limit(resource, soft)`: the harness's `setrlimit` helper (the user namespace
    makes `RLIMIT_NPROC` exact)."""
    import ctypes
    import os
    import resource
    import struct

    tmpdir = job["tmpdir"]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # 2a. A new network namespace (no interface but a loopback that is down) and a private mount namespace; as
    # root directly, otherwise inside a new user namespace (which gives this process capabilities there only).
    clone_newnet, clone_newns, clone_newuser = 0x40000000, 0x00020000, 0x10000000
    wanted = (clone_newnet if job["network_namespace"] else 0) | (clone_newns if job["tmpfs"] else 0)
    missing = 0
    for flag in (clone_newnet, clone_newns):
        if wanted & flag and libc.unshare(flag) != 0:
            missing |= flag
    if missing:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(clone_newuser | missing) == 0:
            # Map our own ids into the new user namespace, or files cannot be created (EOVERFLOW).
            for path, line in (
                ("/proc/self/setgroups", "deny"),
                ("/proc/self/uid_map", f"{uid} {uid} 1"),
                ("/proc/self/gid_map", f"{gid} {gid} 1"),
            ):
                with open(path, "w") as fh:
                    fh.write(line)
            if isolation["nproc_limit"] is not None:
                # Tasks are now counted per user namespace: our own count starts at 1, so the limit
                # becomes exact for this run (the outer limit still applies to the outer count).
                isolation["nproc_limit"] = 1 + job["max_processes"]
                limit(resource.RLIMIT_NPROC, isolation["nproc_limit"])
        else:
            wanted &= ~missing
    isolation["network_namespace"] = bool(wanted & clone_newnet)
    # 2b. The folder becomes a tmpfs of max_disk_mb (+ 4 KiB, so that "full" means "over the quota") and one inode
    # per 4 KiB, without devices, set-uid or executables; mounts stay private to this namespace.
    if wanted & clone_newns:
        quota = job["max_disk_bytes"]
        options = f"size={quota + 4096},nr_inodes={quota // 4096 + 2},mode=0700"
        options += f",uid={os.getuid()},gid={os.getgid()}"
        ms_nosuid, ms_nodev, ms_noexec, ms_rec, ms_private = 2, 4, 8, 0x4000, 0x40000
        if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) == 0 and libc.mount(
            b"tmpfs", os.fsencode(tmpdir), b"tmpfs", ms_nosuid | ms_nodev | ms_noexec, options.encode()
        ) == 0:
            os.chdir(tmpdir)  # the old working directory is the folder under the mount
            isolation["disk_tmpfs"] = True
    # 2c. Landlock: writes only in the folder (no device nodes even there), reads where read_roots allow, no
    # execve, no TCP, no abstract Unix sockets or signals outside the sandbox (by ABI).
    if job["landlock"]:
        abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
        if abi >= 1:
            write_bits = 0
            for bit in (
                (1, 4, 5, 6, 7, 8, 9, 10, 11, 12) + ((13,) if abi >= 2 else ()) + ((14,) if abi >= 3 else ())
            ):
                write_bits |= 1 << bit  # WRITE_FILE, REMOVE_*, MAKE_*, REFER, TRUNCATE
            make_devices = (1 << 6) | (1 << 11)  # MAKE_CHAR, MAKE_BLOCK: handled, granted nowhere
            read_file, read_dir = 1 << 2, 1 << 3
            read_bits = (read_file | read_dir) if read_roots is not None else 0
            handled_fs = write_bits | read_bits | 1  # | EXECUTE, allowed nowhere: no execve
            if abi >= 6:
                attr = struct.pack("=QQQ", handled_fs, 3, 3)  # deny TCP bind+connect; scope unix+signals
            elif abi >= 4:
                attr = struct.pack("=QQ", handled_fs, 3)
            else:
                attr = struct.pack("=Q", handled_fs)
            ruleset = libc.syscall(444, ctypes.c_char_p(attr), len(attr), 0)
            ok = ruleset >= 0
            rules = [
                (tmpdir, (write_bits & ~make_devices) | read_bits),
                (os.devnull, (1 << 1) | ((1 << 14) if abi >= 3 else 0)),
            ]
            for path in read_roots or ():
                rules.append((path, read_bits if os.path.isdir(path) else read_file))
            for path, bits in rules:
                if not ok:
                    break
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # a read root that vanished: one place less to read
                rule = struct.pack("=Qi", bits, pfd)
                ok = libc.syscall(445, ruleset, 1, ctypes.c_char_p(rule), 0) == 0  # add_rule(PATH_BENEATH)
                os.close(pfd)
            if ok and libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
                ok = libc.syscall(446, ruleset, 0) == 0  # landlock_restrict_self
                if ok:
                    isolation["landlock_abi"] = int(abi)
                    isolation["landlock_reads"] = read_roots is not None
            if ruleset >= 0:
                os.close(ruleset)
    # 2d. No capabilities: as root (or in the user namespace) the program cannot make device nodes (CAP_MKNOD),
    # immutable files (CAP_LINUX_IMMUTABLE), mounts, raw sockets, nor bypass file permissions or signal others.
    if job["drop_capabilities"]:
        for cap in range(64):  # PR_CAPBSET_DROP, up to the last capability the kernel knows (EINVAL), or
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # at once (EPERM) without CAP_SETPCAP: then nothing to drop
                break
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
        header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)  # _LINUX_CAPABILITY_VERSION_3
        sets = ctypes.create_string_buffer(24)  # effective, permitted, inheritable (x2 words): all empty
        if libc.capset(header, sets) == 0 and libc.capget(header, sets) == 0:
            isolation["capabilities_dropped"] = not any(sets.raw)
    # 2e. The system-call filter (built by the parent for this pid), last: it refuses unshare, mount, capset...
    if job["seccomp_filter"]:
        code = ctypes.create_string_buffer(job["seccomp_filter"], len(job["seccomp_filter"]))
        fprog = ctypes.create_string_buffer(struct.pack("HP", len(code.raw) // 8, ctypes.addressof(code)))
        if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS (Landlock may have set it already)
            isolation["seccomp"] = libc.prctl(22, 2, fprog, 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
