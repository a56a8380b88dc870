"""Generated sets: identity conversations and "I don't know" examples."""

import re

from chatforge.posttrain.conversation import assistant_text, validate_conversation
from chatforge.posttrain.synthetic import (
    _DONT_KNOW,
    KnowledgeProbe,
    conversations_from_probes,
    dont_know_conversations,
    identity_conversations,
)


def test_identity_uses_name_and_creator_and_varies():
    convs = identity_conversations(300, name="Pip", creator="Ada's lab", seed=1)
    assert len(convs) == 300
    questions, answers = set(), set()
    for c in convs:
        validate_conversation(c)
        for m in c["messages"]:
            (questions if m["role"] == "user" else answers).add(m["content"])
        said = " ".join(assistant_text(m) for m in c["messages"] if m["role"] == "assistant")
        assert "{" not in said  # every placeholder filled
        assert not re.search(r"\bI('m| am) (ChatGPT|GPT|Claude)|\bI was (made|trained|built) by OpenAI", said)
    assert len(questions) > 40 and len(answers) > 15
    assert sum("Pip" in a for a in answers) > 10 and sum("Ada's lab" in a for a in answers) > 5
    assert sum(len(c["messages"]) > 2 for c in convs) > 60  # multi-turn ones too
    assert any(m["content"] == "Are you ChatGPT?" for c in convs for m in c["messages"])


def test_identity_deterministic():
    assert identity_conversations(50, seed=3) == identity_conversations(50, seed=3)
    assert identity_conversations(50, seed=3) != identity_conversations(50, seed=4)


def test_dont_know_examples():
    convs = dont_know_conversations(40, seed=0)
    assert len(convs) == 40
    for c in convs:
        validate_conversation(c)
        a = c["messages"][1]["content"].lower()
        assert "don't" in a or "can't" in a or "not" in a or "nobody" in a


def test_probe_hook():
    convs = conversations_from_probes([KnowledgeProbe("Capital of France?", "Paris.", known=True),
                                       KnowledgeProbe("Who won the 1903 Zorblax Cup?", None, known=False)])
    assert convs[0]["messages"][1]["content"] == "Paris."
    assert convs[1]["messages"][1]["content"] in _DONT_KNOW
