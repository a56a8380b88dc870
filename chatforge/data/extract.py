"""Main-text extraction from HTML, with a per-document time limit.

Backends:
  trafilatura  FineWeb's choice and settings: favor_precision=True, include_comments=False,
               deduplicate=True. Pure Python over lxml; slow, and on some huge pages it runs
               for minutes (a known trafilatura issue), hence the time limit.
  resiliparse  resiliparse's `extract_plain_text(main_content=True)`: C++ (lexbor), ~10x faster.
  fast         ours (chatforge/data/extract_fast.py): one lxml parse and walk, boilerplate rules.
               The default: on the 320 evaluation pages F1 0.924 vs trafilatura's 0.915 (0.914 vs
               0.913 on the half its rules were not tuned on) at 5.7x its speed.
The default is picked from benchmarks/extraction_quality.py (see docs/benchmarks.md).

The time limit uses SIGALRM (each worker is a process running us in its main thread), so a
runaway page costs at most `timeout` seconds and is counted as `timeout`.
"""

from __future__ import annotations

import signal
import threading

from chatforge.common import ChatforgeError
from chatforge.data.steps import Doc, Step

BACKENDS = ("trafilatura", "resiliparse", "fast")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def extract_trafilatura(html: str) -> str | None:
    import trafilatura
    from trafilatura.deduplication import LRU_TEST

    # deduplicate=True drops text segments already seen in a process-wide LRU cache, so a page's
    # text would depend on which pages the same worker extracted before (tasks, retries, engine):
    # clear it, so `deduplicate` removes repeats within the page only and builds are reproducible
    LRU_TEST.clear()
    return trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True,
                               include_tables=True, with_metadata=False)


def extract_resiliparse(html: str) -> str | None:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    return extract_plain_text(tree, main_content=True, alt_texts=False, links=False,
                              list_bullets=True, form_fields=False, noscript=False, comments=False)


def get_backend(name: str):
    """The extraction function; imports its library now, so no page's time limit pays for that."""
    if name == "trafilatura":
        import trafilatura  # noqa: F401  (~1 s: lxml, justext, htmldate, courlan)

        return extract_trafilatura
    if name == "resiliparse":
        try:
            import resiliparse  # noqa: F401
        except ImportError:
            raise ChatforgeError("resiliparse is not installed: `pip install resiliparse`, or use --extractor trafilatura")
        return extract_resiliparse
    if name == "fast":
        from chatforge.data.extract_fast import extract_fast

        return extract_fast
    raise ChatforgeError(f"unknown extractor '{name}'; choose one of {', '.join(BACKENDS)}")


class Extractor(Step):
    """HTML docs -> main text. Docs that are already text (JSONL, parquet, WET) pass through."""

    name = "extract"

    def __init__(self, backend: str = "fast", timeout: float = 1.0):
        super().__init__()
        self.backend = backend
        self.fn = get_backend(backend)
        self.fn("<html><body><p>Warm-up: first calls load stop lists and caches.</p></body></html>")
        self.timeout = timeout

    def _run(self, html: str) -> str | None:
        if not self.timeout or threading.current_thread() is not threading.main_thread():
            return self.fn(html)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            return self.fn(html)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def process(self, doc: Doc):
        if doc.meta.get("format") != "html":
            self.stats.counters["passed_through_text"] += 1
            return doc
        try:
            text = self._run(doc.text)
        except _Timeout:
            return "timeout"
        except Exception:
            return "extractor_error"
        text = (text or "").strip()
        if not text:
            return "no_text_extracted"
        doc.text = text
        doc.meta["format"] = "text"
        return doc
