"""A synthetic fact world: people whose facts we control, so factuality is measurable at toy scale.

Choices, up front:
- Each person has four facts (birth year, city, employer, field), drawn from small fixed value
  lists, so a grader can check an answer by looking for the value and a tiny model can learn them.
- Entities are split into `seen` (their biographies go into pretraining) and `unseen` (never in
  pretraining; only in the search corpus), and, across both, into `probe` entities (whose questions
  build the probing SFT data) and `eval` entities (held out: factuality is measured on them).
- Biographies are rendered many times with varied sentence templates and fact order, the way the
  same fact appears in many web pages; a small model needs many renderings to store a fact.
- Questions come from templates; training (probe) and evaluation use disjoint phrasings.
- Everything is a pure function of the seed: the same world, documents and questions every time.

Files (`chatforge data factworld --out DIR`): DIR/pretrain/docs_00000.jsonl.zst (seen entities'
biographies in the pipeline's document-shard format, tokenized with the crawl), DIR/web.jsonl (one
biography per entity, seen or not: what the search index holds), DIR/qa.jsonl (questions with
answers, entity split and role), DIR/world.json. A user's own QA file has the same
`{"question", "answer"}` lines (other fields optional).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_write_json, atomic_write_text

FIRST = ["Alma", "Boris", "Clara", "Dario", "Edith", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Katya", "Lorenz",
         "Mira", "Nils", "Olga", "Pavel", "Rosa", "Stellan", "Tilda", "Ugo", "Vera", "Walter", "Xenia", "Yusuf",
         "Zora", "Anton", "Bianca", "Casimir", "Dagny", "Emil", "Freya", "Gustav"]
LAST = ["Albrecht", "Brandt", "Castellan", "Dvorak", "Eriksen", "Falk", "Grimaldi", "Halloran", "Ivarsson",
        "Jablonski", "Kessler", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rasmussen",
        "Sandoval", "Tamura", "Ulrich", "Varga", "Wexler", "Yilmaz", "Zeller", "Abernathy", "Bergstrom",
        "Calloway", "Delacroix", "Esposito", "Fairbanks", "Gallo"]
CITIES = ["Lisbon", "Oslo", "Prague", "Dublin", "Vienna", "Madrid", "Warsaw", "Athens", "Helsinki", "Zurich",
          "Lyon", "Porto", "Krakow", "Bergen", "Seville", "Munich"]
EMPLOYERS = ["Northwind", "Bluefield Labs", "Orchard Systems", "Redstone Mining", "Silverline Rail",
             "Harbor Bank", "Greenleaf Foods", "Ironbridge Motors", "Sunpeak Energy", "Copperfield Press",
             "Maplewood Clinic", "Stormcrest Shipping"]
FIELDS = ["chemistry", "geology", "astronomy", "linguistics", "botany", "economics", "architecture",
          "mathematics", "medicine", "music", "history", "engineering"]
YEARS = list(range(1920, 1990))
ATTRIBUTES = ("birth_year", "city", "employer", "field")


@dataclass(frozen=True)
class Person:
    name: str
    birth_year: int
    city: str
    employer: str
    field: str
    seen: bool      # in pretraining
    role: str       # "probe" (its questions build SFT data) or "eval" (held out)

    def fact(self, attribute: str) -> str:
        return str(getattr(self, attribute))


def make_world(n_seen: int = 16, n_unseen: int = 16, seed: int = 0) -> list[Person]:
    """n_seen + n_unseen people with distinct names; half of each group is held out for eval."""
    rng = random.Random(f"factworld:{seed}")
    names = [f"{f} {last}" for f in FIRST for last in LAST]
    if n_seen + n_unseen > len(names):
        raise ChatforgeError(f"the fact world has {len(names)} distinct names; ask for fewer entities")
    rng.shuffle(names)
    people = []
    for i, name in enumerate(names[:n_seen + n_unseen]):
        seen = i < n_seen
        k = i if seen else i - n_seen
        people.append(Person(name, rng.choice(YEARS), rng.choice(CITIES), rng.choice(EMPLOYERS), rng.choice(FIELDS),
                             seen=seen, role="probe" if k % 2 == 0 else "eval"))
    return people


# one sentence per fact, several phrasings each; {n} is the name (or a pronoun-free back-reference)
_SENTENCES = {
    "birth_year": ["{n} was born in {v}.", "{n} was born in the year {v}.", "Born in {v}, {n} grew up quickly.",
                   "{n}, born in {v}, is remembered by many.", "The birth year of {n} is {v}."],
    "city": ["{n} lives in {v}.", "{n} has made a home in the city of {v}.", "{n} settled in {v}.",
             "Today {n} lives in {v}.", "The home city of {n} is {v}."],
    "employer": ["{n} works for {v}.", "{n} is employed by {v}.", "{n} took a job at {v}.",
                 "At {v}, {n} is a valued employee.", "The employer of {n} is {v}."],
    "field": ["{n} works in {v}.", "{n} studied {v}.", "{n} is an expert in {v}.",
              "The field of {n} is {v}.", "{n} has spent a career in {v}."],
}
_OPENERS = ["", "", "Biography. ", "Profile of {n}. ", "About {n}: ", "Here is a short note on {n}. "]


def biography(p: Person, rng: random.Random) -> str:
    """One rendering: the four facts in a random order, each in a random phrasing."""
    attrs = list(ATTRIBUTES)
    rng.shuffle(attrs)
    sents = [rng.choice(_SENTENCES[a]).format(n=p.name, v=p.fact(a)) for a in attrs]
    return rng.choice(_OPENERS).format(n=p.name) + " ".join(sents)


# question templates: "train" phrasings build SFT data, "eval" phrasings are held out
QUESTIONS = {
    "birth_year": {"train": ["When was {n} born?", "In what year was {n} born?"],
                   "eval": ["What is the birth year of {n}?", "Which year was {n} born in?"]},
    "city": {"train": ["Where does {n} live?", "In which city does {n} live?"],
             "eval": ["What city is {n}'s home?", "Which city does {n} live in?"]},
    "employer": {"train": ["Who does {n} work for?", "Which company employs {n}?"],
                 "eval": ["What is {n}'s employer?", "Which company does {n} work for?"]},
    "field": {"train": ["What field does {n} work in?", "What did {n} study?"],
              "eval": ["In which field is {n} an expert?", "What is {n}'s field?"]},
}
# the full-sentence answer taught in SFT (the value alone is what the grader looks for)
ANSWERS = {"birth_year": "{n} was born in {v}.", "city": "{n} lives in {v}.",
           "employer": "{n} works for {v}.", "field": "{n} works in {v}."}


def questions(people: list[Person], phrasing: str = "train") -> list[dict]:
    """One question per person, attribute and phrasing of the given kind."""
    out = []
    for p in people:
        for a in ATTRIBUTES:
            for q in QUESTIONS[a][phrasing]:
                out.append({"question": q.format(n=p.name), "answer": p.fact(a),
                            "answer_sentence": ANSWERS[a].format(n=p.name, v=p.fact(a)),
                            "entity": p.name, "attribute": a, "seen": p.seen, "role": p.role, "phrasing": phrasing})
    return out


def qa_set(people: list[Person]) -> list[dict]:
    """The QA file: train phrasings for probe entities, held-out phrasings for eval entities."""
    return (questions([p for p in people if p.role == "probe"], "train")
            + questions([p for p in people if p.role == "eval"], "eval"))


def pretrain_documents(people: list[Person], renderings: int, seed: int = 0, per_doc: int = 1):
    """Doc objects for the seen people: `renderings` biographies each, shuffled, `per_doc` per document."""
    from chatforge.data.steps import Doc

    rng = random.Random(f"factworld-docs:{seed}")
    bios = [biography(p, rng) for p in people if p.seen for _ in range(renderings)]
    rng.shuffle(bios)
    for i in range(0, len(bios), per_doc):
        yield Doc(f"factworld-{i // per_doc:07d}", "\n\n".join(bios[i:i + per_doc]), "factworld://pretrain",
                  {"source": "factworld"})


def docs_chars(docs_dir) -> int:
    """Characters of text in a `data build` output (from its stats when it has them)."""
    from chatforge.data.build import doc_shards, read_docs

    return sum(len(d.text) for p in doc_shards(docs_dir) for d in read_docs(p))


def renderings_for_share(people: list[Person], share: float, corpus_chars: int, seed: int = 0) -> int:
    """Biographies per seen person so that they make `share` of the corpus's characters."""
    if not 0 < share < 1:
        raise ChatforgeError(f"--share must be between 0 and 1, got {share}")
    seen = [p for p in people if p.seen]
    rng = random.Random(seed)
    mean = sum(len(biography(p, rng)) + 2 for p in seen for _ in range(20)) / (20 * max(1, len(seen)))
    want = share / (1 - share) * corpus_chars  # fact chars / (corpus + fact chars) = share
    return max(1, round(want / (mean * max(1, len(seen)))))


def write_world(out_dir, n_seen: int = 16, n_unseen: int = 16, renderings: int = 100, seed: int = 0,
                per_doc: int = 4) -> dict:
    """Write the fact world's files (see the module docstring); returns world.json's content."""
    from chatforge.data.build import write_docs

    out = Path(out_dir)
    people = make_world(n_seen, n_unseen, seed)
    n_docs = write_docs(out / "pretrain" / "docs_00000.jsonl.zst",
                        pretrain_documents(people, renderings, seed, per_doc))
    rng = random.Random(f"factworld-web:{seed}")
    web = [json.dumps({"id": f"web-{i:05d}", "url": f"factworld://web/{p.name.replace(' ', '_')}",
                       "text": biography(p, rng), "entity": p.name}) for i, p in enumerate(people)]
    atomic_write_text(out / "web.jsonl", "\n".join(web) + "\n")
    qa = qa_set(people)
    atomic_write_text(out / "qa.jsonl", "".join(json.dumps(q) + "\n" for q in qa))
    info = {"seed": seed, "renderings": renderings, "pretrain_docs": n_docs, "questions": len(qa),
            "people": [asdict(p) for p in people]}
    atomic_write_json(out / "world.json", info)
    return info


def load_qa(path) -> list[dict]:
    """A QA JSONL file: each line needs "question" and "answer"; bad lines are counted and skipped."""
    path = Path(path)
    if not path.is_file():
        raise ChatforgeError(f"{path} does not exist; pass a QA JSONL file (lines of {{\"question\", \"answer\"}})")
    out, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            o = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(o, dict) and isinstance(o.get("question"), str) and o.get("answer") not in (None, ""):
            o["answer"] = str(o["answer"])
            out.append(o)
        else:
            bad += 1
    if not out:
        raise ChatforgeError(f"{path} holds no usable questions ({bad} bad lines); each line needs question and answer")
    if bad:
        print(f"{path}: skipped {bad} lines without a question and an answer")
    return out
