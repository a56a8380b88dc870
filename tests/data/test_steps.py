"""Single steps: URL filter, language ID, quality rules, PII, MinHash dedup."""

from __future__ import annotations

import numpy as np

from chatforge.data.steps import Doc


def _run(step, docs):
    out = list(step(docs))
    st = step.stats.to_dict()
    assert st["in"] == st["kept"] + sum(st["dropped"].values())
    return out, st


def test_url_filter_rules(tmp_path):
    from chatforge.data.url_filter import URLFilter

    (tmp_path / "domains.txt").write_text("# comment\nbad-site.com\nsub.evil.org\n")
    (tmp_path / "urls.txt").write_text("good.com/one/bad/page\n")
    f = URLFilter([tmp_path / "domains.txt"], [tmp_path / "urls.txt"])
    cases = {"https://www.bad-site.com/a": "blocklisted_domain", "http://x.sub.evil.org/": "blocklisted_domain",
             "http://evil.org/": None, "https://good.com/one/bad/page/": "blocklisted_url",
             "https://good.com/xxx/a": "banned_word", "https://en.wikipedia.org/wiki/Sex_education": None,
             "": None}
    for url, want in cases.items():
        got = f.process(Doc("1", "t", url))
        assert (got if isinstance(got, str) else None) == want, url


def test_url_filter_real_ut1_list(shared_data):
    from chatforge.data.url_filter import URLFilter

    f = URLFilter([shared_data / "blocklist" / "ut1-adult-domains.txt.xz"], banned_words=False)
    assert len(f.domains) > 4_000_000
    assert f.process(Doc("1", "t", "http://www.0-1sex.com/x")) == "blocklisted_domain"
    assert isinstance(f.process(Doc("1", "t", "https://www.bbc.co.uk/news")), Doc)


def test_language_filter_uses_whole_text():
    from chatforge.data.langid import LanguageFilter

    en = "The committee met on Tuesday to discuss the new budget proposal for the city parks. " * 3
    de = "Der Ausschuss hat am Dienstag über den neuen Haushaltsentwurf für die städtischen Parks beraten. " * 3
    # a page starting with a short English menu, then German body: an 80-char cut-off would say "en"
    mixed = "Home | About | Contact | Login | Search the site\n" + de * 4
    out, st = _run(LanguageFilter(("en",), 0.65), [Doc("1", en), Doc("2", de), Doc("3", mixed)])
    assert [d.id for d in out] == ["1"] and out[0].meta["language"] == "en"
    assert st["dropped"] == {"language_not_kept": 2}


def test_gopher_and_c4_and_fineweb_rules():
    from chatforge.data.quality import C4Lines, FineWebQuality, GopherQuality, GopherRepetition

    good = ("The garden was quiet in the morning, and the birds sang to each other over the wall. " * 2 + "\n") * 1
    prose = "\n".join([
        "The farmers of the valley plan the harvest with great care and patience every year.",
        "Rain came late this season, and the river rose slowly over the lower fields.",
        "Most families had stored enough grain to last through the long winter months.",
        "Children walked to the village school along a narrow road lined with old oaks.",
        "In the evenings, neighbours gathered at the mill to trade news and seeds.",
        "A travelling doctor visited twice a month, staying with whoever had a spare room.",
        "The market town was a day's ride away, so most trade happened in spring.",
        "Letters from the city arrived with the carrier, often weeks after they were written.",
        "Nobody could remember a year when the orchard had failed to produce fruit.",
        "When the frost finally broke, the whole valley seemed to wake at once.",
        "Old maps of the region show a second bridge that has since been lost to floods.",
        "Visitors who stay for a week usually promise to return with their own families."])
    assert isinstance(GopherRepetition().process(Doc("1", prose)), Doc)
    assert GopherRepetition().process(Doc("1", prose + "\n" + "Subscribe to our newsletter today!\n" * 8)) == "dup_line_frac"
    assert GopherQuality().process(Doc("1", good)) == "gopher_short_doc"
    assert isinstance(GopherQuality().process(Doc("1", prose)), Doc)
    assert GopherQuality().process(Doc("1", prose + " " + " ".join(["#gardening"] * 30))) == "gopher_too_many_hashes"
    assert GopherQuality().process(Doc("1", " ".join(f"banana split number {i} tastes sweet" for i in range(15)))) == "gopher_not_enough_stop_words"
    c4 = C4Lines()
    d = c4.process(Doc("1", prose + "\nPlease enable JavaScript to view the comments.\nMenu\nWe use cookies to improve the site."))
    assert isinstance(d, Doc) and "JavaScript" not in d.text and "Menu" not in d.text and "cookies" not in d.text
    assert c4.process(Doc("2", prose + "\nvar x = {a: 1};")) == "curly_bracket"
    assert c4.process(Doc("3", "Lorem ipsum dolor sit amet, consectetur.\n" + prose)) == "lorem_ipsum"
    assert c4.process(Doc("4", "One short sentence here.")) == "too_few_sentences"
    fw = FineWebQuality()
    assert isinstance(fw.process(Doc("1", prose)), Doc)
    assert fw.process(Doc("1", "\n".join(f"item number {i}" for i in range(30)))) == "line_punct_ratio"
    assert fw.process(Doc("1", "\n".join(["Short one.", "Tiny line.", "Small."] * 10) + "\n" + prose)) in ("short_line_ratio", "char_dup_ratio")


def test_pii_redaction_counts():
    from chatforge.data.pii import PIIRedactor

    p = PIIRedactor()
    text = ("Write to john.doe@gmail.com or j_smith+news@mail.example.co.uk. Public 8.8.8.8 and 93.184.216.34; "
            "private 192.168.1.1, 10.0.0.1, loopback 127.0.0.1; version 1.2.3.4.5; not an ip 999.1.1.1.")
    (d,), st = _run(p, [Doc("1", text)])
    assert "john.doe@gmail.com" not in d.text and "j_smith+news" not in d.text
    assert "8.8.8.8" not in d.text and "93.184.216.34" not in d.text
    for kept in ("192.168.1.1", "10.0.0.1", "127.0.0.1", "1.2.3.4.5", "999.1.1.1"):
        assert kept in d.text
    assert st["counters"] == {"emails": 2, "ips": 2, "docs_changed": 1}


def test_minhash_near_duplicates_and_union_find(tmp_path):
    from chatforge.data.dedup import EXACT_DUP, KEEP, NEAR_DUP, MinHasher, Signatures, find_duplicates

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    base = " ".join(rng.choice(vocab, 400))
    near = base.replace(base.split()[200], "CHANGED", 1)  # one word differs: Jaccard ~0.98
    near2 = near + " and a few more words at the end"
    other = " ".join(rng.choice(vocab, 400))
    sig = Signatures(MinHasher())
    docs = [Doc(str(i), t) for i, t in enumerate([base, other, base.upper(), near, near2])]
    list(sig(docs[:2]))
    s1, e1 = sig.take()
    list(sig(docs[2:]))
    s2, e2 = sig.take()
    assert s1.shape == (112, 2) and s1.dtype == np.uint32
    for i, (s, e) in enumerate(((s1, e1), (s2, e2))):
        np.save(tmp_path / f"s{i}.npy", s)
        np.save(tmp_path / f"e{i}.npy", e)
    st = find_duplicates([tmp_path / "s0.npy", tmp_path / "s1.npy"], [tmp_path / "e0.npy", tmp_path / "e1.npy"], 14, 8)
    # base kept; its uppercase copy is an exact dup after normalisation; near and near2 cluster with base
    assert st[0].tolist() == [KEEP, KEEP] and st[1].tolist() == [EXACT_DUP, NEAR_DUP, NEAR_DUP]


def test_extractor_time_limit_and_passthrough():
    import time as _time

    from chatforge.data.extract import Extractor

    ex = Extractor("trafilatura", timeout=0.2)
    ex.fn = lambda html: _time.sleep(5) or "never"
    t0 = _time.perf_counter()
    out, st = _run(ex, [Doc("1", "<html>slow</html>", meta={"format": "html"}), Doc("2", "plain", meta={"format": "text"})])
    assert _time.perf_counter() - t0 < 2
    assert [d.id for d in out] == ["2"] and st["dropped"] == {"timeout": 1}
    assert st["counters"] == {"passed_through_text": 1}


def test_band_buckets_in_any_order_give_the_same_duplicates(tmp_path):
    """A cluster engine computes band buckets anywhere, in any order: same result as one process."""
    import numpy as np

    from chatforge.data.dedup import band_pairs, find_duplicates

    rng = np.random.default_rng(0)
    n, bands, rows = 300, 14, 8
    sigs = rng.integers(0, 1 << 32, size=(bands * rows, n), dtype=np.uint32)
    for i in range(0, 60, 3):  # near copies: share 1..3 bands with an earlier document
        for b in rng.choice(bands, size=1 + i % 3, replace=False):
            sigs[b * rows:(b + 1) * rows, i + 100] = sigs[b * rows:(b + 1) * rows, i]
    exact = rng.integers(0, 1 << 62, size=n, dtype=np.uint64)
    exact[250] = exact[7]
    paths = []
    for k, (a, b) in enumerate(((0, 120), (120, 300))):
        np.save(tmp_path / f"s{k}.npy", np.ascontiguousarray(sigs[:, a:b]))
        np.save(tmp_path / f"e{k}.npy", exact[a:b])
        paths.append((tmp_path / f"s{k}.npy", tmp_path / f"e{k}.npy"))
    sp, ep = [p[0] for p in paths], [p[1] for p in paths]

    def reversed_buckets(sig_paths, n_bands, n_rows, alive):
        return [band_pairs(sig_paths, b, n_rows, alive) for b in reversed(range(n_bands))]

    one = find_duplicates(sp, ep, bands, rows)
    spread = find_duplicates(sp, ep, bands, rows, map_bands=reversed_buckets)
    assert all((a == b).all() for a, b in zip(one, spread))
    status = np.concatenate(one)
    assert status[250] == 1 and (status[100:160:3] == 2).all() and status[:100].max() == 0
