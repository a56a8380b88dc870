"""The child side of the python sandbox (run as a script, never imported by chatforge).

argv: MODE MEM_BYTES CPU_SECONDS NPROC FSIZE_BYTES. The code to run arrives on stdin.
MODE "ns": we are root inside fresh net/pid/mount namespaces (see sandbox.py): mount a private
tmpfs over /tmp, /var/tmp and /dev/shm, work in /tmp/work, then drop to user nobody.
MODE "bare": no namespaces available; just limits + the audit hook, in the cwd we were given.
Either way: resource limits, a socket-blocking audit hook, then exec the code like a notebook
cell (the value of a trailing expression is printed).
"""

import ast
import linecache
import os
import resource
import subprocess
import sys
import traceback

NOBODY = 65534


def _setup_namespaces() -> None:
    for mnt in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(mnt):
            # size cap: a write-bomb fills 64 MiB of tmpfs and gets ENOSPC, not the host disk
            _mount("-t", "tmpfs", "-o", "size=64m,mode=1777,nosuid,nodev", "tmpfs", mnt)
    _reexpose_python()
    os.makedirs("/tmp/work", exist_ok=True)
    os.chown("/tmp/work", NOBODY, NOBODY)
    os.chdir("/tmp/work")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _first_closed_ancestor(path: str) -> str | None:
    """The top-most ancestor of `path` that user nobody cannot traverse (e.g. /root), if any."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    for i in range(1, len(parts) + 1):
        d = os.sep + os.path.join(*parts[:i])
        if not os.stat(d).st_mode & 0o001:
            return d
    return None


def _reexpose_python() -> None:
    # Python (and its stdlib) may live under a directory nobody cannot enter (pyenv in /root).
    # Inside our mount namespace: hide that directory behind an empty tmpfs and bind only the
    # python prefixes back into it. The sandbox sees python, not the rest of /root.
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)})
    staged = []
    for i, prefix in enumerate(prefixes):
        if _first_closed_ancestor(prefix):
            stage = f"/tmp/.stage{i}"
            os.makedirs(stage)
            _mount("--bind", prefix, stage)
            staged.append((stage, prefix))
    covered: set[str] = set()
    for _, prefix in staged:
        top = _first_closed_ancestor(prefix)
        if top and top not in covered:
            _mount("-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", top)
            covered.add(top)
        os.makedirs(prefix, exist_ok=True)
        for d in _parents_between(top or prefix, prefix):
            os.chmod(d, 0o755)
    for stage, prefix in staged:
        _mount("--move", stage, prefix)
        os.rmdir(stage)


def _parents_between(top: str, path: str) -> list[str]:
    out, p = [], path
    while len(p) >= len(top):
        out.append(p)
        p = os.path.dirname(p)
    return out


def _limit(mem: int, cpu: int, nproc: int, fsize: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _block_network(event, args):
    # Audit hooks cannot be removed once added: sockets are off for the rest of this process.
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
        raise PermissionError("network access is disabled in the sandbox")


_SPAWN_EVENTS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                 "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg"}
_PATH_EVENTS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown",
                "os.symlink", "os.link", "os.truncate", "os.utime", "shutil.rmtree"}


def _other_process_proc(path: str) -> bool:
    # /proc/<parent pid>/environ would hand over the server's secrets; /proc/self is fine
    parts = os.path.realpath(path).split(os.sep)
    return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != os.getpid()


def _make_bare_guard(workdir: str):
    """Without namespaces, the audit hook is the wall: writes stay in `workdir`, no processes.

    Weaker than kernel isolation (ctypes can get around it), hence 'ns' mode whenever possible.
    """
    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an fd we already hold
        p = os.path.realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep) or p == os.devnull

    def guard(event, args):
        if event in _SPAWN_EVENTS:
            raise PermissionError(f"{event} is disabled in the sandbox")
        if event == "open" and args[0] is not None:
            mode, flags = args[1], args[2]
            if not isinstance(args[0], int) and _other_process_proc(os.fsdecode(args[0])):
                raise PermissionError("reading other processes' /proc entries is disabled")
            writing = (mode and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR))
            if writing and not inside(args[0]):
                raise PermissionError(f"writing outside the sandbox directory: {args[0]}")
        elif event in _PATH_EVENTS and args and not all(
                inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            raise PermissionError(f"{event} outside the sandbox directory is disabled")
    return guard


def _run_cell(code: str) -> None:
    linecache.cache["<cell>"] = (len(code), None, code.splitlines(True), "<cell>")  # tracebacks show source
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<cell>", "exec"), env)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), env)
        if value is not None:
            print(repr(value))


def main() -> None:
    mode, mem, cpu, nproc, fsize = sys.argv[1], *map(int, sys.argv[2:6])
    code = sys.stdin.read()
    sys.stdin.close()
    if mode == "ns":
        _setup_namespaces()
        _limit(mem, cpu, nproc, fsize)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    else:
        _limit(mem, cpu, nproc, fsize)
        sys.addaudithook(_make_bare_guard(os.getcwd()))
    sys.addaudithook(_block_network)
    try:
        _run_cell(code)
    except SystemExit:
        raise
    except BaseException:
        etype, value, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next  # hide this runner's frames; show only the user's code
        traceback.print_exception(etype, value, tb)
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
