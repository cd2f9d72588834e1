import numpy as np
import pytest

from asr_kd.data.grammar import GrammarError, parse_grammar, read_grammar
from data_prep.synth_rm import GRAMMAR_FILE

TEXT = """
# a comment
SHIP: fox kitty_hawk fox
  dale
> where is $SHIP [now]
> hello
"""


def test_parse_by_hand():
    g = parse_grammar(TEXT)
    assert g.classes == {"SHIP": (("fox",), ("kitty", "hawk"), ("dale",))}  # repeated fox counted once
    assert g.vocabulary() == {
        "FOX",
        "KITTY",
        "HAWK",
        "DALE",
        "WHERE",
        "IS",
        "NOW",
        "HELLO",
    }


def test_sampling_is_seeded_and_covers_the_choices():
    g = parse_grammar(TEXT)
    a = [g.sample(np.random.default_rng(3)) for _ in range(1)]
    assert a == [g.sample(np.random.default_rng(3))]
    rng = np.random.default_rng(0)
    seen = {g.sample(rng) for _ in range(400)}
    # 3 ships x (with / without "now") + "hello"
    assert len(seen) == 7
    assert ("WHERE", "IS", "KITTY", "HAWK", "NOW") in seen and ("HELLO",) in seen


@pytest.mark.parametrize("text, message", [
    ("> where is $SHIP", "undefined classes \\['SHIP'\\]"),
    ("SHIP: Fox\n> a", "not lower-case words"),
    ("  fox\n> a", "continues no class"),
    ("SHIP: fox\n> a [b", "never closed"),
    ("SHIP: fox\n> a [b [c]]", "nested"),
    ("SHIP: fox", "no template"),
    ("SHIP: a\nSHIP: b\n> x", "defined twice"),
])  # fmt: skip
def test_errors_name_the_line(text, message):
    with pytest.raises(GrammarError, match=message):
        parse_grammar(text, "g.txt")


def test_committed_grammar_has_a_rm_sized_vocabulary():
    g = read_grammar(GRAMMAR_FILE)
    assert 1000 <= len(g.vocabulary()) <= 1150
    rng = np.random.default_rng(0)
    sentences = [g.sample(rng) for _ in range(2000)]
    assert 5.0 < np.mean([len(s) for s in sentences]) < 10.0
    assert len(set(sentences)) > 1800  # mostly distinct: test sentences can be held out
