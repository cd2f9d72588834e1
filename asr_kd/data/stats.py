"""Corpus statistics per split, read from the Lhotse manifests of a prepared corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from asr_kd.data.lexicon import read_lexicon


def supervision_statistics(supervisions: Iterable, lexicon: dict | None = None) -> dict:
    """Hours, utterances, speakers, words and phones of a set of supervisions.

    Phone counts come from the ``"phone"`` alignment tier where the supervisions have one (silence
    included), else from the first lexicon pronunciation of each word (silence excluded).
    """
    sups = list(supervisions)
    words = [w for s in sups for w in (s.text or "").split()]
    phones: Counter = Counter()
    oov = 0
    for s in sups:
        if s.alignment and "phone" in s.alignment:
            phones.update(p.symbol for p in s.alignment["phone"])
        elif lexicon is not None:
            for w in (s.text or "").split():
                if w in lexicon:
                    phones.update(lexicon[w][0])
    if lexicon is not None:
        oov = sum(1 for w in words if w not in lexicon)
    stats = {
        "hours": round(sum(s.duration for s in sups) / 3600.0, 4),
        "utterances": len(sups),
        "speakers": len({s.speaker for s in sups}),
        "word_tokens": len(words),
        "word_types": len(set(words)),
        "phone_tokens": sum(phones.values()),
        "phone_types": len(phones),
    }
    if lexicon is not None:
        stats["oov_tokens"] = oov
    return stats


def corpus_statistics(manifest_dir: Path | str, corpus: str) -> dict[str, dict]:
    """Statistics of every split of ``corpus`` found in ``manifest_dir``."""
    from lhotse import SupervisionSet

    manifest_dir = Path(manifest_dir)
    prefix = f"{corpus}_supervisions_"
    paths = sorted(manifest_dir.glob(f"{prefix}*.jsonl.gz"))
    if not paths:
        raise FileNotFoundError(
            f"no {prefix}<split>.jsonl.gz in {manifest_dir}: run `asr-kd prepare {corpus}` first"
        )
    lexicon_path = manifest_dir / f"{corpus}_lexicon.txt"
    lexicon = read_lexicon(lexicon_path) if lexicon_path.is_file() else None
    return {
        p.name[len(prefix) : -len(".jsonl.gz")]: supervision_statistics(SupervisionSet.from_file(p), lexicon)
        for p in paths
    }


def phone_sequences(supervisions: Iterable, sil: str = "SIL") -> list[list[str]]:
    """Each supervision's ``"phone"`` tier as a symbol list (silence included)."""
    return [
        [p.symbol for p in s.alignment["phone"]]
        for s in supervisions
        if s.alignment and "phone" in s.alignment
    ]


def triphone_types(
    sequences: Iterable[list[str]], sil: str = "SIL"
) -> set[tuple[str, str, str]]:
    """Distinct ``(left, centre, right)`` of every non-silence phone; utterance edges are ``sil``."""
    types = set()
    for seq in sequences:
        padded = [sil] + list(seq) + [sil]
        for i in range(1, len(padded) - 1):
            if padded[i] != sil:
                types.add((padded[i - 1], padded[i], padded[i + 1]))
    return types


def words_per_phone(lexicon: dict) -> dict[str, int]:
    """Phone -> how many word types have it in at least one pronunciation."""
    counts: Counter = Counter()
    for prons in lexicon.values():
        counts.update({p for pron in prons for p in pron})
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def lexical_statistics(
    manifest_dir: Path | str,
    corpus: str,
    lm_text: Path | str | None = None,
    lm_order: int = 3,
    train_split: str = "train",
    test_split: str = "test",
) -> dict:
    """Vocabulary, phone and context statistics of a prepared corpus, and its LM on the test split.

    - word types (lexicon, train, test), phone types, words per phone (word types whose pronunciation
      holds the phone), triphone types seen in the train phone tiers and test triphones unseen in
      train (needs ``"phone"`` tiers);
    - with ``lm_text`` (one sentence a line): the decoding vocabulary (lexicon words that occur in
      the LM text: only they have an arc in G), the test OOV rate against it, and the perplexity on
      the test transcripts of a Kneser-Ney ``lm_order``-gram trained on the LM text
      (:mod:`asr_kd.data.ngram`, SRILM conventions).
    """
    import tempfile

    from lhotse import SupervisionSet

    manifest_dir = Path(manifest_dir)

    def sups(split: str):
        path = manifest_dir / f"{corpus}_supervisions_{split}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"no {path}: run `asr-kd prepare {corpus}` first")
        return list(SupervisionSet.from_file(path))

    lexicon = read_lexicon(manifest_dir / f"{corpus}_lexicon.txt")
    train, test = sups(train_split), sups(test_split)
    test_texts = [s.text for s in test if s.text]
    per_phone = words_per_phone(lexicon)
    train_tri = triphone_types(phone_sequences(train))
    test_tri = triphone_types(phone_sequences(test))
    out: dict = {
        "lexicon_word_types": len(lexicon),
        "lexicon_pronunciations": sum(len(p) for p in lexicon.values()),
        "train_word_types": len({w for s in train for w in (s.text or "").split()}),
        "test_word_types": len({w for t in test_texts for w in t.split()}),
        "phone_types": len(per_phone),
        "words_per_phone": per_phone,
        "words_per_phone_min": min(per_phone.values()),
        "words_per_phone_median": float(np.median(list(per_phone.values()))),
        "train_triphone_types": len(train_tri),
        "test_triphone_types": len(test_tri),
        "test_triphone_types_unseen_in_train": len(test_tri - train_tri),
    }
    if lm_text is not None:
        from asr_kd.data.ngram import perplexity, read_arpa
        from asr_kd.decode.graph import train_ngram_lm

        lines = [
            line
            for line in Path(lm_text).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        lm_words = {w for line in lines for w in line.split()}
        vocab = lm_words & set(lexicon)
        test_tokens = [w for t in test_texts for w in t.split()]
        oov = sum(1 for w in test_tokens if w not in vocab)
        with tempfile.TemporaryDirectory() as tmp:
            lm = read_arpa(train_ngram_lm(lines, lm_order, Path(tmp) / "lm.arpa"))
        out.update({
            "lm_text": str(lm_text),
            "lm_sentences": len(lines),
            "decoding_vocabulary": len(vocab),
            "test_word_tokens": len(test_tokens),
            "test_oov_tokens": oov,
            "test_oov_rate": round(oov / max(len(test_tokens), 1), 5),
            "lm_order": lm_order,
            "test_perplexity": perplexity(lm, test_texts),
        })  # fmt: skip
    return out
