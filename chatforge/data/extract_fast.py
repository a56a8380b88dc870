"""A fast main-text extractor: one lxml parse, one Python walk into text blocks, a few rules.

Choices, in pipeline order:
  1. parse once with lxml (libxml2, C) after cutting scripts and noscript out of the string;
     non-text elements (style, svg, forms' widgets, nav, ...) are dropped and inline tags (b, em,
     span's cousins) merged in C, so the walk visits fewer elements;
  2. one recursive walk turns the tree into blocks (the text of one paragraph-like element), each
     with its characters inside links, the containers around it, whether a content-named container
     (article, main, entry-content) holds it, and the boilerplate-named ones (footer/aside tags,
     class/id words like menu, sidebar, cookie, share, comment, related) that do;
  3. blocks in boilerplate containers go, unless the container holds most of the page's text (some
     themes put "sidebar" or "comments" on the wrapper of everything);
  4. then three narrowings to the article: content-named containers (if they hold half of the long,
     sentence-like text), the innermost container holding the first long block and 60% of the long
     text, and the span from the first to the last long block (plus the title just before it);
     link lists, repeats and headings of dropped lists go.
No learned weights; the thresholds and word lists were tuned by hand on half A of the 320 evaluation
pages of ../shared/data/web, and half B is reported as held out (benchmarks/extraction_quality.py).
"""

from __future__ import annotations

import functools
import re

from lxml import etree

# Subtrees never holding main text; stripped in C before the walk.
_STRIP_TAGS = ("script", "style", "noscript", "svg", "iframe", "template", "head", "button", "select",
               "textarea", "input", "label", "canvas", "video", "audio", "map", "object", "embed",
               "nav", "figcaption", "img", "picture", "source", "meta", "link", "wbr")
# inline formatting: merged into the parent's text (in C) so the Python walk visits fewer elements
_MERGE_TAGS = ("b", "strong", "em", "i", "u", "s", "font", "small", "big", "abbr", "time", "sup", "sub", "mark",
               "cite", "q", "dfn", "var", "kbd", "samp", "del", "ins", "bdi", "bdo")
# libxml2 parses noscript's content as markup (an HTML5 parser reads it as raw text), and a
# stray tag in it can swallow the rest of the page: cut noscript out of the string first.
_NOSCRIPT = re.compile(r"<noscript\b.*?</noscript\s*>", re.I | re.S)


def _cut_scripts(html: str) -> str:
    """Remove <script>...</script> with str.find (C speed; a regex's lazy .*? crawls through the
    script bodies, half of a page's bytes). Upper-case SCRIPT tags are left to strip_elements."""
    out, pos = [], 0
    while (i := html.find("<script", pos)) >= 0 and (j := html.find("</script>", i)) >= 0:
        out.append(html[pos:i])
        pos = j + 9
    out.append(html[pos:])
    return " ".join(out)


_BLOCK_TAGS = frozenset(("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dd", "dt",
                         "blockquote", "pre", "table", "tr", "td", "th", "section", "article", "main",
                         "header", "footer", "aside", "form", "figure", "br", "hr", "address", "center",
                         "tbody", "thead", "caption", "details", "summary", "body"))
_BOILER_TAGS = frozenset(("footer", "aside"))
# class/id words that mark boilerplate containers: whole words (split at anything not a letter
# or digit), or, for the unambiguous ones, anywhere (camelCase and run-together names)
_WHOLE_WORDS = ("nav", "menu", "menus", "submenu", "side", "banner", "share", "sharing", "respond", "reply",
                "popup", "modal", "overlay", "advert", "ads", "sponsor", "sponsored", "promo", "teaser", "tags",
                "tagcloud", "pagination", "pager", "login", "signup", "search", "toolbar", "masthead", "topbar",
                "byline", "bylines", "meta", "print", "rating", "trending", "popular", "readmore", "disclosure")
_ANYWHERE = ("cookie", "consent", "gdpr", "newsletter", "sidebar", "breadcrumb", "navigation", "navbar", "footer",
             "comment", "related", "recommend", "social", "shariff", "subscribe", "tooltip", "disqus", "outbrain",
             "taboola")
_BOILER_WORDS = re.compile(rf"(?:^|[^a-z0-9])(?:{'|'.join(_WHOLE_WORDS)})(?:$|[^a-z0-9])|{'|'.join(_ANYWHERE)}")
# layout switches that mention a boilerplate word without being boilerplate: "no-share",
# "has-sidebar", "layout-right-sidebar", "right-sidebar"
_MODIFIERS = re.compile(r"\b(?:no|has|with|without|layout|show|hide|enable|disable|is)-\S+|\S*(?:left|right)[-_]sidebar\S*"
                        r"|sidebar[-_](?:left|right)\S*|\S*sticky\S*")
_CONTENT_WORDS = re.compile(
    r"(?:^|[-_ ])(?:article|articlebody|article-body|article-content|article-text|entry-content|"
    r"post-content|post-body|post-text|story|story-body|content-body|main-content|maincontent|"
    r"text|body-text|blog-post|single-post|entry|post|content|main)(?:$|[-_ ])", re.I)
# a container that names itself the article body is never dropped for a word it also has ("entry-content no-share")
_CONTENT_NAME = re.compile(r"(?:entry|post|article|page|story|main)[-_]?(?:content|body|text)|articlebody|^(?:content|main|article)$")
_SENTENCE_END = re.compile(r"[.!?:;…\"'»”)]\s*$")


@functools.lru_cache(maxsize=1 << 16)  # class strings repeat within a site and across pages
def _name_kind(name: str) -> int:
    """A class or id attribute's verdict: 1 boilerplate, 2 content, 0 neither."""
    name = name.lower()
    if _CONTENT_NAME.search(name):
        return 2  # never dropped for a word it also has ("entry-content no-share")
    if _BOILER_WORDS.search(name) and _BOILER_WORDS.search(_MODIFIERS.sub(" ", name)):
        return 1
    return 2 if _CONTENT_WORDS.search(name) else 0


class _Block:
    __slots__ = ("text", "links", "tag", "in_content", "boiler", "path", "long")

    def __init__(self, text, links, tag, in_content, boiler, path):
        self.text, self.links, self.tag, self.in_content, self.boiler = text, links, tag, in_content, boiler
        self.path = path  # the numbers of the containers (div, section, td, ...) around it, outermost first
        n = len(text)  # a long block reads as running text: the anchors of the main region
        self.long = n >= 80 and links < 0.3 * n and (n >= 200 or bool(_SENTENCE_END.search(text)))


def _blocks(body) -> tuple[list[_Block], dict]:
    """Linearize into blocks (text between block-level boundaries) in one walk.

    Each block carries its link characters, whether a content container (article, main,
    entry-content) holds it, and the boilerplate-named containers around it (a tuple of numbers).
    Whether those containers are dropped is decided after the walk, once their sizes are known:
    one holding most of the page's text is a page wrapper, not boilerplate.
    """
    blocks: list[_Block] = []
    parts: list[str] = []  # text of the block being collected
    links = 0  # its characters inside <a>
    sizes: dict[int, float] = {}  # boilerplate container number -> the share of text it must stay under

    def flush(tag, in_content, boiler, path):
        nonlocal links
        text = " ".join("".join(parts).split())
        if text:
            blocks.append(_Block(text, links, tag, in_content, boiler, path))
        parts.clear()
        links = 0

    def walk(el, tag, in_link, in_content, boiler, path):
        # text before a block boundary belongs to the enclosing block (`tag`)
        nonlocal links, containers
        own = el.tag
        if own in _BLOCK_TAGS:
            if parts:
                flush(tag, in_content, boiler, path)
            tag = own
            if own in _CONTAINER_TAGS:
                containers += 1
                path = path + (containers,)
        if own in _BOILER_TAGS:  # an HTML5 tag says it; trusted unless it wraps nearly everything
            boiler = boiler + (len(sizes),)
            sizes[len(sizes)] = 0.8
        else:
            cls, ident = el.get("class"), el.get("id")
            kind = _name_kind(cls) if cls else 0
            if ident and kind != 2:
                kind = max(kind, _name_kind(ident))
            if kind == 1:
                boiler = boiler + (len(sizes),)
                sizes[len(sizes)] = 0.5
            elif kind == 2 or own in ("article", "main"):
                in_content = True
        if own == "a":
            in_link = True
        if el.text:
            parts.append(el.text)
            if in_link:
                links += len(el.text.strip())
        for child in el:
            walk(child, tag, in_link, in_content, boiler, path)
            if child.tail:
                parts.append(child.tail)
                if in_link:
                    links += len(child.tail.strip())
        if own in _BLOCK_TAGS and parts:
            flush(tag, in_content, boiler, path)

    containers = 0
    walk(body, "div", False, False, (), ())
    return blocks, sizes


def _drop_boilerplate(blocks: list[_Block], sizes: dict) -> list[_Block]:
    """Blocks outside every boilerplate container that is not a page wrapper."""
    total = sum(len(b.text) for b in blocks)
    held = dict.fromkeys(sizes, 0)
    for b in blocks:
        for c in b.boiler:
            held[c] += len(b.text)
    wrappers = {c for c, n in held.items() if n > sizes[c] * total}
    return [b for b in blocks if all(c in wrappers for c in b.boiler)]


_CONTAINER_TAGS = frozenset(("div", "section", "article", "main", "td", "body", "form", "center", "blockquote"))
MAIN_SHARE = 0.6  # the article body holds this share of the long text (0.5-0.7 score alike on half A)
CONTENT_SHARE = 0.5  # content-named containers are trusted when they hold this share of it
_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))


def _in_content_containers(blocks: list[_Block]) -> list[_Block]:
    """Only the blocks inside containers named as content (article, main, entry-content), if
    those hold at least half of the long text."""
    inside = sum(len(b.text) for b in blocks if b.long and b.in_content)
    if inside and inside >= CONTENT_SHARE * sum(len(b.text) for b in blocks if b.long):
        return [b for b in blocks if b.in_content]
    return blocks


def _in_main_container(blocks: list[_Block]) -> list[_Block]:
    """Only the blocks inside the article body, found by where the long text is, whatever its
    name (readability's idea), plus headings just before it."""
    held: dict[int, int] = {}
    total = 0
    for b in blocks:
        if b.long:
            total += len(b.text)
            for c in b.path:
                held[c] = held.get(c, 0) + len(b.text)
    # the innermost container that holds both the start of the text (the first long block) and
    # most of it; the innermost one holding most of it, wherever it starts, cuts too much
    # (articles split over sibling containers): F1 0.90 instead of 0.93 on half A
    first_long = next((b for b in blocks if b.long), None)
    if first_long is None:
        return blocks
    best = next((c for c in reversed(first_long.path) if held[c] >= MAIN_SHARE * total), None)
    if best is None:
        return blocks
    first = next(i for i, b in enumerate(blocks) if best in b.path)
    return [b for i, b in enumerate(blocks)
            if best in b.path or (first - 3 <= i < first and b.tag in _HEADINGS)]


def _main_region_text(blocks: list[_Block]) -> str | None:
    """The first to the last long block: short blocks (subheadings, short paragraphs) are kept
    inside that span, and before it only headings close to it (the title); link lists go."""
    longs = [i for i, b in enumerate(blocks) if b.long]
    lo, hi = (longs[0], longs[-1]) if longs else (0, len(blocks) - 1)
    kept, seen = [], set()
    for i, b in enumerate(blocks):
        if not (lo <= i <= hi or (lo - 3 <= i < lo and b.tag in _HEADINGS)):
            continue
        if b.links > 0.5 * len(b.text) or b.text in seen:
            continue
        seen.add(b.text)
        kept.append(b)
    # a short heading with no text of its own after it titles a list we dropped ("Related articles")
    kept = [b.text for i, b in enumerate(kept) if b.tag not in _HEADINGS or len(b.text) >= 80 or (
        i + 1 < len(kept) and kept[i + 1].tag not in _HEADINGS)]
    return "\n".join(kept) or None


def extract_fast(html: str) -> str | None:
    if not html or not html.strip():
        return None
    parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True)
    try:
        root = etree.fromstring(_NOSCRIPT.sub(" ", _cut_scripts(html)).encode("utf-8", "replace"), parser)
    except (etree.ParserError, ValueError):
        return None
    if root is None:
        return None
    etree.strip_elements(root, *_STRIP_TAGS, with_tail=False)
    etree.strip_tags(root, *_MERGE_TAGS)
    body = root.find("body")
    if body is None:
        body = root
    blocks = _drop_boilerplate(*_blocks(body))
    if not blocks:
        return None
    blocks = _in_main_container(_in_content_containers(blocks))
    return _main_region_text(blocks)
