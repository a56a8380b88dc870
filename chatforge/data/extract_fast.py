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
               "nav", "figcaption")
# libxml2 parses like HTML 4: a script ends at the first "</", and markup inside noscript is
# parsed, so a string like "</div>" in a script can swallow the page. Cut these raw-text
# elements (and comments) out of the string first, as an HTML5 parser would read them.
_RAW = re.compile(r"<(script|style|noscript|template|textarea)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_BLOCK_TAGS = frozenset(("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dd", "dt",
                         "blockquote", "pre", "table", "tr", "td", "th", "section", "article", "main",
                         "header", "footer", "aside", "form", "figure", "br", "hr", "address", "center",
                         "tbody", "thead", "caption", "details", "summary", "body"))
_BOILER_TAGS = frozenset(("footer", "aside"))
# class/id words that mark boilerplate containers: whole words (split at anything not a letter
# or digit), or, for the unambiguous ones, anywhere (camelCase and run-together names)
_BOILER_WORDS = re.compile(
    r"(?:^|[^a-z0-9])(?:nav|menu|menus|submenu|side|banner|share|sharing|respond|reply|popup|modal|"
    r"overlay|advert|ads|sponsor|sponsored|promo|teaser|tags|tagcloud|pagination|pager|login|signup|search|"
    r"toolbar|masthead|topbar|byline|bylines|meta|print|rating|trending|popular|readmore|disclosure)"
    r"(?:$|[^a-z0-9])"
    r"|cookie|consent|gdpr|newsletter|sidebar|breadcrumb|navigation|navbar|footer|comment|related|"
    r"recommend|social|shariff|subscribe|tooltip|disqus|outbrain|taboola")
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


def _names(el) -> str:
    return f"{el.get('class') or ''} {el.get('id') or ''}".strip()


@functools.lru_cache(maxsize=1 << 16)  # class strings repeat within a site and across pages
def _boilerplate_name(names: str) -> bool:
    names = names.lower()
    if not _BOILER_WORDS.search(names) or _CONTENT_NAME.search(names):
        return False
    return bool(_BOILER_WORDS.search(_MODIFIERS.sub(" ", names)))


def _prune(body, total: int) -> None:
    """Drop boilerplate subtrees; keep one if it holds over half the page's text (a page wrapper)."""
    doomed = []
    for el in body.xpath(".//*[@class or @id] | .//footer | .//aside"):
        if el.tag in _BOILER_TAGS:  # an HTML5 tag says it; trusted unless it wraps nearly everything
            doomed.append((el, 0.8))
            continue
        names = _names(el)
        if names and _boilerplate_name(names):
            doomed.append((el, 0.5))
    for el, most in doomed:
        parent = el.getparent()
        if parent is None:
            continue  # already inside a removed subtree
        if len(el.xpath("string()")) > most * total:
            continue
        if el.tail and el.tail.strip():  # the text after the element belongs to the parent
            prev = el.getprevious()
            if prev is not None:
                prev.tail = (prev.tail or "") + el.tail
            else:
                parent.text = (parent.text or "") + el.tail
        parent.remove(el)


class _Block:
    __slots__ = ("text", "links", "tag", "in_content")

    def __init__(self, text, links, tag, in_content):
        self.text, self.links, self.tag, self.in_content = text, links, tag, in_content


def _blocks(body) -> list[_Block]:
    """Linearize into blocks: text between block-level boundaries, with its share in links."""
    blocks: list[_Block] = []
    parts: list[str] = []
    state = {"links": 0, "tag": "div", "content": False}

    def flush():
        text = " ".join("".join(parts).split())
        if text:
            blocks.append(_Block(text, state["links"], state["tag"], state["content"]))
        parts.clear()
        state["links"] = 0

    def walk(el, in_link: bool, in_content: bool):
        tag = el.tag
        block = tag in _BLOCK_TAGS
        if block:
            flush()
            state["tag"] = tag
        if not in_content and block:
            names = _names(el)
            in_content = tag in ("article", "main") or bool(names and _CONTENT_WORDS.search(names))
        state["content"] = in_content
        in_link = in_link or tag == "a"
        if el.text:
            parts.append(el.text)
            if in_link:
                state["links"] += len(el.text.strip())
        for child in el:
            if isinstance(child.tag, str):
                walk(child, in_link, in_content)
            if child.tail:
                parts.append(child.tail)
                if in_link:
                    state["links"] += len(child.tail.strip())
        if block:
            flush()
            state["tag"] = "div"
        state["content"] = in_content

    walk(body, False, False)
    return blocks


def _is_long(b: _Block) -> bool:
    n = len(b.text)
    return n >= 80 and b.links < 0.3 * n and (n >= 200 or bool(_SENTENCE_END.search(b.text)))


def extract_fast(html: str) -> str | None:
    if not html or not html.strip():
        return None
    parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True)
    try:
        root = etree.fromstring(_RAW.sub(" ", html).encode("utf-8", "replace"), parser)
    except (etree.ParserError, ValueError):
        return None
    if root is None:
        return None
    etree.strip_elements(root, *_STRIP_TAGS, with_tail=False)
    body = root.find("body")
    if body is None:
        body = root
    total = len(body.xpath("string()"))
    if total == 0:
        return None
    _prune(body, total)
    blocks = _blocks(body)
    if not blocks:
        return None
    # the main region: inside marked content containers when they hold enough of the long text
    long_chars = sum(len(b.text) for b in blocks if _is_long(b))
    inside = sum(len(b.text) for b in blocks if b.in_content and _is_long(b))
    if inside >= 0.5 * long_chars and inside > 0:
        blocks = [b for b in blocks if b.in_content]
    # link lists and labels out; short blocks kept only between the first and last long block
    longs = [i for i, b in enumerate(blocks) if _is_long(b)]
    lo, hi = (longs[0], longs[-1]) if longs else (0, len(blocks) - 1)
    kept, seen = [], set()
    for i, b in enumerate(blocks):
        n = len(b.text)
        if b.links > 0.5 * n:
            continue
        heading = b.tag in ("h1", "h2", "h3", "h4", "h5", "h6")
        if not (lo <= i <= hi) and not (heading and lo - 3 <= i < lo) and not _is_long(b):
            continue
        if b.text in seen:
            continue
        seen.add(b.text)
        kept.append(b.text)
    return "\n".join(kept) or None
