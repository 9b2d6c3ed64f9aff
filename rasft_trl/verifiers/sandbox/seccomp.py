"""The system-call filter (seccomp, classic BPF) that the sandboxed child installs on itself, built by the parent.

The parent builds the program per architecture once (`_seccomp_template`) and writes each run's pid into it
(`_seccomp_filter`); the child installs it last among its kernel layers (`isolation.py`), since it refuses the
`unshare`, `mount` and `capset` calls that the layers before it need. Reported in `details["isolation"]["seccomp"]`.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`); the
filter also refuses process creation and `execve`, signals to other processes, device nodes and the `ioctl`s that
set inode flags (see the "Processes" and "Signals" items in `harness.py` and "Privileges" in `isolation.py`):

- **Network and other sockets.** Socket creation (except `AF_UNIX`, for the socket pairs asyncio needs),
  `connect`, `bind`, `sendto` and name resolution are refused by the audit hook. The filter refuses, for
  every family, `socket()`, `connect`, `bind`, `listen`, `accept`, `sendmsg`/`sendmmsg` and `sendto` with an
  address: the only sockets are `socketpair()`s, which reach nothing but each other (a Unix socket file or
  an abstract socket outside cannot be reached, nor netlink, packet or any other family, even with the
  audit hook switched off); io_uring, whose operations bypass the filter, is refused. Where the kernel
  allows it, the child also enters a new, empty network namespace (`unshare(CLONE_NEWNET)`, inside an
  unprivileged user namespace when not root) and Landlock ABI >= 4 denies TCP `bind`/`connect`
  (ABI >= 6: abstract Unix sockets outside the sandbox).

Not covered:

- Without the filter, a network namespace and Landlock ABI >= 4, a packet sent through a route the audit
  hook does not see (e.g. via `ctypes` memory tricks) can leave; without the filter, a Unix socket outside
  the folder can be reached that way (Landlock of this kernel generation has no right for connecting to a
  socket file).
- The filter exists for Linux x86-64 and arm64 only (`_SECCOMP_SYSCALLS`); elsewhere, or on a kernel without seccomp,
  `details["isolation"]["seccomp"]` is False and the other layers hold alone.
"""

from __future__ import annotations

import os

# System calls the child's seccomp filter looks at, per architecture: (AUDIT_ARCH_*, {name: number}).
_SECCOMP_SYSCALLS = {
    "x86_64": (0xC000003E, {
        "ioctl": 16, "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "sendmsg": 46, "bind": 49, "listen": 50,
        "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "ptrace": 101, "rt_sigqueueinfo": 129,
        "mknod": 133, "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166, "tkill": 200, "tgkill": 234,
        "add_key": 248, "request_key": 249, "keyctl": 250, "mknodat": 259, "unshare": 272, "accept4": 288,
        "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "sendmmsg": 307, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "memfd_create": 319, "bpf": 321, "execveat": 322, "userfaultfd": 323,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
    }),
    "aarch64": (0xC00000B7, {
        "ioctl": 29, "mknodat": 33, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "unshare": 97,
        "ptrace": 117, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "socket": 198, "bind": 200,
        "listen": 201, "accept": 202, "connect": 203, "sendto": 206, "sendmsg": 211, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "execve": 221, "rt_tgsigqueueinfo": 240,
        "perf_event_open": 241, "accept4": 242, "setns": 268, "sendmmsg": 269, "process_vm_readv": 270,
        "process_vm_writev": 271, "memfd_create": 279, "bpf": 280, "execveat": 281, "userfaultfd": 282,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
    }),
}

#: Refused outright (`EPERM`): sockets (`socket`, `connect`, `bind`, ...: `socketpair`, which asyncio needs, stays),
#: process creation and `execve`, access to other processes (`ptrace`, `process_vm_*`, pidfds), namespaces and mounts,
#: kernel keyrings, io_uring (whose operations bypass this filter), `memfd_create` (memory outside the disk quota),
#: `bpf`, `perf_event_open`, `userfaultfd`.
_SECCOMP_REFUSED = (
    "socket", "connect", "bind", "listen", "accept", "accept4", "sendmsg", "sendmmsg", "fork", "vfork", "execve",
    "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "tkill", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "add_key", "request_key", "keyctl", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "memfd_create", "bpf", "perf_event_open", "userfaultfd",
)  # fmt: skip


_SECCOMP_TEMPLATES: dict[str, tuple[bytes, list[int]] | None] = {}


def _seccomp_filter(pid: int, machine: str | None = None) -> bytes | None:
    """The seccomp program (classic BPF, `struct sock_filter[]`) that the child `pid` installs on itself, or None on
    an architecture without a table above. Built once per architecture; each run only writes its pid in.

    Besides `_SECCOMP_REFUSED`: `clone` only for threads (`CLONE_THREAD`, no new namespace; `clone3` answers `ENOSYS`,
    so that the C library falls back to `clone`, whose flags a filter can read); signals (`kill`, `tgkill`,
    `rt_*sigqueueinfo`) only to the program itself; `sendto` only without an address (on a connected socket pair);
    `mknod`/`mknodat` not for character or block devices; `ioctl` not to set inode flags (`FS_IOC_SETFLAGS`,
    `FS_IOC_FSSETXATTR`: immutable, append-only). Another architecture's system calls (x32, i386) are refused.
    """
    import struct

    machine = machine or os.uname().machine
    if machine not in _SECCOMP_TEMPLATES:
        _SECCOMP_TEMPLATES[machine] = _seccomp_template(machine)
    template = _SECCOMP_TEMPLATES[machine]
    if template is None:
        return None
    code, pid_offsets = template
    program = bytearray(code)
    for offset in pid_offsets:
        struct.pack_into("=I", program, offset, pid & 0xFFFFFFFF)
    return bytes(program)


def _seccomp_template(machine: str) -> tuple[bytes, list[int]] | None:
    """`_seccomp_filter`'s program for `machine`, and the byte offsets where the pid goes."""
    import struct

    arch, numbers = _SECCOMP_SYSCALLS.get(machine, (None, None))
    if arch is None:
        return None
    pid = None  # a placeholder, replaced by 0 here and by the child's pid in _seccomp_filter
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW / _ERRNO | errno
    ld, jeq, jge, jset, and_, ret = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ..., ALU|AND, RET

    def arg(i, high=False):  # offset of args[i] in struct seccomp_data (little-endian halves)
        return 16 + 8 * i + (4 if high else 0)

    def one_of(i, values):  # refuse when the low 32 bits of args[i] are one of `values`
        return [(ld, 0, 0, arg(i))] + [(jeq, len(values) - k, 0, v) for k, v in enumerate(values)] + [
            (ret, 0, 0, allow), (ret, 0, 0, eperm)]

    own = [(ld, 0, 0, arg(0)), (jeq, 0, 1, pid), (ret, 0, 0, allow), (ret, 0, 0, eperm)]
    device = [(ld, 0, 0, 0), (and_, 0, 0, 0o170000), (jeq, 1, 0, 0o020000), (jeq, 0, 1, 0o060000),
              (ret, 0, 0, eperm), (ret, 0, 0, allow)]
    clone_new = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
    bodies = {name: [(ret, 0, 0, eperm)] for name in _SECCOMP_REFUSED}
    bodies.update({
        "clone3": [(ret, 0, 0, enosys)],
        "clone": [(ld, 0, 0, arg(0)), (jset, 2, 0, clone_new), (jset, 0, 1, 0x10000), (ret, 0, 0, allow),
                  (ret, 0, 0, eperm)],
        "kill": own, "tgkill": own, "rt_sigqueueinfo": own, "rt_tgsigqueueinfo": own,
        "sendto": [(ld, 0, 0, arg(4)), (jeq, 0, 3, 0), (ld, 0, 0, arg(4, True)), (jeq, 0, 1, 0), (ret, 0, 0, allow),
                   (ret, 0, 0, eperm)],
        "mknod": [(ld, 0, 0, arg(1))] + device[1:],
        "mknodat": [(ld, 0, 0, arg(2))] + device[1:],
        "ioctl": one_of(1, (0x40086602, 0x40046602, 0x401C5820)),  # FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FSSETXATTR
    })  # fmt: skip
    program = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if arch == 0xC000003E:  # x32 system calls (number | 0x40000000) share x86-64's arch value
        program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]
    for name, body in bodies.items():
        if name in numbers:  # each body ends in a return, so the number stays loaded for the next test
            program += [(jeq, 0, len(body), numbers[name]), *body]
    program.append((ret, 0, 0, allow))
    pid_offsets = [8 * i + 4 for i, instruction in enumerate(program) if instruction[3] is None]
    code = b"".join(struct.pack("=HBBI", *instruction[:3], instruction[3] or 0) for instruction in program)
    return code, pid_offsets
