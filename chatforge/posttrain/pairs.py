"""Preference pairs: readers for the formats people bring, bad-pair accounting, tokenization.

A pair is a prompt (a conversation ending with the user's turn) and two assistant replies to it,
`chosen` (preferred) and `rejected`. Readers (one JSON object per line, .gz/.xz/.zst fine):
- hh-rlhf (Anthropic): `{"chosen": text, "rejected": text}`, both whole dialogues written as
  "\\n\\nHuman: ... \\n\\nAssistant: ...". The prompt is every turn before the last reply; the two
  dialogues must agree on it (they do, in the released data, except for a few).
- TRL's preference formats: `{"prompt", "chosen", "rejected"}` with an explicit prompt, or
  `{"chosen", "rejected"}` with the prompt implicit as the shared start of both. Each field is a
  string (standard) or a list of `{"role", "content"}` messages (conversational).
`hh-rlhf` as a path means the copy in ../shared/data; `synthetic` a generated set (synthetic_pairs).

Bad pairs are counted by reason, skipped and reported, never a crash: not JSON, unknown format,
an empty side, chosen == rejected, the two disagreeing on the prompt, and (when tokenized) a
pair longer than the context (`tokenize_pairs`). We skip over-long pairs rather than cut them:
a cut reply is a different reply, and the preference may not hold for it.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from chatforge.common import ChatforgeError, shared_data_dir
from chatforge.posttrain.conversation import open_text

HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


@dataclass
class Pair:
    prompt: list[dict]   # messages, the last one the user's
    chosen: str          # the preferred assistant reply
    rejected: str


@dataclass
class PairIds:
    """A tokenized pair: prompt ids end with <|assistant_start|>; each reply ends with <|assistant_end|>."""
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


class BadPair(ValueError):
    """A pair we skip; the message is the reason it is counted under."""


# ---------------------------------------------------------------------------------------------
# records -> pairs


def parse_hh(text: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{'role': 'user', ...}, {'role': 'assistant', ...}]."""
    pieces = HH_TURN.split(text)
    if pieces[0].strip():
        raise BadPair("hh-rlhf dialogue does not start with a 'Human:' turn")
    messages = []
    for who, body in zip(pieces[1::2], pieces[2::2]):
        role = "user" if who == "Human" else "assistant"
        if messages and messages[-1]["role"] == role:  # a doubled turn: one message
            messages[-1]["content"] += "\n\n" + body.strip()
        else:
            messages.append({"role": role, "content": body.strip()})
    return messages


def _messages(value, role_if_text: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role_if_text, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        out = []
        for m in value:
            c = m.get("content")
            if isinstance(c, list):  # parts: keep their text
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            if not isinstance(c, str):
                raise BadPair("a message without string content")
            out.append({"role": m["role"], "content": c})
        return out
    raise BadPair("a field is neither a string nor a list of messages")


def _split_reply(messages: list[dict]) -> tuple[list[dict], str]:
    if not messages or messages[-1]["role"] != "assistant":
        raise BadPair("a side does not end with an assistant reply")
    return messages[:-1], messages[-1]["content"]


def _common_prefix_text(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def record_to_pair(rec) -> Pair:
    """One JSON record in any supported format -> Pair, or BadPair saying why not."""
    if not isinstance(rec, dict) or "chosen" not in rec or "rejected" not in rec:
        raise BadPair("not a preference record (needs 'chosen' and 'rejected')")
    ch, rj, pr = rec["chosen"], rec["rejected"], rec.get("prompt")
    if pr is None and isinstance(ch, str) and isinstance(rj, str) and HH_TURN.match(ch):  # hh-rlhf
        (p1, c), (p2, r) = _split_reply(parse_hh(ch)), _split_reply(parse_hh(rj))
        if p1 != p2:
            raise BadPair("chosen and rejected disagree on the prompt")
        prompt = p1
    elif pr is not None:  # explicit prompt
        prompt = _messages(pr, "user")
        c = _split_reply(_messages(ch, "assistant"))[1] if not isinstance(ch, str) else ch
        r = _split_reply(_messages(rj, "assistant"))[1] if not isinstance(rj, str) else rj
    elif isinstance(ch, list) and isinstance(rj, list):  # implicit prompt, conversational
        (p1, c), (p2, r) = _split_reply(_messages(ch, "assistant")), _split_reply(_messages(rj, "assistant"))
        if p1 != p2:
            raise BadPair("chosen and rejected disagree on the prompt")
        prompt = p1
    elif isinstance(ch, str) and isinstance(rj, str):  # implicit prompt, standard: the shared start
        head = _common_prefix_text(ch, rj)
        head = head[:head.rfind(" ") + 1] if " " in head else ""  # cut at a word boundary
        prompt, c, r = [{"role": "user", "content": head.strip()}], ch[len(head):], rj[len(head):]
    else:
        raise BadPair("unknown preference format")
    if not prompt or prompt[-1]["role"] != "user" or not any(m["content"].strip() for m in prompt):
        raise BadPair("empty prompt (or one not ending with a user turn)")
    c, r = c.strip(), r.strip()
    if not c or not r:
        raise BadPair("an empty side")
    if c == r:
        raise BadPair("chosen == rejected")
    return Pair(prompt=prompt, chosen=c, rejected=r)


def resolve_pairs_path(path: str | Path) -> Path:
    """A pairs file; 'hh-rlhf' means the hh-rlhf file in ../shared/data."""
    if str(path) == "hh-rlhf":
        shared = shared_data_dir()
        p = shared / "hh-rlhf" / "harmless-base-test.jsonl.gz" if shared else None
        if not p or not p.is_file():
            raise ChatforgeError("hh-rlhf is not in ../shared/data; pass a JSONL file of preference pairs")
        return p
    p = Path(path)
    if not p.is_file():
        raise ChatforgeError(f"{p} does not exist; pass a JSONL file of preference pairs (or 'hh-rlhf')")
    return p


def read_pairs(path: str | Path, stats: Counter | None = None, limit: int | None = None) -> list[Pair]:
    """All good pairs of a file ('hh-rlhf', 'synthetic' or a path); bad lines are counted in
    `stats` ('skipped: <reason>') and skipped."""
    stats = stats if stats is not None else Counter()
    if str(path) == "synthetic":  # generated (synthetic_pairs): no file, no ../shared/data needed
        out = synthetic_pairs(limit or 2000)
        stats["read"] += len(out)
        return out
    out = []
    with open_text(resolve_pairs_path(path)) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(record_to_pair(json.loads(line)))
            except json.JSONDecodeError:
                stats["skipped: not JSON"] += 1
                continue
            except BadPair as e:
                stats[f"skipped: {e}"] += 1
                continue
            stats["read"] += 1
            if limit and len(out) >= limit:
                break
    if not out:
        raise ChatforgeError(f"{path}: no usable preference pairs ({dict(stats)})")
    return out


# ---------------------------------------------------------------------------------------------
# splits, tokenization


def split_pairs(items: list, val_frac: float, seed: int = 0) -> tuple[list, list]:
    """Seeded shuffle -> (train, held-out); at least one held out when val_frac > 0."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_frac * len(items))) if val_frac > 0 else 0
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def tokenize_pair(tokenizer, pair: Pair) -> PairIds:
    prompt = tokenizer.render_for_completion(pair.prompt)
    replies = []
    for reply in (pair.chosen, pair.rejected):
        ids, _ = tokenizer.render_conversation(pair.prompt + [{"role": "assistant", "content": reply}])
        if ids[:len(prompt)] != prompt:  # the chat format renders a prompt the same in both: a bug if not
            raise ChatforgeError("the tokenizer rendered the prompt differently with a reply appended")
        replies.append(ids[len(prompt):])
    return PairIds(prompt, *replies)


def tokenize_pairs(tokenizer, pairs: list[Pair], max_len: int, stats: Counter | None = None) -> list[PairIds]:
    """Tokenize; a pair whose prompt + longer reply exceeds max_len tokens is counted and skipped."""
    stats = stats if stats is not None else Counter()
    out = []
    for p in pairs:
        ids = tokenize_pair(tokenizer, p)
        if len(ids.prompt) + max(len(ids.chosen), len(ids.rejected)) > max_len:
            stats[f"skipped: longer than the context ({max_len} tokens)"] += 1
            continue
        if ids.chosen == ids.rejected:  # e.g. differing only in whitespace the tokenizer folds
            stats["skipped: chosen == rejected"] += 1
            continue
        out.append(ids)
    return out


def format_stats(stats: Counter) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sorted(stats.items(), key=lambda kv: (kv[0] != "read", kv[0])))


def prompt_task(path: str = "hh-rlhf", seed: int = 0, val_frac: float = 0.1):
    """RLHF's prompts (`chatforge rl --task pairs:PATH --reward rm:RM_RUN`): the first user turn of
    each pair, split as the reward model splits its pairs (same seed), so the held-out prompts
    come from pairs the reward models never trained on. There is no answer to check: the reward
    model is the reward (the task's verifier accepts anything)."""
    from chatforge.posttrain.tasks import ListTask, Problem

    train, val = split_pairs(read_pairs(path), val_frac, seed)

    def problems(pairs):
        seen, out = set(), []
        for p in pairs:
            q = p.prompt[0]["content"] if p.prompt[0]["role"] == "user" else p.prompt[1]["content"]
            if q not in seen:
                seen.add(q)
                out.append(Problem(q, "", "contains"))  # "" is contained in every reply
        return out

    return ListTask(f"pairs:{Path(str(path)).name}", problems(train), problems(val), checkable=False)


# ---------------------------------------------------------------------------------------------
# a generated preference set (tests, and the speedrun without ../shared/data)

_TOPICS = ["the sea", "a cat", "the moon", "bread", "rain", "a garden", "music", "the city", "a river", "winter",
           "trees", "coffee", "a library", "the mountains", "birds", "a train"]
_OPENERS = ["Tell me about {t}.", "Write one sentence about {t}.", "What do you think of {t}?", "Describe {t}."]
_GOOD = ["{T} is calm and quiet in the early morning.", "I like {t} because it changes with the seasons.",
         "{T} reminds many people of home and of long walks.", "People have written poems about {t} for centuries."]


def synthetic_pairs(n: int, seed: int = 0) -> list[Pair]:
    """Pairs whose preference a small model can learn: the chosen reply is a plain sentence, the
    rejected one the same words shuffled or one word repeated ('the the the ...', degenerate text)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.choice(_TOPICS)
        good = rng.choice(_GOOD).format(t=t, T=t[0].upper() + t[1:])
        words = good.rstrip(".").split()
        if rng.random() < 0.5:
            rng.shuffle(words)
            bad = " ".join(words) + "."
        else:
            bad = " ".join([rng.choice(words).lower()] * len(words))
        out.append(Pair([{"role": "user", "content": rng.choice(_OPENERS).format(t=t)}], good, bad))
    return out


def pair_batch(pairs: list[PairIds], pad_id: int, device):
    """B pairs -> (ids [2B, L], targets [2B, L], last [2B]): rows 0..B-1 are prompt + chosen,
    B..2B-1 prompt + rejected (one forward for both, as TRL does), right-padded. targets[i, j] is
    ids[i, j + 1] where that token belongs to the reply, else -1, so summing log-probs over
    targets != -1 gives log p(reply | prompt). `last` is each row's final real position, its
    <|assistant_end|>, where the reward model reads its score. Causal attention keeps the
    padding after a row's real tokens invisible to them: no attention mask needed."""
    import torch

    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    starts = [len(p.prompt) for p in pairs] * 2
    L = max(len(s) for s in seqs)
    x = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), L), -1, dtype=torch.long)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        x[i, :len(s)] = torch.tensor(s)
        y[i, start - 1:len(s) - 1] = torch.tensor(s[start:])
    last = torch.tensor([len(s) - 1 for s in seqs])
    return x.to(device), y.to(device), last.to(device)


def shared_prompt_batch(pairs: list[PairIds], pad_id: int, device):
    """B pairs -> (ids [B, L], targets [2B, L], positions [B, L], mask [B, 1, L, L]) with each
    prompt read once: row i is prompt + chosen + rejected. The rejected reply's positions restart
    where the prompt ends, and the mask lets its tokens see the prompt and themselves but not the
    chosen reply, so every token sees exactly what it sees in `pair_batch`'s rows. targets rows
    0..B-1 hold the chosen reply's tokens at the positions that predict them, rows B..2B-1 the
    rejected one's (the prompt's last position predicts both first tokens). A pair of a 384-token
    prompt and two 129-token replies is 642 positions instead of 2 x 513."""
    import torch

    B = len(pairs)
    L = max(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    x = torch.full((B, L), pad_id, dtype=torch.long)
    y = torch.full((2 * B, L), -1, dtype=torch.long)
    pos = torch.zeros((B, L), dtype=torch.long)
    part = torch.full((B, L), 3, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, 3 padding
    for i, p in enumerate(pairs):
        P, C, R = len(p.prompt), len(p.chosen), len(p.rejected)
        x[i, :P + C + R] = torch.tensor(p.prompt + p.chosen + p.rejected)
        pos[i, :P + C] = torch.arange(P + C)
        pos[i, P + C:P + C + R] = torch.arange(P, P + R)
        part[i, :P], part[i, P:P + C], part[i, P + C:P + C + R] = 0, 1, 2
        y[i, P - 1:P + C - 1] = torch.tensor(p.chosen)
        y[B + i, P - 1] = p.rejected[0]
        y[B + i, P + C:P + C + R - 1] = torch.tensor(p.rejected[1:])
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    mask = causal & ~((part[:, :, None] == 2) & (part[:, None, :] == 1))  # rejected tokens never see chosen ones
    return x.to(device), y.to(device), pos.to(device), mask[:, None].to(device)


def logp_batch(pairs: list[PairIds], pad_id: int, device, shared_prompt: bool = True):
    """(ids, targets, positions, mask) for dpo.reply_logps: each prompt read once
    (`shared_prompt_batch`), or one row per side (`pair_batch`; positions and mask None)."""
    if shared_prompt:
        return shared_prompt_batch(pairs, pad_id, device)
    x, y, _ = pair_batch(pairs, pad_id, device)
    return x, y, None, None
