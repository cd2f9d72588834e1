"""Scoring text with an ARPA back-off n-gram LM: sentence log-probabilities and perplexity.

The LM is the one the decoding graph uses (:func:`asr_kd.decode.graph.train_ngram_lm`, Kneser-Ney,
written as ARPA); this module only reads it. Conventions are SRILM's ``ngram -ppl``: every sentence is
scored with ``<s>`` as context and ends with ``</s>``; a word outside the LM's vocabulary is counted as
an OOV and skipped (its probability is not part of the total, and the next word's context restarts
after it); ``ppl = 10 ** (-sum log10 p / (words - oovs + sentences))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ArpaLm:
    order: int
    logprob: dict[tuple[str, ...], float]  # n-gram -> log10 p
    backoff: dict[tuple[str, ...], float]  # history -> log10 back-off weight

    @property
    def vocabulary(self) -> set[str]:
        return {ngram[0] for ngram in self.logprob if len(ngram) == 1}

    def word_logprob(self, history: tuple[str, ...], word: str) -> float:
        """log10 p(word | history) with back-off; ``history`` is truncated to ``order - 1`` words."""
        history = history[len(history) - (self.order - 1) :] if self.order > 1 else ()
        penalty = 0.0
        while True:
            ngram = history + (word,)
            if ngram in self.logprob:
                return penalty + self.logprob[ngram]
            if not history:
                raise KeyError(f"word {word!r} is not in the LM's vocabulary")
            penalty += self.backoff.get(history, 0.0)
            history = history[1:]


def read_arpa(path: Path | str) -> ArpaLm:
    """Read an ARPA file; errors name the file and line."""
    path = Path(path)
    logprob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    order, section = 0, None
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line in ("\\data\\", "\\end\\") or line.startswith("ngram "):
                if line.startswith("ngram "):
                    order = max(order, int(line.split()[1].split("=")[0]))
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-")[0])
                continue
            fields = line.split()
            if section is None or len(fields) not in (section + 1, section + 2):
                raise ValueError(f"{path}:{lineno}: expected 'log10p w1..w{section} [backoff]', got {line!r}")
            ngram = tuple(fields[1 : section + 1])
            logprob[ngram] = float(fields[0])
            if len(fields) == section + 2:
                backoff[ngram] = float(fields[-1])
    if not logprob:
        raise ValueError(f"{path}: no n-grams found (not an ARPA file?)")
    return ArpaLm(order=order, logprob=logprob, backoff=backoff)


def perplexity(lm: ArpaLm, sentences: Iterable[str]) -> dict:
    """SRILM-style perplexity of ``sentences`` (whitespace-separated words) under ``lm``."""
    vocab = lm.vocabulary
    total, words, oovs, num_sentences = 0.0, 0, 0, 0
    for sentence in sentences:
        tokens = sentence.split()
        num_sentences += 1
        history: tuple[str, ...] = ("<s>",)
        for w in tokens + ["</s>"]:
            if w != "</s>":
                words += 1
            if w not in vocab:
                oovs += 1
                history = ()
                continue
            total += lm.word_logprob(history, w)
            history = history + (w,)
    denominator = words - oovs + num_sentences
    return {
        "sentences": num_sentences,
        "words": words,
        "oovs": oovs,
        "log10_prob": round(total, 4),
        "perplexity": round(10 ** (-total / denominator), 3) if denominator else math.nan,
    }
