"""The child side of the python sandbox (sent compiled by sandbox.BOOT; sandbox.py imports its helpers).

argv: MODE MEM_BYTES CPU_SECONDS NPROC FSIZE_BYTES PYTHON_PATHS SITE_DIRS (the last two joined by
os.pathsep, computed by the caller: started with -S, we do not know our venv). The code to run
arrives on stdin.

MODE "unshare": we were started by util-linux `unshare` in fresh mount/net/pid/ipc/uts namespaces
(plus a user namespace when the caller is not root). We build a new root filesystem in a tmpfs
(read-only binds of /usr, /lib*, /etc/ld.so.cache and the interpreter's prefixes wherever they
live, a private size-capped tmpfs /tmp, a private /proc, a few /dev nodes), pivot into it and drop
the old root. Then we give up every privilege: as real root we become user nobody; in a user
namespace we drop all capabilities (bounding set included). Last, no-new-privs and the seccomp
filter (below). Python has already started from the host filesystem, so nothing beyond what the
model's code imports later has to be visible.
MODE "bwrap": bubblewrap did all of that (and loaded the same seccomp filter); only limits here.
MODE "unsafe": no isolation at all, only limits and an audit hook (which Python documents as no
security boundary: ctypes walks past it). Used only when the user asked for --unsafe-python-tool.
Every mode: resource limits, then exec the code like a notebook cell (a trailing expression's
value is printed).
"""

import _ast  # the C half of `ast`: importing `ast` itself costs ~10 ms a call
import os
import resource
import sys

NOBODY = 65534
SANDBOX_TMP_BYTES = 64 << 20  # the private /tmp: a write bomb gets ENOSPC here, not the host disk
DEV_NODES = ("null", "zero", "full", "random", "urandom")


# ------------------------------------------------------------------------- what Python needs
def python_paths() -> list[str]:
    """What the interpreter needs, as real paths outside the system directories: the standard
    library and site-packages of the venv and of its base, the directories of the executable
    (its symlink chain) and libpython. Not whole prefixes: a prefix may be ~/.local.

    Called by sandbox.py (the caller's interpreter is the runner's), which passes the list to the
    runner or to bubblewrap."""
    import sysconfig

    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix}
    cands = {sysconfig.get_paths()[k] for k in keys} | {sysconfig.get_paths(vars=base)[k] for k in keys}
    cands |= {os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable)),
              os.path.join(sys.prefix, "pyvenv.cfg"),
              os.path.join(sysconfig.get_config_var("LIBDIR") or "/", sysconfig.get_config_var("INSTSONAME") or "")}
    cands = {os.path.realpath(p) for p in cands if p and os.path.exists(p)}
    covered = system_paths()
    cands = {p for p in cands if not any(p == q or p.startswith(q + "/") for q in covered + ["/"])}
    return sorted(p for p in cands if not any(p != q and p.startswith(q + "/") for q in cands))


def system_paths() -> list[str]:
    """The system part of the new root: shared libraries and the loader's cache."""
    return [p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
                        "/etc/ld.so.cache", "/etc/localtime") if os.path.lexists(p)]


# ------------------------------------------------------------------------- seccomp
# A deny list on top of the namespaces: the calls a sandbox escape starts from (new namespaces,
# mounts, ptrace, kernel keyrings, bpf, io_uring, modules) fail with EPERM, sockets other than
# AF_UNIX fail with EAFNOSUPPORT, clone3 answers ENOSYS so libc falls back to clone (whose flags
# we can inspect). Written directly as classic BPF: libseccomp's Python bindings are not on PyPI.
ARCHES = {  # machine -> (AUDIT_ARCH, syscall numbers)
    "x86_64": (0xC000003E, dict(
        ptrace=101, syslog=103, personality=135, pivot_root=155, chroot=161, acct=163, mount=165,
        umount2=166, swapon=167, swapoff=168, reboot=169, init_module=175, delete_module=176,
        quotactl=179, kexec_load=246, add_key=248, request_key=249, keyctl=250, unshare=272,
        perf_event_open=298, name_to_handle_at=303, open_by_handle_at=304, setns=308,
        process_vm_readv=310, process_vm_writev=311, finit_module=313, kexec_file_load=320, bpf=321,
        userfaultfd=323, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
        open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433,
        mount_setattr=442, socket=41, clone=56, clone3=435)),
    "aarch64": (0xC00000B7, dict(
        ptrace=117, syslog=116, personality=92, pivot_root=41, chroot=51, acct=89, mount=40,
        umount2=39, swapon=224, swapoff=225, reboot=142, init_module=105, delete_module=106,
        quotactl=60, kexec_load=104, add_key=217, request_key=218, keyctl=219, unshare=97,
        perf_event_open=241, name_to_handle_at=264, open_by_handle_at=265, setns=268,
        process_vm_readv=270, process_vm_writev=271, finit_module=273, kexec_file_load=294, bpf=280,
        userfaultfd=282, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
        open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433,
        mount_setattr=442, socket=198, clone=220, clone3=435)),
}
CLONE_NEW_ANY = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97


def seccomp_program() -> bytes | None:
    """The filter as `struct sock_filter[]` bytes, or None on an architecture we have no table for."""
    arch = ARCHES.get(os.uname().machine)
    if arch is None:
        return None
    import struct

    audit_arch, nr = arch
    errno = lambda e: 0x00050000 | e  # noqa: E731  (SECCOMP_RET_ERRNO)
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    prog = [(LD, None, None, 4), (JEQ, None, "kill", audit_arch), (LD, None, None, 0)]
    if audit_arch == 0xC000003E:
        prog.append((JGE, "eperm", None, 0x40000000))  # the x32 ABI: another syscall table
    denied = [v for k, v in nr.items() if k not in ("socket", "clone", "clone3")]
    prog += [(JEQ, "eperm", None, n) for n in denied]
    prog += [(JEQ, "socket", None, nr["socket"]), (JEQ, "clone", None, nr["clone"]),
             (JEQ, "enosys", None, nr["clone3"]), (RET, None, None, ALLOW),
             "socket", (LD, None, None, 16), (JEQ, "allow", "eafnosupport", 1),  # AF_UNIX only
             "clone", (LD, None, None, 16), (JSET, "eperm", "allow", CLONE_NEW_ANY),
             "allow", (RET, None, None, ALLOW), "eperm", (RET, None, None, errno(EPERM)),
             "enosys", (RET, None, None, errno(ENOSYS)),
             "eafnosupport", (RET, None, None, errno(EAFNOSUPPORT)), "kill", (RET, None, None, KILL)]
    labels, insns = {}, []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = []
    for i, (code, jt, jf, k) in enumerate(insns):
        rel = lambda lab: 0 if lab is None else labels[lab] - i - 1  # noqa: E731
        out.append(struct.pack("HBBI", code, rel(jt), rel(jf), k))
    return b"".join(out)


# ------------------------------------------------------------------------- namespaces (ctypes)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SIGKILL = 9  # not signal.SIGKILL: importing `signal` (enum, functools, ...) costs ~10 ms a call
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 24, 38, 22, 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


class _Kernel:
    def __init__(self):
        import ctypes
        self.ct = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.machine = os.uname().machine

    def check(self, ret, what):
        if ret != 0:
            e = self.ct.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")

    def mount(self, src, dst, fstype, flags, data=None):
        b = lambda s: None if s is None else s.encode()  # noqa: E731
        self.check(self.libc.mount(b(src), b(dst), b(fstype), self.ct.c_ulong(flags), b(data)),
                   f"mount {src} on {dst}")

    def bind_ro(self, src, dst):
        self.mount(src, dst, None, MS_BIND | MS_REC)
        # keep the flags the kernel locked on the source (nosuid, noexec, atime): only add ro
        keep = os.statvfs(dst).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096)
        self.mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | keep)

    def pivot_root(self, new, old):
        self.check(self.libc.syscall(SYS_PIVOT_ROOT[self.machine], new.encode(), old.encode()),
                   "pivot_root")

    def drop_capabilities(self):
        for cap in range(64):  # the bounding set: no exec can bring a capability back
            if self.libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
        hdr = (self.ct.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (self.ct.c_uint32 * 6)()
        self.check(self.libc.syscall(SYS_CAPSET[self.machine], hdr, data), "capset")

    def no_new_privs_and_seccomp(self):
        self.check(self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        prog = seccomp_program()
        if prog is None:
            return

        class Fprog(self.ct.Structure):
            _fields_ = [("len", self.ct.c_ushort), ("filter", self.ct.c_char_p)]
        fp = Fprog(len(prog) // 8, prog)
        self.check(self.libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.ct.byref(fp), 0, 0),
                   "seccomp")


def _mkdirs_for(path: str, is_dir: bool) -> None:
    os.makedirs(path if is_dir else os.path.dirname(path), mode=0o755, exist_ok=True)
    if not is_dir and not os.path.exists(path):
        open(path, "w").close()


def build_root(k: _Kernel, python: list[str]) -> None:
    """Pivot into a new root holding only what Python needs (see the module docstring)."""
    system = system_paths()  # while the host root is still "/"
    k.mount(None, "/", None, MS_REC | MS_PRIVATE)
    # bubblewrap's trick: a tmpfs over /tmp becomes the base root with the old root below it,
    # so binds come from /oldroot/<path>, which also reaches an interpreter living under /tmp.
    k.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.mkdir("/tmp/oldroot")
    os.mkdir("/tmp/newroot")
    k.pivot_root("/tmp", "/tmp/oldroot")
    os.chdir("/")
    k.mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")

    def bind(path):
        src, dst = "/oldroot" + path, "/newroot" + path
        if os.path.islink(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(os.readlink(src), dst)
            return
        _mkdirs_for(dst, os.path.isdir(src))
        k.bind_ro(src, dst)

    for p in system:
        bind(p)
    os.makedirs("/newroot/tmp", mode=0o1777)
    k.mount("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
            f"size={SANDBOX_TMP_BYTES},mode=1777")
    for p in python:
        bind(p)
    os.mkdir("/newroot/proc")
    k.mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir("/newroot/dev")
    k.mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for d in DEV_NODES:
        open(f"/newroot/dev/{d}", "w").close()
        k.mount(f"/oldroot/dev/{d}", f"/newroot/dev/{d}", None, MS_BIND)
    os.chdir("/newroot")
    k.pivot_root(".", ".")  # stack the old base on top of the new root, then detach it
    k.check(k.libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    k.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def drop_privileges(k: _Kernel) -> None:
    if _real_root():  # no user namespace: become nobody for good (this also clears capabilities)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    k.drop_capabilities()
    # die with `unshare` (our parent, outside the namespace); set after setresuid, which clears it
    k.check(k.libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig")
    k.no_new_privs_and_seccomp()


def _real_root() -> bool:
    with open("/proc/self/uid_map") as f:  # the initial namespace maps all 2**32-1 ids
        return f.read().split() == ["0", "0", "4294967295"]


# ------------------------------------------------------------------------- limits and the cell
def _limit(mem: int, cpu: int, nproc: int, fsize: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _unsafe_guard(event, args):
    # --unsafe-python-tool only: a speed bump, not a wall (ctypes or a C extension walks past it)
    if event in ("socket.__new__", "socket.connect", "socket.bind", "os.system", "os.exec",
                 "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen", "os.kill"):
        raise PermissionError(f"{event} is disabled in the sandbox")


def _run_cell(code: str) -> None:
    tree = compile(code, "<cell>", "exec", _ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<cell>", "exec"), env)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), env)
        if value is not None:
            print(repr(value))


def main() -> None:
    mode, mem, cpu, nproc, fsize = sys.argv[1], *map(int, sys.argv[2:6])
    python, site_dirs = (a.split(os.pathsep) if a else [] for a in sys.argv[6:8])
    code = sys.stdin.read()
    sys.stdin.close()
    if mode == "unshare":
        k = _Kernel()
        try:
            build_root(k, python)
            _limit(mem, cpu, nproc, fsize)
            drop_privileges(k)
        except OSError as e:  # never run the code half-isolated
            print(f"sandbox setup failed: {e}", flush=True)
            os._exit(70)
    else:
        _limit(mem, cpu, nproc, fsize)
        if mode == "unsafe":
            sys.addaudithook(_unsafe_guard)
    # started with -S: site's .pth processing (editable-install finders) costs ~100 ms a call;
    # the model's code still imports what site-packages holds
    sys.path += [p for p in site_dirs if os.path.isdir(p)]
    sys.argv = [""]
    sys.stderr = sys.stdout  # one buffer for both: prints and tracebacks arrive in the order made
    try:
        _run_cell(code)
    except SystemExit:
        raise
    except BaseException:
        import linecache
        import traceback

        linecache.cache["<cell>"] = (len(code), None, code.splitlines(True), "<cell>")  # show source lines
        etype, value, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next  # hide this runner's frames; show only the user's code
        traceback.print_exception(etype, value, tb)
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
