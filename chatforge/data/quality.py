"""Heuristic quality filters, with FineWeb's defaults. Each rule drops under its own name.

  GopherRepetition  duplicated lines/paragraphs and repeated n-grams (Gopher, Rae et al. 2021, table A1)
  GopherQuality     word count, mean word length, symbol ratios, bullets/ellipsis lines, alphabetic
                    words, stop words
  C4Lines           C4's line rules (drop lines without enough words, with 'javascript', policy text;
                    drop docs with 'lorem ipsum', curly brackets, too few sentences). Modifies text.
  FineWebQuality    FineWeb's own: share of lines ending in punctuation, short lines, duplicated
                    line characters, newline-per-word ratio

Thresholds and rule logic follow datatrove's implementations (FineWeb's recipe: C4 without the
terminal-punctuation line filter). One difference: words come from a regex (`\\w+` runs and
punctuation runs), not spaCy/NLTK, and sentences are counted by terminal punctuation instead of
NLTK punkt: no model downloads, and ~10x faster. Counts may differ slightly on edge cases.
"""

from __future__ import annotations

import re
from collections import Counter

from chatforge.data.steps import Doc, Step

WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_PARA_RE = re.compile(r"\n{2,}")
_LINE_RE = re.compile(r"\n+")
PUNCTUATION = set("!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»") | {
    chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)}
# the common members of datatrove's TERMINAL_PUNCTUATION (unicode sentence terminals)
TERMINAL_PUNCTUATION = (".", "!", "?", "。", "！", "？", "．", "｡", "؟", "۔", "।", "॥", "።", "፧", "⁇", "⁈", "⁉", "‼")
STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


def split_words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def _find_duplicates(items) -> tuple[int, int]:
    seen, dup, dup_chars = set(), 0, 0
    for x in items:
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup, dup_chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    grams = Counter(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count  # length of " ".join(gram), times its count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by n-grams seen before (non-overlapping after a hit), as datatrove."""
    seen, idx, repeated = set(), 0, 0
    last = len(words) - n + 1
    while idx < last:
        gram = tuple(words[idx:idx + n])
        if gram in seen:
            repeated += sum(map(len, gram))
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


class GopherRepetition(Step):
    name = "gopher_repetition"

    def __init__(self, dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2, dup_para_char_frac=0.2,
                 top_n_grams=((2, 0.2), (3, 0.18), (4, 0.16)),
                 dup_n_grams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))):
        super().__init__()
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams, self.dup_n_grams = top_n_grams, dup_n_grams

    def process(self, doc: Doc):
        text = doc.text
        if not text:
            return "empty"
        paras = _PARA_RE.split(text.strip())
        dup, dup_chars = _find_duplicates(paras)
        if dup / len(paras) > self.dup_para_frac:
            return "dup_para_frac"
        if dup_chars / len(text) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINE_RE.split(text)
        dup, dup_chars = _find_duplicates(lines)
        if dup / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if dup_chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = split_words(text)
        for n, frac in self.top_n_grams:
            if _top_ngram_chars(words, n) / len(text) > frac:
                return f"top_{n}_gram"
        for n, frac in self.dup_n_grams:
            if _dup_ngram_chars(words, n) / len(text) > frac:
                return f"duplicated_{n}_n_grams"
        return doc


class GopherQuality(Step):
    name = "gopher_quality"

    def __init__(self, min_doc_words=50, max_doc_words=100_000, min_avg_word_length=3, max_avg_word_length=10,
                 max_symbol_word_ratio=0.1, max_bullet_lines_ratio=0.9, max_ellipsis_lines_ratio=0.3,
                 min_alpha_words_ratio=0.8, min_stop_words=2, stop_words=STOP_WORDS):
        super().__init__()
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg, self.max_avg = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet, self.max_ellipsis = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha, self.min_stop_words, self.stop_words = min_alpha_words_ratio, min_stop_words, frozenset(stop_words)

    def process(self, doc: Doc):
        text = doc.text
        words = split_words(text)
        n_words = len(words)
        content = [w for w in words if not all(c in PUNCTUATION for c in w)]
        if n_words == 0 or len(content) < self.min_doc_words:
            return "gopher_short_doc"
        if len(content) > self.max_doc_words:
            return "gopher_long_doc"
        avg = sum(map(len, content)) / len(content)
        if avg < self.min_avg:
            return "gopher_below_avg_word_length"
        if avg > self.max_avg:
            return "gopher_above_avg_word_length"
        if text.count("#") / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = text.splitlines() or [""]
        if sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > self.max_bullet:
            return "gopher_too_many_bullets"
        if sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > self.max_ellipsis:
            return "gopher_too_many_end_ellipsis"
        if sum(any(c.isalpha() for c in w) for w in words) / n_words < self.min_alpha:
            return "gopher_below_alpha_threshold"
        if len(self.stop_words.intersection(words)) < self.min_stop_words:
            return "gopher_not_enough_stop_words"
        return doc


_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Lines(Step):
    """C4 line filters (FineWeb: without the terminal-punctuation rule). Removed lines are counted."""

    name = "c4"

    def __init__(self, filter_no_terminal_punct=False, min_num_sentences=5, min_words_per_line=3,
                 max_word_length=1000, filter_lorem_ipsum=True, filter_javascript=True,
                 filter_curly_bracket=True, filter_policy=True, remove_citations=True):
        super().__init__()
        self.no_terminal = filter_no_terminal_punct
        self.min_sentences, self.min_words_per_line, self.max_word_length = min_num_sentences, min_words_per_line, max_word_length
        self.lorem, self.javascript, self.curly, self.policy = filter_lorem_ipsum, filter_javascript, filter_curly_bracket, filter_policy
        self.citations = remove_citations

    def process(self, doc: Doc):
        c = self.stats.counters
        kept, sentences = [], 0
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if self.max_word_length > 0 and any(len(w) > self.max_word_length for w in words):
                c["lines_dropped_too_long_word"] += 1
                continue
            if self.citations:
                line = _CITATION_RE.sub("", line)
            if self.no_terminal and (not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
                c["lines_dropped_no_terminal_punct"] += 1
                continue
            if len(words) < self.min_words_per_line:
                c["lines_dropped_too_few_words"] += 1
                continue
            low = line.lower()
            if self.lorem and "lorem ipsum" in low:
                return "lorem_ipsum"
            if self.javascript and "javascript" in low:
                c["lines_dropped_javascript"] += 1
                continue
            if self.curly and "{" in line:
                return "curly_bracket"
            if self.policy and any(p in low for p in POLICY_SUBSTRINGS):
                c["lines_dropped_policy"] += 1
                continue
            sentences += max(1, len(_SENTENCE_END_RE.findall(line)))
            kept.append(line)
        if sentences < self.min_sentences:
            return "too_few_sentences"
        doc.text = "\n".join(kept).strip()
        return doc


class FineWebQuality(Step):
    name = "fineweb_quality"

    def __init__(self, line_punct_thr=0.12, short_line_thr=0.67, short_line_length=30,
                 char_duplicates_ratio=0.01, new_line_ratio=0.3, stop_chars=TERMINAL_PUNCTUATION):
        super().__init__()
        self.line_punct_thr, self.short_line_thr, self.short_line_length = line_punct_thr, short_line_thr, short_line_length
        self.char_dup, self.new_line_ratio, self.stop_chars = char_duplicates_ratio, new_line_ratio, tuple(stop_chars)

    def process(self, doc: Doc):
        text = doc.text
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return "empty"
        if sum(ln.endswith(self.stop_chars) for ln in lines) / len(lines) < self.line_punct_thr:
            return "line_punct_ratio"
        if sum(len(ln) <= self.short_line_length for ln in lines) / len(lines) > self.short_line_thr:
            return "short_line_ratio"
        if _find_duplicates(lines)[1] / max(len(text) - text.count("\n"), 1) > self.char_dup:
            return "char_dup_ratio"
        words = split_words(text)
        if text.count("\n") / max(len(words), 1) > self.new_line_ratio:
            return "list_ratio"
        return doc
