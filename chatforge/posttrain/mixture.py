"""SFT data mixtures: which sets, how much of each, a seed; validated and printed as a table.

A mixture is a plain dict (from `MIXTURES` by name, a .json file, or a .py file defining
`MIXTURE = {...}`):

    {"seed": 0,
     "sets": [{"source": "t0", "examples": 15000},             # exactly this many (cycled if needed)
              {"source": "gsm8k", "epochs": 2},                # every example twice
              {"source": "identity", "examples": 1000, "args": {"name": "mybot"}},
              {"source": "file", "epochs": 1, "args": {"path": "my.jsonl", "format": "auto"}}],
     "val_per_set": 50}                                         # held-out conversations per set

Each set holds out `val` conversations (default `val_per_set`, at most 10% of what it has) before
anything is sampled for training, so validation loss is measured on conversations never trained on.
"""

from __future__ import annotations

import inspect
import json
import random
import runpy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chatforge.common import ChatforgeError
from chatforge.posttrain import formats, sources, synthetic, tasks


def _file(path: str, format: str = "auto", stats=None):
    return formats.load_conversations(path, format=format, stats=stats)


# name -> (reader(stats=..., **args) or generator(n, seed=..., **args), is_generated)
SOURCES = {
    "t0": (lambda path=None, stats=None: sources.read_t0(path, split="train", stats=stats), False),
    "alpaca_seed": (lambda path=None, stats=None: sources.read_alpaca_seed(path, stats=stats), False),
    "hh_rlhf": (lambda path=None, side="chosen", stats=None: sources.read_hh_rlhf(path, side=side, stats=stats), False),
    "gsm8k": (lambda path=None, split="train", tools=True, stats=None:
              sources.read_gsm8k(path, split=split, tools=tools, stats=stats), False),
    "file": (_file, False),
    "identity": (synthetic.identity_conversations, True),
    "dont_know": (synthetic.dont_know_conversations, True),
    "arithmetic": (tasks.arithmetic_conversations, True),  # the RL task's answer shape, so RL starts above 0
}

MIXTURES = {
    # for a d12+ model on a GPU: ~27k conversations
    "default": {"seed": 0, "val_per_set": 100, "sets": [
        {"source": "t0", "examples": 15000},
        {"source": "hh_rlhf", "epochs": 1},
        {"source": "gsm8k", "epochs": 1},
        {"source": "alpaca_seed", "epochs": 3},
        {"source": "identity", "examples": 1000},
        {"source": "dont_know", "examples": 500},
        {"source": "arithmetic", "examples": 3000, "args": {"level": 1}},  # python-tool answers, RL's shape
    ]},
    # for the CPU speedrun: a few thousand conversations
    "tiny": {"seed": 0, "val_per_set": 20, "sets": [
        {"source": "t0", "examples": 1500},
        {"source": "hh_rlhf", "examples": 300},
        {"source": "gsm8k", "examples": 500},
        {"source": "alpaca_seed", "epochs": 1},
        {"source": "identity", "examples": 300},
        {"source": "dont_know", "examples": 100},
        {"source": "arithmetic", "examples": 300, "args": {"level": 1}},
    ]},
    # the cpu-tiny speedrun's cold start before RL on arithmetic:0 (presets.Preset.rl_cold_start)
    "arithmetic": {"seed": 0, "val_per_set": 8, "sets": [
        {"source": "arithmetic", "examples": 3000, "args": {"level": 0}},
    ]},
    # generated sets only: needs no ../shared/data (CI smoke runs, tests)
    "synthetic": {"seed": 0, "val_per_set": 10, "sets": [
        {"source": "identity", "examples": 200},
        {"source": "dont_know", "examples": 100},
    ]},
}

_SPEC_KEYS = {"seed", "sets", "val_per_set", "name"}
_SET_KEYS = {"source", "examples", "epochs", "args", "val", "name"}


def load_mixture(mix: str | dict) -> dict:
    """A mixture dict from a built-in name, a .json / .py file path, or a dict; validated."""
    if isinstance(mix, dict):
        spec = dict(mix)
    elif mix in MIXTURES:
        spec = {"name": mix, **MIXTURES[mix]}
    else:
        path = Path(mix)
        if not path.exists():
            raise ChatforgeError(f"mixture {mix!r} is neither a built-in ({', '.join(MIXTURES)}) nor an existing file")
        if path.suffix == ".py":
            spec = runpy.run_path(str(path)).get("MIXTURE")
            if not isinstance(spec, dict):
                raise ChatforgeError(f"{path} must define a dict named MIXTURE")
        else:
            try:
                spec = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ChatforgeError(f"{path}: not valid JSON ({e})") from e
        spec.setdefault("name", path.stem)
    return validate_mixture(spec)


def validate_mixture(spec) -> dict:
    """Check a mixture dict; raise ChatforgeError naming the first problem and how to fix it."""
    if not isinstance(spec, dict):
        raise ChatforgeError("a mixture must be a dict with 'sets' (and optionally 'seed', 'val_per_set')")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ChatforgeError(f"mixture has unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
    if not isinstance(spec.get("seed", 0), int):
        raise ChatforgeError("mixture 'seed' must be an integer")
    vps = spec.get("val_per_set", 50)
    if not isinstance(vps, int) or vps < 0:
        raise ChatforgeError("mixture 'val_per_set' must be an integer >= 0")
    sets = spec.get("sets")
    if not isinstance(sets, list) or not sets:
        raise ChatforgeError("mixture needs a non-empty 'sets' list")
    names = set()
    for i, s in enumerate(sets):
        where = f"mixture set {i}"
        if not isinstance(s, dict):
            raise ChatforgeError(f"{where} must be a dict with 'source' and 'examples' or 'epochs'")
        bad = set(s) - _SET_KEYS
        if bad:
            raise ChatforgeError(f"{where} has unknown keys {sorted(bad)}; allowed: {sorted(_SET_KEYS)}")
        if s.get("source") not in SOURCES:
            raise ChatforgeError(f"{where}: unknown source {s.get('source')!r}; known: {', '.join(SOURCES)}")
        where = f"mixture set {i} ({s['source']})"
        if ("examples" in s) == ("epochs" in s):
            raise ChatforgeError(f"{where}: give exactly one of 'examples' (a count) or 'epochs' (passes over the set)")
        if "examples" in s and (not isinstance(s["examples"], int) or s["examples"] < 0):
            raise ChatforgeError(f"{where}: 'examples' must be an integer >= 0")
        if "epochs" in s and (not isinstance(s["epochs"], (int, float)) or s["epochs"] < 0):
            raise ChatforgeError(f"{where}: 'epochs' must be a number >= 0")
        fn, generated = SOURCES[s["source"]]
        if generated and "epochs" in s:
            raise ChatforgeError(f"{where}: a generated set has no fixed size; give 'examples', not 'epochs'")
        if "val" in s and (not isinstance(s["val"], int) or s["val"] < 0):
            raise ChatforgeError(f"{where}: 'val' must be an integer >= 0")
        args = s.get("args", {})
        if not isinstance(args, dict):
            raise ChatforgeError(f"{where}: 'args' must be a dict")
        allowed = set(inspect.signature(fn).parameters) - {"n", "stats", "seed"}
        if set(args) - allowed:
            raise ChatforgeError(f"{where}: unknown args {sorted(set(args) - allowed)}; allowed: {sorted(allowed)}")
        if s["source"] == "file" and "path" not in args:
            raise ChatforgeError(f"{where}: needs args.path, the conversation file to read")
        name = s.get("name") or s["source"]
        if name in names:
            raise ChatforgeError(f"{where}: two sets named {name!r}; give one of them a 'name'")
        names.add(name)
    return spec


@dataclass
class MixtureData:
    train: list[dict]
    val: list[dict]
    rows: list[dict]                      # one per set: name, source, available, epochs, train, val
    val_sets: list[str] = field(default_factory=list)  # the set name of each val conversation
    skipped: dict = field(default_factory=dict)  # set name -> {reason: count}


def build_mixture(spec: dict) -> MixtureData:
    """Read/generate each set, hold out its validation conversations, sample the train share."""
    spec = validate_mixture(spec)
    seed = spec.get("seed", 0)
    vps = spec.get("val_per_set", 50)
    train, val, val_sets, rows, skipped = [], [], [], [], {}
    for i, s in enumerate(spec["sets"]):
        name = s.get("name") or s["source"]
        fn, generated = SOURCES[s["source"]]
        args = dict(s.get("args", {}))
        rng = random.Random(f"{seed}:{i}:{name}")
        stats: Counter = Counter()
        if generated:
            n_val = s.get("val", vps)
            convs = fn(s["examples"] + n_val, seed=rng.randrange(2**31), **args)
            held, pool = convs[:n_val], convs[n_val:]
        else:
            convs = list(fn(stats=stats, **args))
            if not convs:
                raise ChatforgeError(f"mixture set {name!r} has no usable conversations ({dict(stats)})")
            rng.shuffle(convs)
            n_val = min(s["val"], len(convs) - 1) if "val" in s else min(vps, len(convs) // 10)
            held, pool = convs[:n_val], convs[n_val:]
        n_train = s["examples"] if "examples" in s else round(s["epochs"] * len(pool))
        picked = []
        while len(picked) < n_train:  # whole shuffled passes, then a partial one
            take = pool[:]
            rng.shuffle(take)
            picked += take[: n_train - len(picked)]
        train += picked
        val += held
        val_sets += [name] * len(held)
        skipped[name] = {k: v for k, v in stats.items() if k != "read"}
        rows.append({"set": name, "source": s["source"], "available": len(pool),
                     "epochs": n_train / max(1, len(pool)), "train": n_train, "val": len(held)})
    random.Random(seed).shuffle(train)
    return MixtureData(train=train, val=val, rows=rows, val_sets=val_sets, skipped=skipped)


def format_mixture_table(data: MixtureData) -> str:
    """The mixture as a text table (printed before training)."""
    total = max(1, sum(r["train"] for r in data.rows))
    lines = [f"{'set':<14} {'source':<12} {'available':>9} {'epochs':>7} {'train':>8} {'share':>6} {'val':>5}"]
    for r in data.rows:
        lines.append(f"{r['set']:<14} {r['source']:<12} {r['available']:>9,} {r['epochs']:>7.2f} "
                     f"{r['train']:>8,} {100 * r['train'] / total:>5.1f}% {r['val']:>5,}")
    lines.append(f"{'total':<14} {'':<12} {'':>9} {'':>7} {sum(r['train'] for r in data.rows):>8,} "
                 f"{'100.0%':>6} {sum(r['val'] for r in data.rows):>5,}")
    for name, reasons in data.skipped.items():
        for reason, count in reasons.items():
            lines.append(f"  {name}: {count:,} {reason}")
    return "\n".join(lines)

