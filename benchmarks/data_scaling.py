"""Scaling of `chatforge data build` over CPU cores: the local process pool vs the Ray engine.

Weak scaling: with w workers the input is --files-per-worker (3) * w hard links of one WARC (the 320
real pages of ../shared/data/web, made by benchmarks/data_pipeline.py's writer; pass --warc to
use a ready one), grouped into build tasks by `build.plan_tasks` (--tasks-per-worker, 8 by default,
when the files allow: one copy each at 3 or 8 per worker), so every worker has the same work at every
width. pages/s = HTML pages read / build wall time (all three passes: filter, global dedup,
dedup+pii); efficiency(w) = pages/s(w) / (w * pages/s(1)). The copies are exact duplicates of
each other, so the global dedup pass sees (and drops) them as it would a crawl's repeats.

Every build runs in a fresh process (a child of this script), so no build inherits another's
state: in particular the fast extractor's cache of class strings, which, the copies being
identical, is warm after a worker's first file, on either engine alike. Start-up is not timed,
for either engine, and is printed (init_s, warm_s):
  - local: the child runs `build.warm_pipeline` (imports, models, one made-up page through every
    step) before the build; the pool's workers fork from it and inherit that.
  - Ray: `ray.init` (~3-5 s) and then `ray_engine.warm_workers`, in which every worker runs
    `build.warm_pipeline`, as a forked local worker inherits it.
Changed on 2026-12-03 from the 2026-12-02 table's method (which had resiliparse as the
extractor): the extractor is now the build's default (`fast`); before, all builds ran in one
process, so the local 1-worker build (which runs in the driver) paid the one-off imports and model
loads inside its timed build while the local pool's workers at 2+ forked from a driver that had
already built the same pages (its efficiency at 2-4 workers came out above 1), and each fresh Ray
worker paid them inside its first task. `--cold` skips the warm-ups (ray.init stays untimed).

Per build it also records (CHATFORGE_TASK_LOG, see chatforge/data/build.py) every task's
worker, start and end, and prints for the filter pass: how many workers ran tasks and the most
tasks one ran, when the first task started after the build did, the busy fraction (summed task
wall time / (workers * filter wall)), the mean task seconds and the tail (last task end minus
the earliest worker's last task end); and CPU seconds used during the build by the driver, by
the workers and (Ray) by Ray's own processes (GCS, raylet, agents, dashboard, monitors; psutil).

`--ceiling ROUNDS` measures the machine instead of the build: w freshly spawned processes each
extract the same 320 pages ROUNDS times, all at once, with no build around them. If that scales
no better than the build, the limit is the cores (contention for memory and caches, or a VM's
neighbours), not the engines.

    python benchmarks/data_scaling.py [--warc web320.warc.gz] [--workers 1,2,4,8,16]
        [--engines local,ray] [--extractor fast] [--cold] [--files-per-worker 3] [--tasks-per-worker 8] [--json rows.json]
    python benchmarks/data_scaling.py --workers 1,16,1,16 ...   # each width twice: medians
    python benchmarks/data_scaling.py --ceiling 3 --workers 1,16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def _cfg(extractor: str, tasks_per_worker: int = 8):
    from chatforge.data.build import BuildConfig

    return BuildConfig(extractor=extractor, domain_blocklists=(), url_blocklists=(), tasks_per_worker=tasks_per_worker)


def _cpu(rusage_who) -> float:
    r = resource.getrusage(rusage_who)
    return r.ru_utime + r.ru_stime


def _proc_cpu() -> dict:
    """CPU seconds of every descendant process of this one: pid -> (name, seconds)."""
    try:
        import psutil
    except ImportError:
        return {}
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            t, cmd = p.cpu_times(), p.cmdline()
            script = next((os.path.basename(a) for a in cmd[1:] if a.endswith(".py")), None)
            name = cmd[0].split()[0] if cmd and cmd[0].startswith("ray::") else script or p.name()
            out[p.pid] = (name, t.user + t.system)
        except psutil.Error:
            pass
    return out


def timeline(log: Path, t0: float, workers: int, filter_wall: float) -> dict:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    f = [r for r in rows if r["pass"] == "filter"]
    if not f:
        return {"tasks": []}
    per_worker: dict = {}
    for r in f:
        per_worker.setdefault(r["pid"], []).append(r)
    busy = sum(r["end"] - r["start"] for r in f)
    last_ends = [max(x["end"] for x in rs) for rs in per_worker.values()]
    first = [min(rs, key=lambda x: x["start"]) for rs in per_worker.values()]
    later = [r for r in f if r not in first]
    return {
        "workers_used": len(per_worker),
        "max_tasks_per_worker": max(len(rs) for rs in per_worker.values()),
        "first_start_s": min(r["start"] for r in f) - t0,
        "last_first_start_s": max(r["start"] for r in first) - t0,  # when the last worker began its first task
        "busy_frac": busy / (workers * filter_wall) if filter_wall > 0 else float("nan"),
        "task_s": busy / len(f),
        "first_task_s": sum(r["end"] - r["start"] for r in first) / len(first),
        "later_task_s": sum(r["end"] - r["start"] for r in later) / len(later) if later else float("nan"),
        "tail_s": max(last_ends) - min(last_ends),
        "tasks": [[r["pass"], r["task"], r["pid"], round(r["start"] - t0, 3), round(r["end"] - t0, 3)] for r in rows],
    }


def one_build(warc: Path, tmp: Path, engine: str, workers: int, extractor: str, cold: bool, per_worker: int = 3,
              tasks_per_worker: int = 8) -> dict:
    """One build, in this (fresh) process: start-up untimed, then the timed build."""
    from chatforge.data.build import build, warm_pipeline

    cfg = _cfg(extractor, tasks_per_worker)
    here = Path(tempfile.mkdtemp(prefix=f"{engine}_{workers}_", dir=tmp))  # a width may be measured more than once
    inputs = here / "in"
    inputs.mkdir()
    for i in range(per_worker * workers):
        os.link(warc, inputs / f"part{i:03d}.warc.gz")
    log = here / "tasks.jsonl"
    os.environ["CHATFORGE_TASK_LOG"] = str(log)  # before ray.init: Ray's workers inherit the driver's environment
    init = warm = 0.0
    if engine == "local" and not cold:
        t = time.perf_counter()
        warm_pipeline(cfg)
        warm = time.perf_counter() - t
    if engine == "ray":
        import ray

        from chatforge.data.ray_engine import warm_workers

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        init = time.perf_counter() - t
        if not cold:
            t = time.perf_counter()
            warmed = warm_workers(cfg, workers)
            warm = time.perf_counter() - t
            if len(warmed) != workers:
                print(f"warning: the warm-up reached {len(warmed)} of {workers} workers", file=sys.stderr)
    procs0, self0, kids0 = _proc_cpu(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    t = time.perf_counter()
    stats = build([str(inputs)], here / "out", workers=workers, quiet=True, engine=engine, config=cfg)
    wall = time.perf_counter() - t
    cpu_driver = _cpu(resource.RUSAGE_SELF) - self0
    cpu_kids = _cpu(resource.RUSAGE_CHILDREN) - kids0  # the local pool's workers (reaped at each pass's end)
    procs1 = _proc_cpu()
    os.environ.pop("CHATFORGE_TASK_LOG", None)
    tl = timeline(log, t0, workers, stats["wall_seconds"]["filter"])
    cpu = {"driver": round(cpu_driver, 2)}
    if engine == "ray":
        ray.shutdown()
        task_pids = {x[2] for x in tl["tasks"]}
        used = {pid: (name, s - procs0.get(pid, (name, 0.0))[1]) for pid, (name, s) in procs1.items()}
        cpu["workers"] = round(sum(s for pid, (_, s) in used.items() if pid in task_pids), 2)
        cpu["ray_daemons"] = round(sum(s for pid, (_, s) in used.items() if pid not in task_pids), 2)
        cpu["ray_daemons_by_name"] = {}
        for pid, (name, s) in used.items():
            if pid not in task_pids and s > 0.005:
                cpu["ray_daemons_by_name"][name] = round(cpu["ray_daemons_by_name"].get(name, 0.0) + s, 2)
    else:
        cpu["workers"] = round(cpu_kids if workers > 1 else cpu_driver, 2)
    shutil.rmtree(inputs)
    pages = stats["steps"][0]["kept"]
    return {"engine": engine, "workers": workers, "pages": pages, "docs_out": stats["documents_out"],
            "wall": wall, "pages_per_s": pages / wall, "init_s": init, "warm_s": warm, "cold": cold,
            "files_per_worker": per_worker, "tasks_per_worker": tasks_per_worker,
            "passes": stats["wall_seconds"], "cpu_s": cpu, "timeline": tl,
            # seconds in each step summed over tasks: which step slows when all cores work
            "step_ms_per_page": {st["name"]: round(1000 * st.get("seconds", 0.0) / max(1, pages), 3)
                                 for st in stats["steps"]}}


def _shared_data() -> Path:
    """../shared/data, which must hold web/ (the 320 pages); else exit with what to do."""
    from chatforge.common import shared_data_dir

    shared = shared_data_dir()
    if shared is None or not (shared / "web" / "expected-snippets.json").exists():
        sys.exit("no ../shared/data/web: set CHATFORGE_SHARED_DATA (or pass --warc for builds)")
    return shared


def make_input(tmp: Path, warc: str | None) -> Path:
    path = tmp / "src.warc.gz"
    if warc:
        shutil.copy(warc, path)
        return path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from data_pipeline import make_warc  # the same writer and URLs as the pipeline benchmark

    shared = _shared_data()
    n = make_warc(shared, path, 1)
    print(f"input: {n} pages from {shared / 'web'} -> {path.stat().st_size / 1e6:.1f} MB WARC.gz", flush=True)
    return path


def _ceiling_worker(args) -> tuple[float, float]:
    """One process of the ceiling probe: the extractor alone over the 320 pages, `rounds` times, after
    a barrier so every process runs at once -> (pages/s of this process, CPU seconds per page)."""
    shared, extractor, rounds, barrier = args
    import gzip

    from chatforge.data.extract import get_backend

    exp = json.loads((shared / "web" / "expected-snippets.json").read_text())
    pages = [gzip.open(shared / "web" / "pages" / v["file"]).read().decode("utf-8", "replace") for v in exp.values()]
    extract = get_backend(extractor)
    extract(pages[0])  # imports and caches, untimed
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for html in pages:
            extract(html)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return rounds * len(pages) / wall, cpu / (rounds * len(pages))


def ceiling(widths: list[int], extractor: str, rounds: int) -> list[dict]:
    """What the machine allows: w fresh processes (spawned, as Ray's workers) each extracting the same
    pages, no build around it. If this scales no better than the build, the cores are the limit."""
    import multiprocessing as mp

    shared = _shared_data()
    ctx, rows = mp.get_context("spawn"), []
    for w in widths:
        with ctx.Manager() as manager, ctx.Pool(w) as pool:
            barrier = manager.Barrier(w)
            res = pool.map(_ceiling_worker, [(shared, extractor, rounds, barrier)] * w)
        rate = sum(r[0] for r in res)
        rows.append({"workers": w, "pages_per_s": rate, "cpu_ms_per_page": 1000 * sum(r[1] for r in res) / w})
        base = rows[0]["pages_per_s"]
        print(f"ceiling {w:>2} processes: {rate:8.1f} pages/s, efficiency {rate / (w * base):.2f}, "
              f"CPU {rows[-1]['cpu_ms_per_page']:.1f} ms per page", flush=True)
    return rows


def main() -> int:
    from chatforge.data.build import BuildConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--warc", help="a WARC.gz to copy (default: built from ../shared/data/web's 320 pages)")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--extractor", default=BuildConfig().extractor)
    ap.add_argument("--files-per-worker", type=int, default=3, help="WARC copies per worker (build.plan_tasks groups "
                    "them into --tasks-per-worker tasks per worker)")
    ap.add_argument("--tasks-per-worker", type=int, default=BuildConfig().tasks_per_worker,
                    help="BuildConfig.tasks_per_worker: tasks per worker when the copies allow")
    ap.add_argument("--cold", action="store_true", help="no warm-up: the first tasks pay the one-off imports and set-ups")
    ap.add_argument("--ceiling", type=int, metavar="ROUNDS", help="instead of builds: the extractor alone in w "
                    "spawned processes, ROUNDS passes over the 320 pages each (the machine's own scaling)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "WORKERS", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        engine, w, tmp = args.child
        r = one_build(Path(tmp) / "src.warc.gz", Path(tmp), engine, int(w), args.extractor, args.cold,
                      args.files_per_worker, args.tasks_per_worker)
        print("ROW " + json.dumps(r), flush=True)
        return 0
    widths = [int(x) for x in args.workers.split(",")]
    if args.ceiling:
        rows = ceiling(widths, args.extractor, args.ceiling)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return 0
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_input(tmp, args.warc)
        for engine in engines:
            for w in widths:
                cmd = [sys.executable, __file__, "--child", engine, str(w), str(tmp), "--extractor", args.extractor,
                       "--files-per-worker", str(args.files_per_worker), "--tasks-per-worker", str(args.tasks_per_worker)]
                p = subprocess.run(cmd + (["--cold"] if args.cold else []), capture_output=True, text=True)
                line = next((x for x in p.stdout.splitlines() if x.startswith("ROW ")), None)
                if p.returncode or line is None:
                    print(f"{engine} at {w} workers failed (exit {p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-3000:]}", flush=True)
                    continue
                r = json.loads(line[4:])
                rows.append(r)
                if args.json:  # after every build: a run cut short keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=1))
                print(json.dumps({k: v for k, v in r.items() if k != "timeline"} |
                                 {"timeline": {k: v for k, v in r["timeline"].items() if k != "tasks"}}), flush=True)
    print(f"\n{os.cpu_count()} cores, extractor {args.extractor}, {args.files_per_worker} x 320 pages per worker "
          f"in ~{min(args.files_per_worker, args.tasks_per_worker)} tasks, "
          f"{'cold (one-off imports timed)' if args.cold else 'start-up untimed (Ray: init + warm-up; local: driver warm-up)'}")
    print("| engine | workers | pages | wall s | pages/s | speed-up | efficiency | filter / dedup / finish s "
          "| workers used (max tasks) | first / last worker start s | busy | task s (first / later) | tail s "
          "| CPU s driver / workers / Ray daemons |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    # pages/s of each engine's runs by width (a width may repeat: --workers 1,16,1,16), and the
    # per-worker rate of its narrowest width (the median of its runs) that speed-ups are taken over
    by_width = {e: {} for e in engines}
    for r in rows:
        by_width[r["engine"]].setdefault(r["workers"], []).append(r["pages_per_s"])
    per_worker = {e: statistics.median(v[min(v)]) / min(v) for e, v in by_width.items() if v}
    for engine in engines:
        for r in (r for r in rows if r["engine"] == engine):
            up = r["pages_per_s"] / per_worker[engine]
            p, t, c = r["passes"], r["timeline"], r["cpu_s"]
            tl = (f"{t['workers_used']} ({t['max_tasks_per_worker']}) | {t['first_start_s']:.2f} / {t['last_first_start_s']:.2f} | "
                  f"{t['busy_frac']:.2f} | {t['task_s']:.2f} ({t['first_task_s']:.2f} / {t['later_task_s']:.2f}) | {t['tail_s']:.2f}"
                  if t.get("workers_used") else "- | - | - | - | -")
            print(f"| {engine} | {r['workers']} | {r['pages']} | {r['wall']:.1f} | {r['pages_per_s']:.0f} | {up:.2f} | "
                  f"{up / r['workers']:.2f} | {p['filter']:.1f} / {p['dedup']:.2f} / {p['finish']:.2f} | {tl} | "
                  f"{c['driver']:.1f} / {c['workers']:.1f} / {c.get('ray_daemons', 0):.1f} |")
    for engine, runs in by_width.items():  # widths measured more than once: their medians
        if runs and max(len(v) for v in runs.values()) > 1:
            print(f"{engine}, medians: " + ", ".join(
                f"{w} workers {statistics.median(v):.0f} pages/s ({len(v)} runs: {', '.join(f'{x:.0f}' for x in v)}), "
                f"efficiency {statistics.median(v) / (w * per_worker[engine]):.2f}" for w, v in sorted(runs.items())))
    for r in rows:
        print(f"{r['engine']} {r['workers']}: ms per page in each step: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r.get("step_ms_per_page", {}).items()))
    for r in rows:
        if r["cpu_s"].get("ray_daemons_by_name"):
            print(f"ray {r['workers']}: Ray's own processes' CPU s during the build: {r['cpu_s']['ray_daemons_by_name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
