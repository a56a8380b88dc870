from chatforge.eval.t0_mc import load_t0_mc, template_choices


def _rec(template, prompt, completion):
    return {"template": template, "prompt": prompt, "completion": completion}


def test_only_held_out_templates_become_multiple_choice():
    from chatforge.posttrain.sources import t0_split

    records = [
        _rec("ag_news_classify", "Stocks fell. What label best describes this news article?", "Business"),
        _rec("ag_news_classify", "A team won. What label best describes this news article?", "Sports"),
        _rec("glue_qqp_duplicate_or_not", 'Pick one: "duplicates" or "not duplicates".\n', "not duplicates"),
        _rec("rotten_tomatoes_Reviewer_Enjoyment", "Great film. How does the reviewer feel?", "They didn't like it!"),
        _rec("amazon_polarity_Is_this_review", "Bad product. Is this review positive?", "Negative"),  # train split
    ]
    assert t0_split("amazon_polarity_Is_this_review") == "train"
    ex, info = load_t0_mc(records)
    assert len(ex) == 4 and all(e.meta["family"] != "amazon_polarity" for e in ex)
    ag = [e for e in ex if e.meta["template"] == "ag_news_classify"]
    assert ag[0].choices == ["World politics", "Sports", "Business", "Science and technology"]
    assert [e.label for e in ag] == [2, 1]
    assert ag[0].context.endswith("article?\n")
    qqp = next(e for e in ex if e.meta["family"] == "glue_qqp")
    assert qqp.context.endswith("\n") and not qqp.context.endswith("\n\n")  # no doubled newline
    assert qqp.choices[qqp.label] == "not duplicates"
    rt = next(e for e in ex if e.meta["family"] == "rotten_tomatoes")
    assert rt.label == 0  # "They didn't like it!" matches the label without its "!"
    assert info["templates"] == 3 and info["skipped"] == {}


def test_limit_interleaves_templates_and_majority_baseline():
    records = [_rec("glue_qqp_quora", f"q{i}?", "no") for i in range(10)]
    records += [_rec("glue_qqp_meaning", f"m{i}?", "Yes" if i % 2 else "No") for i in range(10)]
    ex, info = load_t0_mc(records, limit=4)
    assert len(ex) == 4
    assert {e.meta["template"] for e in ex} == {"glue_qqp_quora", "glue_qqp_meaning"}
    # quora: all 'no' -> both sampled right; meaning: No/Yes alternate, commonest over all 10 is
    # 'No' (first seen on a tie) -> the sampled 'No' counts, the sampled 'Yes' does not -> 3/4
    assert info["majority_baseline"] == 0.75


def test_unknown_template_falls_back_to_observed_labels():
    assert template_choices("some_new_task", {"b", "a"}) == ["a", "b"]
    assert template_choices("some_new_task", {"only"}) is None


def test_real_t0_eval_set(shared_data):
    ex, info = load_t0_mc(limit=300)
    assert len(ex) == 300
    assert set(info["families"]) >= {"ag_news", "glue_qqp"}
    assert all(0 <= e.label < len(e.choices) for e in ex)
    assert info["skipped"].get("gold label not among the choices", 0) == 0
