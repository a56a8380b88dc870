"""`chatforge data build --engine ray`: the build's three passes as Ray tasks, on one machine or many.

Design choices:
  - No second implementation: pass 1 is `build.run_task`, pass 3 `build.finish_task`, one Ray
    task per build task; the global dedup's LSH band buckets (`dedup.band_pairs`) are one Ray
    task each, reading only their band's rows of every signature file, and their candidate pairs
    are joined by one union-find on the driver (datatrove's bucket / cluster stages). So the kept
    documents and the stats equal the local build's.
  - Retries: Ray re-runs a task whose worker died (killed, out of memory) or that raised, up to
    MAX_RETRIES times. Every output is written atomically, so a half-done attempt leaves nothing.
  - Poisoned inputs: a pass-1 task that fails every retry is probed file by file (in a scratch
    folder, no retries); files that fail alone are left out of the task's last run, counted as
    read `poisoned_input` and named in stats. Other tasks keep running meanwhile.
  - Resume: build.py submits only tasks without their done marker, so a killed build redoes only
    unfinished ones, whichever engine ran the first attempt.
  - Progress: workers report (task, docs, bytes) to a zero-CPU actor; the driver shows docs/s,
    MB/s, an ETA by input bytes, and what each worker is doing.
With no address a local Ray of `workers` CPUs is started (and stopped at the end); with one, the
cluster's nodes need chatforge installed and the output folder on a filesystem they all see.
"""

from __future__ import annotations

import os
import time

import ray

from chatforge.common import ChatforgeError

MAX_RETRIES = 2


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Docs and bytes read so far, summed over workers, and each worker's current task."""

    def __init__(self):
        self.docs = self.bytes = 0
        self.workers: dict[str, list] = {}  # who -> [task, docs in that task, state]
        self.task_bytes: dict[int, int] = {}  # bytes read per task (for the ETA)

    def report(self, who: str, k: int, n: int, nbytes: int, state: str = "busy"):
        self.docs += n
        self.bytes += nbytes
        self.task_bytes[k] = self.task_bytes.get(k, 0) + nbytes
        w = self.workers.setdefault(who, [k, 0, state])
        if w[0] != k:
            w[0], w[1] = k, 0
        w[1] += n
        w[2] = state

    def snapshot(self):
        return self.docs, self.bytes, self.workers, self.task_bytes


def _in_worker(fn_name: str, board, fault: str | None, *args):
    """Runs build.<fn_name>(*args) in a Ray worker, reporting progress to the board."""
    from chatforge.data import build

    k = args[0]
    who = f"{ray.get_runtime_context().get_node_id()[:6]}:{os.getpid()}"
    if fault:
        os.environ["CHATFORGE_TEST_KILL_TASK"] = fault
    if board is not None:
        board.report.remote(who, k, 0, 0)
        build._REPORT = lambda kk, n, nb: board.report.remote(who, kk, n, nb)
    try:
        return getattr(build, fn_name)(*args)
    finally:
        build._REPORT = None
        os.environ.pop("CHATFORGE_TEST_KILL_TASK", None)
        if board is not None:
            board.report.remote(who, k, 0, 0, "idle")


_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=True)(_in_worker)


@ray.remote(max_retries=MAX_RETRIES, retry_exceptions=True)
def _band_task(sig_paths, band, rows, alive):
    from chatforge.data.dedup import band_pairs

    return band_pairs(sig_paths, band, rows, alive)


@ray.remote(num_cpus=0)
class _Arrivals:
    """Which worker processes have arrived (warm_workers' barrier)."""

    def __init__(self):
        self.pids: set = set()

    def arrive(self, pid: int) -> int:
        self.pids.add(pid)
        return len(self.pids)

    def count(self) -> int:
        return len(self.pids)


@ray.remote(num_cpus=1)
def _warm_task(arrivals, n: int, cfg, timeout: float):
    """build.warm_pipeline in this worker, then holds its CPU until n workers have done it, so
    that n warm-up tasks land on n different workers."""
    from chatforge.data.build import warm_pipeline

    warm_pipeline(cfg)
    ray.get(arrivals.arrive.remote(os.getpid()))
    t_end = time.monotonic() + timeout
    while ray.get(arrivals.count.remote()) < n and time.monotonic() < t_end:
        time.sleep(0.01)
    return os.getpid()


def warm_workers(cfg=None, n: int | None = None, timeout: float = 60.0) -> set[int]:
    """Start-up for benchmarks and long-lived clusters: every one of the n (default: all the
    cluster's CPUs) worker processes runs build.warm_pipeline (imports, models, one made-up page
    through every step) before a build, as forked local workers inherit it from a warmed driver.
    A build does not call this (its first tasks pay the same once). Returns the process ids of the
    workers that ran the warm-up."""
    n = n or max(1, int(ray.cluster_resources().get("CPU", 1)))
    arrivals = _Arrivals.remote()
    pids = ray.get([_warm_task.remote(arrivals, n, cfg, timeout) for _ in range(n)])
    ray.kill(arrivals)
    return set(pids)


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_progress(docs: int, nbytes: int, elapsed: float, frac: float, workers: dict) -> str:
    """'12,345 docs, 410 docs/s, 8.2 MB/s, ETA 1:20 | 2/4 busy: a1b2c3:812 t3 1,200 docs, ...'"""
    eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
    busy = sorted((who, w) for who, w in workers.items() if w[2] == "busy")
    state = ", ".join(f"{who} t{w[0]} {w[1]:,} docs" for who, w in busy[:8]) + (" ..." if len(busy) > 8 else "")
    return (f"{docs:,} docs, {docs / max(elapsed, 1e-9):,.0f} docs/s, {nbytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s, "
            f"ETA {_fmt_eta(eta)} | {len(busy)}/{len(workers)} busy" + (f": {state}" if state else ""))


def _done_fraction(sizes: dict, done: set, task_bytes: dict) -> float:
    """Fraction of the input done, by input file sizes: finished tasks count whole, running ones
    by the bytes they have read over their size times the expansion ratio (bytes read / input
    size). The ratio is the finished tasks' pulled towards 4 (a WARC.gz's) by a prior worth a
    tenth of the input, so a few small odd files finished first do not swing the ETA."""
    total = max(sum(sizes.values()), 1)
    fin = sum(sizes[k] for k in done)
    prior = 0.1 * total
    ratio = (sum(task_bytes.get(k, 0) for k in done) + 4.0 * prior) / (fin + prior)
    running = sum(min(task_bytes.get(k, 0) / max(ratio, 1e-9), 0.99 * s) for k, s in sizes.items() if k not in done)
    return (fin + running) / total


class RayEngine:
    def __init__(self, address: str | None, workers: int, quiet: bool):
        self.quiet = quiet
        self.owns = not ray.is_initialized()
        if self.owns:
            kw = dict(include_dashboard=False, log_to_driver=not quiet, logging_level="WARNING")
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(num_cpus=max(1, int(workers or os.cpu_count() or 1)), **kw)
            except ConnectionError as e:
                raise ChatforgeError(f"cannot reach the Ray cluster at {address} ({e}); check --address") from e
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.fault = os.environ.get("CHATFORGE_TEST_KILL_TASK")  # tests: kill one worker mid-task, once

    def close(self) -> None:
        if self.owns:
            ray.shutdown()

    # pass 1 -----------------------------------------------------------------
    def filter(self, jobs: list[tuple]) -> None:
        """jobs: (k, files, work, cfg) as build.run_task takes them."""
        sizes = {j[0]: sum(os.path.getsize(f) for f in j[1]) for j in jobs}
        self._drain("filter", {self._submit("run_task", j): j for j in jobs}, sizes, self._probe_and_rerun)

    def _probe_and_rerun(self, job: tuple, err: Exception) -> None:
        from chatforge.data.build import rerun_without_poisoned

        def run(*args):  # one Ray task, waited for here (the other tasks keep running meanwhile)
            return ray.get(_task.options(max_retries=0, retry_exceptions=False).remote("run_task", None, None, *args))

        rerun_without_poisoned(job, err, run, self.quiet)

    # global dedup ---------------------------------------------------------------
    def map_bands(self, sig_paths, bands: int, rows: int, alive):
        alive_ref = ray.put(alive)
        refs = [_band_task.remote([str(p) for p in sig_paths], b, rows, alive_ref) for b in range(bands)]
        return (ray.get(r) for r in refs)

    # pass 3 -----------------------------------------------------------------
    def finish(self, jobs: list[tuple]) -> None:
        """jobs: (k, out_dir, cfg) as build.finish_task takes them."""
        self._drain("dedup+pii", {self._submit("finish_task", j): j for j in jobs}, {j[0]: 1 for j in jobs}, None)

    # ------------------------------------------------------------------------
    def _submit(self, fn_name: str, job: tuple):
        return _task.remote(fn_name, self.board, self.fault, *job)

    @property
    def board(self):
        if self.quiet:
            return None
        if not hasattr(self, "_board"):
            self._board = ProgressBoard.remote()
        return self._board

    def _drain(self, desc: str, pending: dict, sizes: dict, on_fail) -> None:
        """Wait for every task, showing progress; a task failed past its retries goes to on_fail."""
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc=desc, unit="task", disable=self.quiet or not pending, mininterval=1.0)
        t0, done = time.perf_counter(), set()
        base = ray.get(self.board.snapshot.remote())[:2] if self.board is not None else (0, 0)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as e:
                        if on_fail is None:
                            raise ChatforgeError(f"{desc} task {job[0]} failed after {MAX_RETRIES} retries: {e}") from e
                        on_fail(job, e)
                    done.add(job[0])
                    bar.update()
                if self.board is not None:
                    docs, nbytes, workers, task_bytes = ray.get(self.board.snapshot.remote())
                    bar.set_postfix_str(format_progress(docs - base[0], nbytes - base[1], time.perf_counter() - t0,
                                                        _done_fraction(sizes, done, task_bytes) if sizes else 0.0,
                                                        workers), refresh=True)
        finally:
            bar.close()
