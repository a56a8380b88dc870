"""Per-call start-up cost of the python tool's sandbox, by isolation mode, side by side.

    python benchmarks/sandbox_startup.py [--calls 40]

Each call is run_python("pass") end to end (spawn, namespaces, new root, seccomp, limits, the
code, teardown). The baseline is the same call in "unsafe" mode: a bare python process with the
same flags and limits and no isolation, so the ratio is what isolation costs. A plain
`python -I -S -c pass` is shown too (interpreter start-up alone). Modes are interleaved call by
call so that load from other processes hits them alike; the median is the headline (the goal is
<= 50 ms on the CPU box), p90 shows the spread. CPU ms (user + system of the call's processes,
from RUSAGE_CHILDREN) is the cost that does not depend on how busy the machine is; n/a for bwrap,
whose sandboxed processes are reaped inside their pid namespace, out of RUSAGE_CHILDREN's sight.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

from chatforge.infer import sandbox


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=40)
    args = ap.parse_args()
    sandbox.allow_unsafe()
    modes = ["unsafe", *sandbox.available_modes()]
    arms = {"python -I -S -c pass": lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)}
    for m in modes:
        arms[m] = (lambda m=m: _check(sandbox.run_python("pass", isolation=m)))
    times: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, float] = {k: 0.0 for k in arms}
    for f in arms.values():
        f()  # warm the page cache
    for _ in range(args.calls):
        for name, f in arms.items():
            t, c = time.perf_counter(), _children_cpu()
            f()
            times[name].append((time.perf_counter() - t) * 1e3)
            cpu[name] += (_children_cpu() - c) * 1e3 / args.calls
    base = statistics.median(times["unsafe"])
    print(f"{'arm':26s} {'median ms':>10s} {'p90 ms':>8s} {'vs unsafe':>10s} {'cpu ms':>8s} {'vs unsafe':>10s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
        cpu_txt = f"{cpu[name]:8.1f} {cpu[name] / cpu['unsafe']:9.2f}x" if name != "bwrap" else f"{'n/a':>8s} {'':>10s}"
        print(f"{name:26s} {med:10.1f} {p90:8.1f} {med / base:9.2f}x {cpu_txt}")
    print(f"({args.calls} calls each, interleaved; {sandbox.describe_isolation()})")


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: on a loaded machine the wall clock
    mostly measures waiting for a core, CPU time what a call costs."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _check(r):
    if r.exit_code != 0:
        raise SystemExit(f"sandbox call failed in {r.isolation}: {r.output}")


if __name__ == "__main__":
    main()
