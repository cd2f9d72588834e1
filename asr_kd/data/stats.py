"""Corpus statistics per split, read from the Lhotse manifests of a prepared corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

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
