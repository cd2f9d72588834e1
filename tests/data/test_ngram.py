import pytest

from asr_kd.data.ngram import perplexity, read_arpa
from asr_kd.decode.graph import train_ngram_lm

# a bigram over {a, b}: log10 values chosen by hand
ARPA = """
\\data\\
ngram 1=4
ngram 2=3

\\1-grams:
-1.0 </s>
-99 <s> -0.5
-0.3 a -0.2
-0.6 b -0.1

\\2-grams:
-0.1 <s> a
-0.4 a b
-0.2 b </s>

\\end\\
"""


def test_backoff_and_perplexity_by_hand(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA)
    lm = read_arpa(path)
    assert lm.order == 2 and lm.vocabulary == {"<s>", "</s>", "a", "b"}
    assert lm.word_logprob(("<s>",), "a") == -0.1
    assert lm.word_logprob(("a",), "a") == pytest.approx(-0.2 + -0.3)  # back-off(a) + p(a)
    # "a b": p(a|<s>) p(b|a) p(</s>|b) = -0.1 - 0.4 - 0.2; "b c": p(b|<s>) = bo(<s>) + p(b) = -1.1,
    # c is an OOV (skipped, context restarts), p(</s>) unigram = -1.0
    out = perplexity(lm, ["a b", "b c"])
    total = -0.7 + (-1.1 - 1.0)
    assert out["oovs"] == 1 and out["words"] == 4 and out["log10_prob"] == pytest.approx(total)
    assert out["perplexity"] == pytest.approx(10 ** (-total / (4 - 1 + 2)), rel=1e-3)


def test_trained_lm_scores_a_sentence_from_its_bigrams(tmp_path):
    lm = read_arpa(train_ngram_lm(["a b a", "b a b b", "a a b"] * 3, 2, tmp_path / "lm.arpa"))
    expected = lm.logprob[("<s>", "a")] + lm.logprob[("a", "b")] + lm.logprob[("b", "</s>")]
    out = perplexity(lm, ["a b"])
    assert out["log10_prob"] == pytest.approx(expected, abs=1e-4)
    assert out["perplexity"] == pytest.approx(10 ** (-expected / 3), rel=1e-3)


def test_not_arpa(tmp_path):
    (tmp_path / "x.arpa").write_text("\\data\\\n\\1-grams:\nhello\n")
    with pytest.raises(ValueError, match="x.arpa:3"):
        read_arpa(tmp_path / "x.arpa")
