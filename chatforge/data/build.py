"""`chatforge data build`: inputs -> filtered, deduplicated, PII-scrubbed document shards.

Three passes, each resumable:
  1. per input task (a big file, or a group of small files), in N worker processes:
       read -> url_filter -> extract -> language -> gopher_repetition -> gopher_quality -> c4
       -> fineweb_quality -> minhash_signatures
     writes work/task_K.jsonl.zst (surviving docs), work/task_K.sig.npy / .exact.npy (hashes),
     and last work/task_K.stats.json, which marks the task done.
  2. once, over all signatures: exact + MinHash LSH duplicates -> work/dedup_K.npy
  3. per task, in workers: drop duplicates -> pii -> DIR/docs_K.jsonl.zst (+ work/out_K.stats.json)
Then DIR/stats.json (every step's counts, merged over tasks) and a printed summary.

A killed build restarts where it stopped: a task is redone only if its marker is missing,
every file is written under a temporary name and renamed, so no document is written twice.
Each step is a plain generator over documents, so `run_task` is what a distributed engine
(Slurm array, Ray) calls with its share of the tasks: `--engine ray` (chatforge/data/ray_engine.py)
runs passes 1 and 3 and the dedup's band buckets as Ray tasks, same functions, same outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chatforge.common import ChatforgeError, atomic_path, atomic_write_json, human_bytes, shared_data_dir
from chatforge.data.steps import Doc, StepStats, run_steps

STAGE1_STEPS = ["read", "url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4",
                "fineweb_quality", "minhash_signatures"]
STAGE3_STEPS = ["dedup", "pii"]


@dataclass
class BuildConfig:
    """Every threshold of the pipeline. Defaults follow FineWeb's recipe."""

    extractor: str = "fast"               # or "trafilatura", "resiliparse"; see docs/benchmarks.md "Data at scale"
    extract_timeout: float = 1.0          # seconds per page
    languages: tuple = ("en",)            # empty: keep every language (still labelled)
    language_threshold: float = 0.65
    domain_blocklists: tuple | None = None  # None: UT1 adult list from ../shared/data when present
    url_blocklists: tuple | None = None
    extra_blocked_domains: tuple = ()
    url_banned_words: bool = True
    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4: bool = True
    fineweb_quality: bool = True
    exact_dedup: bool = True
    minhash_dedup: bool = True
    minhash_ngrams: int = 5
    minhash_bands: int = 14
    minhash_rows: int = 8
    pii: bool = True
    text_key: str = "text"
    text_chunk_words: int = 2000
    task_bytes: int = 64 << 20            # small input files are grouped into tasks of about this size
    tasks_per_worker: int = 8             # ...or smaller, so every worker gets this many (a shorter idle tail)
    overrides: dict = field(default_factory=dict)  # per-step keyword overrides, e.g. {"gopher_quality": {"min_doc_words": 20}}

    def resolved_blocklists(self) -> tuple[tuple, tuple]:
        doms, urls = self.domain_blocklists, self.url_blocklists
        shared = shared_data_dir()
        if doms is None:
            p = shared / "blocklist" / "ut1-adult-domains.txt.xz" if shared else None
            doms = (str(p),) if p and p.exists() else ()
        if urls is None:
            p = shared / "blocklist" / "ut1-adult-urls.txt.xz" if shared else None
            urls = (str(p),) if p and p.exists() else ()
        return tuple(doms), tuple(urls)


def make_stage1_steps(cfg: BuildConfig) -> list:
    from chatforge.data.dedup import MinHasher, Signatures
    from chatforge.data.extract import Extractor
    from chatforge.data.langid import LanguageFilter
    from chatforge.data.quality import C4Lines, FineWebQuality, GopherQuality, GopherRepetition
    from chatforge.data.url_filter import URLFilter

    ov = cfg.overrides
    doms, urls = cfg.resolved_blocklists()
    steps = [URLFilter(doms, urls, cfg.extra_blocked_domains, cfg.url_banned_words, **ov.get("url_filter", {})),
             Extractor(cfg.extractor, cfg.extract_timeout),
             LanguageFilter(cfg.languages, cfg.language_threshold)]
    for flag, cls in ((cfg.gopher_repetition, GopherRepetition), (cfg.gopher_quality, GopherQuality),
                      (cfg.c4, C4Lines), (cfg.fineweb_quality, FineWebQuality)):
        if flag:
            steps.append(cls(**ov.get(cls.name, {})))
    steps.append(Signatures(MinHasher(cfg.minhash_ngrams, cfg.minhash_bands, cfg.minhash_rows)))
    return steps


_WARM_UP_PAGE = ("<html><head><title>Warm-up page</title></head><body><nav class='menu'><a href='/'>Home</a></nav>"
                 "<article class='post-content'><h1>A page made up for the warm-up</h1>"
                 "<p>This page is made up so that every step of the pipeline sees one ordinary English page "
                 "before any real input arrives. It is long enough to pass the quality rules, and it says "
                 "nothing that a reader would need to know.</p><p>The garden behind the old library was planted "
                 "by volunteers in the spring. They chose roses, lavender and a few rows of beans, and they "
                 "water them every morning before the doors open.</p><p>Visitors often sit on the bench by the "
                 "wall with a book. In the summer the children's reading club meets there on Thursdays, and "
                 "the librarians bring lemonade when the weather is warm.</p><p>Questions about the garden can "
                 "be sent to warm-up@example.com at any time of the year.</p></article>"
                 "<footer class='site-footer'>Copyright nobody</footer></body></html>")


def warm_pipeline(cfg: BuildConfig | None = None) -> None:
    """Imports the pipeline and runs one made-up page through every step once, in this process:
    models loaded, lazy imports and first-call set-ups done. A driver that did this passes it on
    to the local pool's forked workers; `ray_engine.warm_workers` runs it in every Ray worker.
    (A made-up page, so no cache holds anything of the real input.)"""
    import warcio.archiveiterator  # noqa: F401  (imported on a WARC's first read)
    import zstandard  # noqa: F401

    from chatforge.data.pii import PIIRedactor
    from chatforge.data.readers import Reader

    cfg = cfg or BuildConfig()
    Reader(cfg.text_key, cfg.text_chunk_words)
    doc = Doc("warm-up", _WARM_UP_PAGE, "https://www.example.com/warm-up", {"format": "html"})
    for _ in PIIRedactor()(run_steps([doc], make_stage1_steps(cfg))):
        pass


# ------------------------------------------------------------------ doc shard files

def write_docs(path: Path, docs) -> int:
    """Write docs as zstd-compressed JSONL, atomically. Returns the number written."""
    import zstandard

    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as zf:
                w = io.TextIOWrapper(zf, encoding="utf-8")
                for d in docs:
                    w.write(json.dumps(d.to_json(), ensure_ascii=False) + "\n")
                    n += 1
                w.flush()
                w.detach()
    return n


def read_docs(path: Path):
    """Yield Docs from a docs_*.jsonl.zst shard."""
    import zstandard

    with open(path, "rb") as raw:
        with zstandard.ZstdDecompressor().stream_reader(raw) as zf:
            for line in io.TextIOWrapper(zf, encoding="utf-8"):
                o = json.loads(line)
                yield Doc(o["id"], o["text"], o.get("url", ""), o.get("meta", {}))


def doc_shards(docs_dir) -> list[Path]:
    paths = sorted(Path(docs_dir).glob("docs_*.jsonl.zst"))
    if not paths:
        raise ChatforgeError(f"no docs_*.jsonl.zst shards in {docs_dir}; run `chatforge data build` first")
    return paths


# ------------------------------------------------------------------ tasks

def plan_tasks(files: list[Path], task_bytes: int, workers: int = 1, per_worker: int = 8) -> list[list[str]]:
    """Group input files (in order) into tasks of about task_bytes; a big file is its own task.

    Tasks are made small enough that every worker gets per_worker of them when files allow: the
    more tasks, the less time workers that finished early wait for the last one.
    """
    total = sum(f.stat().st_size for f in files)
    task_bytes = max(1, min(task_bytes, total // (max(1, per_worker) * workers) + 1))
    tasks, cur, size = [], [], 0
    for f in files:
        s = f.stat().st_size
        if cur and size + s > task_bytes:
            tasks.append(cur)
            cur, size = [], 0
        cur.append(str(f))
        size += s
    if cur:
        tasks.append(cur)
    return tasks


def _stats_list(steps_stats) -> list[dict]:
    return [s.to_dict() for s in steps_stats]


def run_task(k: int, files: list[str], work: str, cfg: BuildConfig, poisoned: tuple = ()) -> list[dict]:
    """Pass 1 for one task. Returns its step stats (also written as the done marker).

    `poisoned`: input files of this task that an engine found to fail every time (they are left
    out, counted under read `poisoned_input` and named in its examples).
    """
    t_start = time.time()
    from chatforge.data.readers import Reader

    work = Path(work)
    reader = Reader(cfg.text_key, cfg.text_chunk_words)
    for f in poisoned:
        reader.stats.n_in += 1
        reader.stats.drop("poisoned_input", str(f))
    steps = make_stage1_steps(cfg)

    def docs():
        n, b = 0, reader.stats.bytes_in
        for f in files:
            if f in poisoned:
                continue
            for d in reader.read(f):
                n += 1
                if n == 1:
                    _injected_fault(k)
                if n % 64 == 0:
                    _tick(64, reader.stats.bytes_in - b, k)
                    b = reader.stats.bytes_in
                yield d
        _tick(n % 64, reader.stats.bytes_in - b, k)

    out = run_steps(docs(), steps)
    write_docs(work / f"task_{k:05d}.jsonl.zst", out)
    sigs, exact = steps[-1].take()
    for name, arr in (("sig", sigs), ("exact", exact)):
        with atomic_path(work / f"task_{k:05d}.{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    stats = _stats_list([reader.stats] + [s.stats for s in steps])
    atomic_write_json(work / f"task_{k:05d}.stats.json", stats)
    _log_task("filter", k, t_start)
    return stats


def _log_task(what: str, k: int, t_start: float) -> None:
    """CHATFORGE_TASK_LOG=FILE appends one JSON line per finished task: pass, task, host, pid and
    wall-clock start and end (benchmarks/data_scaling.py's per-worker timeline). Off by default."""
    path = os.environ.get("CHATFORGE_TASK_LOG")
    if path:
        import socket

        line = json.dumps({"pass": what, "task": k, "host": socket.gethostname(), "pid": os.getpid(),
                           "start": t_start, "end": time.time()}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one short O_APPEND write: lines from many workers do not interleave
        finally:
            os.close(fd)


def _injected_fault(k: int) -> None:
    """Tests kill a worker in the middle of task K once: CHATFORGE_TEST_KILL_TASK='K:marker-file'."""
    spec = os.environ.get("CHATFORGE_TEST_KILL_TASK")
    if spec:
        kk, marker = spec.split(":", 1)
        if int(kk) == k and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(17)


def finish_task(k: int, out_dir: str, cfg: BuildConfig) -> list[dict]:
    """Pass 3 for one task: drop duplicates, redact PII, write the final shard."""
    t_start = time.time()
    from chatforge.data.dedup import EXACT_DUP, NEAR_DUP
    from chatforge.data.pii import PIIRedactor

    out_dir = Path(out_dir)
    work = out_dir / "work"
    status = np.load(work / f"dedup_{k:05d}.npy")
    dd = StepStats("dedup")
    pii = PIIRedactor(emails=cfg.pii, ips=cfg.pii)

    def kept():
        t0 = time.perf_counter()
        for i, doc in enumerate(read_docs(work / f"task_{k:05d}.jsonl.zst")):
            dd.n_in += 1
            s = int(status[i])
            if s == EXACT_DUP:
                dd.drop("exact_duplicate")
            elif s == NEAR_DUP:
                dd.drop("near_duplicate")
            else:
                dd.kept += 1
                dd.bytes_out += len(doc.text.encode())
                dd.seconds += time.perf_counter() - t0
                yield doc
                t0 = time.perf_counter()
                continue
            dd.bytes_in += len(doc.text.encode())
        dd.seconds += time.perf_counter() - t0
        dd.bytes_in += dd.bytes_out

    write_docs(out_dir / f"docs_{k:05d}.jsonl.zst", pii(kept()))
    stats = _stats_list([dd, pii.stats])
    atomic_write_json(work / f"out_{k:05d}.stats.json", stats)
    (work / f"task_{k:05d}.jsonl.zst").unlink(missing_ok=True)  # the final shard replaces it
    _log_task("finish", k, t_start)
    return stats


# ------------------------------------------------------------------ driver

def _fingerprint(files: list[Path], cfg: BuildConfig) -> str:
    h = hashlib.sha1()
    for f in files:
        h.update(str(f.resolve()).encode())
        h.update(str(f.stat().st_size).encode())
    h.update(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()


# documents read so far, summed over workers: a shared counter set up before the pool forks,
# so the progress bar moves inside a task too (one big WARC is one task)
_DOCS_READ = None
_LOCAL_BAR = None
_REPORT = None  # set in Ray workers: reports (task, docs, bytes) to the driver's progress board


def _tick(n: int, nbytes: int = 0, k: int = -1) -> None:
    if _REPORT is not None:
        _REPORT(k, n, nbytes)
    elif _LOCAL_BAR is not None:
        _LOCAL_BAR.set_postfix_str(f"{_LOCAL_BAR.postfix_n + n:,} docs read", refresh=False)
        _LOCAL_BAR.postfix_n += n
        _LOCAL_BAR.update(0)
    elif _DOCS_READ is not None:
        with _DOCS_READ.get_lock():
            _DOCS_READ.value += n


def _pool_map(fn, jobs: list[tuple], workers: int, desc: str, quiet: bool, keep_going: bool = False) -> list:
    """Run fn(*job) for each job in `workers` processes (in-process when workers == 1).

    keep_going: a job that raises is returned as (job, exception) instead of stopping the map
    (a dead worker process still stops it: that breaks the whole pool).
    """
    global _DOCS_READ, _LOCAL_BAR
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="task", disable=quiet or not jobs, leave=False, mininterval=1.0)
    bar.postfix_n = 0
    failed = []
    try:
        if workers <= 1:
            _LOCAL_BAR = None if bar.disable else bar
            for job in jobs:
                try:
                    fn(*job)
                except Exception as e:
                    if not keep_going:
                        raise
                    failed.append((job, e))
                bar.update()
        else:
            _DOCS_READ = mp.get_context("fork").Value("q", 0)
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)) or 1, mp_context=mp.get_context("fork")) as ex:
                pending = {ex.submit(fn, *job): job for job in jobs}
                while pending:
                    done, _ = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = pending.pop(fut)
                        try:
                            fut.result()
                        except BrokenProcessPool:
                            raise
                        except Exception as e:
                            if not keep_going:
                                raise
                            failed.append((job, e))
                        bar.update()
                    if _DOCS_READ.value:
                        bar.set_postfix_str(f"{_DOCS_READ.value:,} docs read")
    finally:
        _DOCS_READ = _LOCAL_BAR = None
        bar.close()
    return failed


def rerun_without_poisoned(job: tuple, err: Exception, run, quiet: bool) -> None:
    """A pass-1 task raised: run each of its files alone (in a scratch folder, via `run`, which
    raises on failure), then rerun the task without the files that fail alone (read
    `poisoned_input`, named in stats). Both engines use this."""
    import shutil

    k, files, work, cfg = job
    if not quiet:
        print(f"task {k} failed ({type(err).__name__}: {err}); probing its {len(files)} file(s)")
    scratch = Path(work) / f"probe_{k:05d}"
    bad = []
    for i, f in enumerate(files):
        try:
            run(k, [f], str(scratch / str(i)), cfg)
        except Exception:
            bad.append(f)
    shutil.rmtree(scratch, ignore_errors=True)
    if not bad:
        raise ChatforgeError(f"build task {k} fails although each of its files alone passes: {err}")
    if not quiet:
        print(f"task {k}: skipping poisoned input(s): {', '.join(bad)}")
    run(k, files, work, cfg, tuple(bad))


def merge_stats(per_task: list[list[dict]]) -> list[StepStats]:
    merged: dict[str, StepStats] = {}
    for stats in per_task:
        for d in stats:
            s = StepStats.from_dict(d)
            if s.name in merged:
                merged[s.name].merge(s)
            else:
                merged[s.name] = s
    return list(merged.values())


def build(inputs, out_dir, workers: int = 1, config: BuildConfig | None = None, quiet: bool = False,
          engine: str = "local", address: str | None = None) -> dict:
    """Python API of `chatforge data build`. Returns the stats.json content.

    engine "local": a process pool of `workers` on this machine (the default; no Ray needed).
    engine "ray": the same three passes as Ray tasks (chatforge/data/ray_engine.py), on a local
    Ray of `workers` CPUs, or the cluster at `address`; then `out_dir` must be on a filesystem
    every node sees.
    """
    if engine not in ("local", "ray"):
        raise ChatforgeError(f"unknown engine '{engine}'; choose local or ray")
    from chatforge.data.dedup import find_duplicates
    from chatforge.data.readers import expand_inputs
    from chatforge.data.url_filter import load_hashed_list

    cfg = config or BuildConfig()
    from chatforge.data.extract import get_backend

    get_backend(cfg.extractor)  # fail fast on an unknown/uninstalled backend
    t_start = time.perf_counter()
    files = expand_inputs([str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)])
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(files, cfg)
    manifest = out / "build.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("fingerprint") != fp:
            raise ChatforgeError(f"{out} holds a build of other inputs or settings; use a new --out directory (or delete it)")
    ray_run = None
    if engine == "ray":
        from chatforge.data.ray_engine import RayEngine

        ray_run = RayEngine(address, workers, quiet)
        workers = ray_run.cpus
    workers = max(1, int(workers or os.cpu_count() or 1))
    if manifest.exists():
        tasks = json.loads(manifest.read_text())["tasks"]  # a resumed build keeps its task plan
        for tmp in [*out.glob(".*.tmp"), *work.glob(".*.tmp")]:  # half-written files of a killed run
            tmp.unlink(missing_ok=True)
    else:
        tasks = plan_tasks(files, cfg.task_bytes, workers, cfg.tasks_per_worker)
    atomic_write_json(manifest, {"fingerprint": fp, "inputs": [str(f) for f in files], "tasks": tasks,
                                 "config": dataclasses.asdict(cfg)})
    # build blocklist caches once here, so forked workers only memory-map them
    doms, urls = cfg.resolved_blocklists()
    for p in doms:
        load_hashed_list(p, "domain")
    for p in urls:
        load_hashed_list(p, "url")
    if not doms and not quiet:
        print("note: no domain blocklist (../shared/data/blocklist absent and none given); URL filter uses banned words only")

    todo = [(k, t, str(work), cfg) for k, t in enumerate(tasks) if not (work / f"task_{k:05d}.stats.json").exists()]
    if not quiet and len(todo) < len(tasks):
        print(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} tasks already filtered")
    t1 = time.perf_counter()
    if ray_run:
        ray_run.filter(todo)
    else:
        for job, err in _pool_map(run_task, todo, workers, "filter", quiet, keep_going=True):
            rerun_without_poisoned(job, err, run_task, quiet)
    t_filter = time.perf_counter() - t1

    t2 = time.perf_counter()
    marker = work / "dedup.json"
    if not marker.exists():
        statuses = find_duplicates([work / f"task_{k:05d}.sig.npy" for k in range(len(tasks))],
                                   [work / f"task_{k:05d}.exact.npy" for k in range(len(tasks))],
                                   cfg.minhash_bands, cfg.minhash_rows, cfg.exact_dedup, cfg.minhash_dedup,
                                   map_bands=ray_run.map_bands if ray_run else None)
        for k, st in enumerate(statuses):
            with atomic_path(work / f"dedup_{k:05d}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, st)
        atomic_write_json(marker, {"tasks": len(tasks), "documents": int(sum(len(s) for s in statuses))})
    t_dedup = time.perf_counter() - t2

    t3 = time.perf_counter()
    todo = [(k, str(out), cfg) for k in range(len(tasks)) if not (work / f"out_{k:05d}.stats.json").exists()]
    if ray_run:
        ray_run.finish(todo)
    else:
        _pool_map(finish_task, todo, workers, "dedup+pii", quiet)
    t_finish = time.perf_counter() - t3
    if ray_run:
        ray_run.close()

    per_task = [json.loads((work / f"task_{k:05d}.stats.json").read_text()) +
                json.loads((work / f"out_{k:05d}.stats.json").read_text()) for k in range(len(tasks))]
    steps = merge_stats(per_task)
    by_name = {s.name: s for s in steps}
    if "dedup" in by_name:
        by_name["dedup"].counters["global_pass_seconds"] = round(t_dedup, 3)
    final = by_name["pii"].kept if "pii" in by_name else 0
    read = by_name.get("read")
    stats = {"inputs": [str(f) for f in files], "tasks": len(tasks), "workers": workers, "engine": engine,
             "bad_inputs": sorted({f for names in (read.examples.values() if read else []) for f in names}),
             "documents_out": final, "bytes_out": by_name["pii"].bytes_out if "pii" in by_name else 0,
             "wall_seconds": {"filter": round(t_filter, 3), "dedup": round(t_dedup, 3), "finish": round(t_finish, 3),
                              "total": round(time.perf_counter() - t_start, 3)},
             "steps": [s.to_dict() for s in steps],
             "shards": [f"docs_{k:05d}.jsonl.zst" for k in range(len(tasks))]}
    atomic_write_json(out / "stats.json", stats)
    if not quiet:
        print(format_summary(stats))
    return stats


def format_summary(stats: dict) -> str:
    lines = [f"{'step':<20} {'in':>9} {'kept':>9} {'dropped':>9} {'MB in':>9} {'MB out':>9} {'sec':>8}  top drop reasons"]
    for s in stats["steps"]:
        drops = sorted(s["dropped"].items(), key=lambda kv: -kv[1])
        why = ", ".join(f"{k} {v}" for k, v in drops[:4]) + (" ..." if len(drops) > 4 else "")
        extra = {k: v for k, v in s.get("counters", {}).items() if k in ("emails", "ips", "no_url", "passed_through_text")}
        if extra:
            why += ("; " if why else "") + ", ".join(f"{k} {v}" for k, v in extra.items())
        lines.append(f"{s['name']:<20} {s['in']:>9,} {s['kept']:>9,} {s['in'] - s['kept']:>9,} "
                     f"{s['bytes_in'] / 1e6:>9.2f} {s['bytes_out'] / 1e6:>9.2f} {s['seconds']:>8.2f}  {why}")
    w = stats["wall_seconds"]
    lines.append(f"{stats['documents_out']:,} documents ({human_bytes(stats['bytes_out'])} of text) in "
                 f"{len(stats['shards'])} shard(s); wall {w['total']:.1f}s (filter {w['filter']:.1f}s, "
                 f"dedup {w['dedup']:.1f}s, finish {w['finish']:.1f}s) with {stats['workers']} worker(s)"
                 f"{' on Ray' if stats.get('engine') == 'ray' else ''}")
    for s in stats["steps"]:
        for reason, names in s.get("examples", {}).items():
            lines.append(f"{s['name']} {reason}: {', '.join(names)}")
    return "\n".join(lines)
