"""The shape every pipeline step shares: documents in, documents out, counts kept per rule.

A document is a `Doc` (id, url, text, meta). A step is a callable object that takes an
iterator of documents and yields the ones it keeps (maybe changed). Each step owns a
`StepStats`: documents in / kept / dropped per named rule, bytes in and out, seconds spent.
Stats are plain dicts on disk, so the counts of many workers (or many machines) add up.

Steps hold no global state, so the same step objects run under the local process pool
(`chatforge.data.build`) or any engine that maps a function over input files with a
(rank, world_size) split.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator


@dataclass(slots=True)
class Doc:
    id: str
    text: str
    url: str = ""
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "url": self.url, "text": self.text, "meta": self.meta}


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


MAX_EXAMPLES = 20


class StepStats:
    """in = kept + sum(dropped.values()) always holds; `counters` holds extra tallies."""

    def __init__(self, name: str):
        self.name = name
        self.n_in = 0
        self.kept = 0
        self.dropped: Counter = Counter()
        self.counters: Counter = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.seconds = 0.0
        self.examples: dict[str, list[str]] = {}  # reason -> the first few inputs it named (bad files)

    def drop(self, reason: str, where: str | None = None) -> None:
        self.dropped[reason] += 1
        if where is not None:
            self.note(reason, where)

    def note(self, reason: str, where: str) -> None:
        names = self.examples.setdefault(reason, [])
        if len(names) < MAX_EXAMPLES and where not in names:
            names.append(where)

    def to_dict(self) -> dict:
        return {"name": self.name, "in": self.n_in, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "counters": dict(sorted(self.counters.items())),
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "seconds": round(self.seconds, 4),
                **({"examples": dict(sorted(self.examples.items()))} if self.examples else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "StepStats":
        s = cls(d["name"])
        s.n_in, s.kept = d["in"], d["kept"]
        s.dropped, s.counters = Counter(d["dropped"]), Counter(d.get("counters", {}))
        s.bytes_in, s.bytes_out, s.seconds = d["bytes_in"], d["bytes_out"], d["seconds"]
        s.examples = {k: list(v) for k, v in d.get("examples", {}).items()}
        return s

    def merge(self, other: "StepStats") -> None:
        self.n_in += other.n_in
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds += other.seconds
        for reason, names in other.examples.items():
            for n in names:
                self.note(reason, n)


class Step:
    """Base class: subclasses implement `process(doc) -> Doc | str`.

    Return the (possibly modified) doc to keep it, or a string naming the rule that drops it.
    """

    name = "step"

    def __init__(self):
        self.stats = StepStats(self.name)

    def process(self, doc: Doc) -> Doc | str:
        raise NotImplementedError

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        st = self.stats
        for doc in docs:
            t0 = time.perf_counter()
            st.n_in += 1
            st.bytes_in += utf8_len(doc.text)
            out = self.process(doc)
            st.seconds += time.perf_counter() - t0
            if isinstance(out, str):
                st.drop(out)
                continue
            st.kept += 1
            st.bytes_out += utf8_len(out.text)
            yield out


def run_steps(docs: Iterable[Doc], steps: list) -> Iterator[Doc]:
    """Chain steps lazily: one document flows through all steps before the next is read."""
    for step in steps:
        docs = step(docs)
    return docs
