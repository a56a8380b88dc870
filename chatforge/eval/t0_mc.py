"""A multiple-choice set from the T0 classification templates held out of SFT.

Which templates are held out is decided in one place, `chatforge.posttrain.sources.t0_split`
(whole task families, so no example leaks into SFT through a sibling template). Here each held-out
template becomes multiple choice: the choices are the template's label set (the answer choices of
its promptsource template, written out below because the 50k-record T0 subset we have shows only
some labels of some families), the context is the prompt, the gold is the record's completion.

The subset is label-skewed (e.g. every rotten_tomatoes record is positive), so next to accuracy we
report the majority-label baseline: what a model reaches by always answering the commonest label
of each template (counted over all of the template's records).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from chatforge.eval.multiple_choice import MCExample

DBPEDIA = ["Company", "Educational Institution", "Artist", "Athlete", "Office Holder",
           "Mean Of Transportation", "Building", "Natural Place", "Village", "Animal", "Plant",
           "Album", "Film", "Written Work"]

# (template-name prefix, choices); the first matching prefix wins
TEMPLATE_CHOICES = [
    ("ag_news_recommend", ["Politician", "Athlete", "Business executive", "Scientist"]),
    ("ag_news_which_section", ["World News", "Sports", "Business", "Science and Technology"]),
    ("ag_news_", ["World politics", "Sports", "Business", "Science and technology"]),
    ("dbpedia_14_", DBPEDIA),
    ("rotten_tomatoes_Reviewer_Enjoyment_Yes_No", ["No", "Yes"]),
    ("rotten_tomatoes_Reviewer_Enjoyment", ["They didn't like it", "They loved it"]),
    ("rotten_tomatoes_Reviewer_Opinion_bad_good_choices", ["bad", "good"]),
    ("rotten_tomatoes_", ["negative", "positive"]),
    ("glue_qqp_duplicate_or_not", ["not duplicates", "duplicates"]),
    ("glue_qqp_meaning", ["No", "Yes"]),
    ("glue_qqp_", ["no", "yes"]),
]


def template_choices(template: str, observed: set[str]) -> list[str] | None:
    """The label set of a template: from the table, else the distinct completions seen (2..20)."""
    for prefix, choices in TEMPLATE_CHOICES:
        if template.startswith(prefix):
            return choices
    if 2 <= len(observed) <= 20:
        return sorted(observed)
    return None


def load_t0_mc(records=None, limit=None, path=None) -> tuple[list[MCExample], dict]:
    """Held-out T0 classification records as MCExamples, interleaved across templates so that a
    small `limit` still covers every template. Returns (examples, info) where info counts what
    was used and skipped, and gives the majority-label baseline."""
    from chatforge.posttrain.sources import read_t0_records, t0_family, t0_split

    if records is None:
        records = read_t0_records(path)
    by_template = defaultdict(list)
    for rec in records:
        if t0_split(rec["template"]) == "eval":
            by_template[rec["template"]].append(rec)

    skipped = Counter()
    per_template = {}
    for template, recs in sorted(by_template.items()):
        choices = template_choices(template, {r["completion"] for r in recs})
        if choices is None:
            skipped["not a classification template"] += len(recs)
            continue
        exs = []
        for r in recs:
            lowered = [c.lower() for c in choices]
            gold = r["completion"].strip().rstrip("!.").lower()
            if gold not in lowered:
                skipped["gold label not among the choices"] += 1
                continue
            sep = "" if r["prompt"][-1:].isspace() else "\n"
            exs.append(MCExample(context=r["prompt"] + sep, choices=list(choices), label=lowered.index(gold),
                                 meta={"template": template, "family": t0_family(template)}))
        per_template[template] = exs

    # round-robin over templates: deterministic, and every template is represented
    examples = []
    queues = [list(v) for v in per_template.values()]
    i = 0
    while any(queues) and (not limit or len(examples) < limit):
        q = queues[i % len(queues)]
        if q:
            examples.append(q.pop(0))
        i += 1
    # the score of always answering each template's commonest label (over all its records)
    commonest = {t: Counter(e.label for e in exs).most_common(1)[0][0] for t, exs in per_template.items() if exs}
    majority = sum(e.label == commonest[e.meta["template"]] for e in examples)
    info = {"templates": len(per_template), "families": sorted({t0_family(t) for t in per_template}),
            "skipped": dict(skipped),
            "majority_baseline": majority / len(examples) if examples else None}
    return examples, info
