import pytest

from chatforge.eval.answers import answers_match, extract_answer, gsm8k_reference, normalize_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,000", "1000"),
        ("The answer is $1,234.50.", "1234.5"),
        ("so the total is 3.0", "3"),
        ("First 5, then 7, so the answer is 12.", "12"),
        ("It dropped to -4 degrees", "-4"),
        ("#### 7\nlater text mentions 99", "7"),  # #### wins over the last number
        ("The final answer is \\boxed{42}", "42"),
        ("50% of them", "50"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalize_number():
    assert normalize_number("1,000.00") == "1000"
    assert normalize_number("$-3.50") == "-3.5"
    assert normalize_number("0.25") == "0.25"
    assert normalize_number("abc") is None
    assert normalize_number(".") is None


def test_gsm8k_reference_and_match():
    assert gsm8k_reference("2/2=<<2/2=1>>1 bolt\n#### 3") == "3"
    assert gsm8k_reference("...\n#### 1,200") == "1200"
    with pytest.raises(ValueError):
        gsm8k_reference("no final line")
    assert answers_match("18", "18")
    assert answers_match("18.0", "18")
    assert not answers_match("17", "18")
    assert not answers_match(None, "18")


def test_reference_answers_of_real_gsm8k(shared_data):
    import json

    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:200]
    for line in lines:
        rec = json.loads(line)
        gold = gsm8k_reference(rec["answer"])
        # the worked solution itself must extract to its own gold answer
        assert answers_match(extract_answer(rec["answer"]), gold)
