"""Where a speedrun's raw text comes from.

With ../shared/data present we use its real text: Gutenberg books, Shakespeare, WikiText-2
*valid* (test is held out for bits-per-byte), the crawled web pages and the WARC excerpt.
Without it, the machine's own documentation stands in: READMEs, licences and HTML manuals under
/usr/share/doc and /usr/share/common-licenses (every Debian-like system has some), collected into
one JSONL file so the data stage reads it like any other input. Either way it runs offline.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_path, shared_data_dir

LOCAL_TEXT_ROOTS = ["/usr/share/doc", "/usr/share/common-licenses"]
_TEXT_SUFFIXES = (".txt", ".md", ".rst", "", ".gz")
_SKIP_NAMES = ("changelog",)  # version-by-version logs: lots of bytes, little prose


def shared_inputs(size: str = "all") -> list[Path]:
    """Real text from ../shared/data: directories and files `chatforge data build` walks itself.

    "all": the WARC excerpt, all 320 web pages, Shakespeare, WikiText-2 valid, 18 books (~25 MB
    of text). "small": the WARC excerpt and Shakespeare (~1 MB; HTML extraction still exercised).
    """
    root = shared_data_dir()
    if root is None:
        return []
    small = [root / "warc" / "cc-main-2020-34-excerpt.warc.gz", root / "text" / "tinyshakespeare.txt"]
    full = small + [root / "web" / "pages", root / "text" / "wikitext-2-valid.tokens.txt", root / "text" / "gutenberg"]
    return [p for p in (small if size == "small" else full) if p.exists()]


def _read_text_file(path: Path, limit: int) -> str | None:
    try:
        data = gzip.open(path).read(limit) if path.suffix == ".gz" else path.open("rb").read(limit)
    except (OSError, EOFError):
        return None
    if b"\x00" in data[:4096]:
        return None  # binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


HELDOUT_EVERY = 20  # every 20th local text is held out of training, for bits-per-byte


def local_heldout(work_dir) -> Path:
    return Path(work_dir) / "local-text" / "heldout.txt"


def local_inputs(work_dir, max_mb: float = 30.0) -> list[Path]:
    """Collect the machine's own documentation into WORK/local-text/local.jsonl (+ its HTML pages);
    every HELDOUT_EVERY-th text goes to WORK/local-text/heldout.txt instead (held-out text for bpb)."""
    work_dir = Path(work_dir)
    out = work_dir / "local-text" / "local.jsonl"
    texts_bytes = 0
    budget = int(max_mb * 1e6) if max_mb else 200_000_000
    if out.exists() and local_heldout(work_dir).exists():
        return [out] + _local_html(budget)
    out.parent.mkdir(parents=True, exist_ok=True)
    heldout = []
    n = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for root in LOCAL_TEXT_ROOTS:
            for p in sorted(Path(root).rglob("*")) if Path(root).is_dir() else []:
                name = p.name.lower()
                if not p.is_file() or p.is_symlink() or any(s in name for s in _SKIP_NAMES):
                    continue
                if not (p.suffix.lower() in _TEXT_SUFFIXES or name in ("copyright", "readme")):
                    continue
                text = _read_text_file(p, 1_000_000)
                if not text or len(text) < 200:
                    continue
                n += 1
                if n % HELDOUT_EVERY == 0:
                    heldout.append(text.strip())
                    continue
                f.write(json.dumps({"text": text, "url": f"file://{p}"}, ensure_ascii=False) + "\n")
                texts_bytes += len(text)
                if texts_bytes >= budget:
                    break
    if texts_bytes == 0:
        raise ChatforgeError("found no text on this machine (/usr/share/doc is empty) and ../shared/data is absent; "
                             "pass --inputs with text, HTML, JSONL or WARC files")
    with atomic_path(local_heldout(work_dir)) as tmp:
        tmp.write_text("\n\n".join(heldout) + "\n", encoding="utf-8")
    return [out] + _local_html(budget)


def _local_html(budget: int) -> list[Path]:
    pages, size = [], 0
    for root in LOCAL_TEXT_ROOTS:
        for p in sorted(Path(root).rglob("*.html")) if Path(root).is_dir() else []:
            if p.is_file() and not p.is_symlink():
                pages.append(p)
                size += p.stat().st_size
                if size > budget // 4:
                    return pages
    return pages


def resolve_inputs(kind: str, work_dir, max_mb: float = 30.0, explicit: list[str] | None = None):
    """-> (input paths for `chatforge data build`, a one-line description of where they came from,
    a held-out text file for bits-per-byte or None for the default WikiText-2 test).

    kind: "shared" (all of ../shared/data's text), "shared-small", or "local" (this machine's docs);
    the shared kinds fall back to local text when ../shared/data is absent."""
    if explicit:
        return list(explicit), "user-supplied inputs", None
    if kind.startswith("shared"):
        files = shared_inputs("small" if kind == "shared-small" else "all")
        if files:
            return [str(f) for f in files], "../shared/data: " + ", ".join(f.name for f in files), None
    files = local_inputs(work_dir, max_mb)
    return ([str(f) for f in files], "this machine's documentation (/usr/share/doc, licences); ../shared/data absent",
            str(local_heldout(work_dir)))
