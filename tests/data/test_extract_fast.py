"""The fast extractor (chatforge/data/extract_fast.py): boilerplate out, main text in, never crashes,
and its snippet F1 on the 320 real pages of ../shared/data/web stays above a floor."""

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from chatforge.data.extract import Extractor, get_backend
from chatforge.data.extract_fast import extract_fast
from chatforge.data.steps import Doc

ARTICLE = " ".join(["The committee met on Tuesday to discuss the new water supply plan for the valley."] * 3)
PAGE = f"""<!DOCTYPE html><html><head><title>t</title><script>var s = "</div></body>";</script>
<style>p {{ color: red }}</style></head><body>
<div id="cookie-consent"><p>We use cookies to improve your experience. Accept all cookies now.</p></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li></ul></nav></header>
<div class="layout has-sidebar">
  <article class="post">
    <h1>Valley water plan approved</h1>
    <p>{ARTICLE}</p>
    <p>Residents will see the first new pipes next spring, the mayor said after the vote.</p>
    <div class="share-buttons"><a href="#">Share on Facebook</a> <a href="#">Tweet this article</a></div>
  </article>
  <aside class="sidebar"><h3>Most read</h3><p>Ten things you did not know about the weather in spring.</p></aside>
</div>
<div class="related-posts"><h3>You might also like</h3><p>Another story about something else entirely, read it now.</p></div>
<footer><p>Copyright 2026 Valley News. All rights reserved.</p></footer>
</body></html>"""


def test_main_text_kept_boilerplate_removed():
    text = extract_fast(PAGE)
    assert "Valley water plan approved" in text
    assert ARTICLE in " ".join(text.split())
    assert "first new pipes next spring" in text
    for boiler in ("cookies", "Home", "Share on Facebook", "Most read", "Ten things", "You might also like",
                   "Copyright", "var s", "color: red"):
        assert boiler not in text, boiler


def test_link_lists_dropped_and_repeats_once():
    links = "".join(f'<li><a href="/{i}">Category number {i}</a></li>' for i in range(20))
    html = f"<html><body><ul>{links}</ul><p>{ARTICLE}</p><p>{ARTICLE}</p></body></html>"
    text = extract_fast(html)
    assert "Category number" not in text
    assert text.count("water supply plan") == 3  # the repeated paragraph once, its 3 sentences


def test_a_page_wrapper_named_like_boilerplate_is_kept():
    # some themes put "sidebar" or "comments" on the wrapper of the whole page
    html = f'<html><body><div class="page comments-open"><p>{ARTICLE}</p></div></body></html>'
    assert ARTICLE in extract_fast(html)


@pytest.mark.parametrize("html", ["", "   ", "\x00\x01\x02", "<", "<html></html>", "<html><body></body></html>",
                                  "plain text, no markup at all", "<p>" * 5000, "</div>" * 1000, "<div>" * 5000 + "x",
                                  "<span><b>" * 3000 + "deep",
                                  "<?xml version='1.0' encoding='latin-1'?><html><body><p>é</p></body></html>",
                                  "\ud800 lone surrogate <p>x</p>", "<svg><p>inside svg</p></svg>"])
def test_garbage_never_crashes(html):
    out = extract_fast(html)
    assert out is None or isinstance(out, str)


def test_huge_page():
    html = "<html><body>" + f"<div><p>{ARTICLE}</p></div>" * 20_000 + "</body></html>"  # ~5 MB
    out = extract_fast(html)
    assert out is not None and "water supply plan" in out


def test_selectable_as_a_build_step():
    step = Extractor("fast", timeout=0)
    assert get_backend("fast") is extract_fast
    doc = step.process(Doc(id="x", text=PAGE, meta={"format": "html"}))
    assert doc.meta["format"] == "text" and "first new pipes" in doc.text


def test_f1_on_the_shared_pages(shared_data):
    """Snippet F1 (trafilatura's own evaluation, as benchmarks/extraction_quality.py scores it) on the
    320 pages: 0.924 when written, trafilatura 0.915 (the default was chosen on that: keep it above);
    0.914 on half B, the half the rules were not tuned on (trafilatura 0.913)."""
    web = shared_data / "web"
    if not (web / "expected-snippets.json").exists():
        pytest.skip("../shared/data/web is absent: the 320 evaluation pages are needed")
    spec = importlib.util.spec_from_file_location(
        "extraction_quality", Path(__file__).resolve().parents[2] / "benchmarks" / "extraction_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from chatforge.data.readers import decode_html

    expected = json.loads((web / "expected-snippets.json").read_text())
    texts = {url: extract_fast(decode_html(gzip.open(web / "pages" / e["file"], "rb").read())[0])
             for url, e in expected.items()}
    s = bench.score(texts, expected)
    assert s["f1"] >= 0.915, s
    held_out = {u: e for u, e in expected.items() if bench.split_of(u) == "B"}  # rules were tuned on half A
    assert bench.score(texts, held_out)["f1"] >= 0.91
