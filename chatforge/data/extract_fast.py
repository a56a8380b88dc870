"""A fast main-text extractor: one lxml parse, one pruning pass, one walk into text blocks.

Choices, in pipeline order:
  1. parse once with lxml (libxml2's HTML parser, C), comments and scripts dropped by the parser
     and strip_elements, both in C;
  2. drop whole subtrees that name themselves boilerplate (nav/footer/aside tags; class/id tokens
     like menu, sidebar, cookie, share, comment, related), unless the subtree holds most of the
     page's text (some sites put `sidebar` on the wrapper of everything);
  3. walk what is left into text blocks (one per paragraph-like element), each with its link
     characters and the content hint of its nearest marked container (article, main, entry-content);
  4. keep the blocks of the main region: if a content container holds enough text, only blocks inside
     it; then drop link lists, and short blocks far from the long ones (teasers, bylines, labels).
No learned weights: the rules were tuned on half A of the 320 evaluation pages and are reported on
half B as well (benchmarks/extraction_quality.py).
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
    __slots__ = ("text", "links", "tag", "in_content", "boiler")

    def __init__(self, text, links, tag, in_content, boiler):
        self.text, self.links, self.tag, self.in_content, self.boiler = text, links, tag, in_content, boiler


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

    def flush(tag, in_content, boiler):
        nonlocal links
        text = " ".join("".join(parts).split())
        if text:
            blocks.append(_Block(text, links, tag, in_content, boiler))
        parts.clear()
        links = 0

    def walk(el, tag, in_link, in_content, boiler):
        # returns nothing; text before a block boundary belongs to the enclosing block (`tag`)
        nonlocal links
        own = el.tag
        if own in _BLOCK_TAGS:
            if parts:
                flush(tag, in_content, boiler)
            tag = own
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
            walk(child, tag, in_link, in_content, boiler)
            if child.tail:
                parts.append(child.tail)
                if in_link:
                    links += len(child.tail.strip())
        if own in _BLOCK_TAGS and parts:
            flush(tag, in_content, boiler)

    walk(body, "div", False, False, ())
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


_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))


def _is_long(b: _Block) -> bool:
    n = len(b.text)
    return n >= 80 and b.links < 0.3 * n and (n >= 200 or bool(_SENTENCE_END.search(b.text)))


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
    # the main region: inside marked content containers when they hold enough of the long text
    long_chars = sum(len(b.text) for b in blocks if _is_long(b))
    inside = sum(len(b.text) for b in blocks if b.in_content and _is_long(b))
    if inside >= 0.5 * long_chars and inside > 0:
        blocks = [b for b in blocks if b.in_content]
    # the main region spans the first to the last long block: short blocks (subheadings, short
    # paragraphs) are kept inside it, and before it only headings close to it (the title)
    longs = [i for i, b in enumerate(blocks) if _is_long(b)]
    lo, hi = (longs[0], longs[-1]) if longs else (0, len(blocks) - 1)
    keep = [lo <= i <= hi or (lo - 3 <= i < lo and b.tag in _HEADINGS) for i, b in enumerate(blocks)]
    kept, seen = [], set()
    for i, b in enumerate(blocks):
        if not keep[i] or b.links > 0.5 * len(b.text) or b.text in seen:
            continue
        seen.add(b.text)
        kept.append(b)
    # a heading with no text of its own after it titles a list we dropped ("Related articles")
    kept = [b for i, b in enumerate(kept) if b.tag not in _HEADINGS or (
        i + 1 < len(kept) and kept[i + 1].tag not in _HEADINGS)]
    kept = [b.text for b in kept]
    return "\n".join(kept) or None
