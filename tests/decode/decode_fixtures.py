"""Shared fixtures of the decoding tests: a 5-word lang, a tiny bigram LM and one-hot posterior matrices.

Lexicon: ``to`` and ``two`` are homophones and ``ten`` shares its first phone with both, so L_disambig
needs ``#1``/``#2``; ``to`` is absent from the LM text (unreachable in HCLG). SIL/SPN 1 state each, other
phones 2 states; self-loop probability 0.6, optional silence 0.3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_kd.data.lang import Lang, prepare_lang

LEXICON = "one w ah n\ntwo t uw\nto t uw\nthree th r iy\nten t eh n\n"
LM_TEXT = ["one two three", "two three", "three one", "ten two", "one ten three two", "two two one",
           "three ten", "one"]


def make_lang(tmp_dir: Path) -> Lang:
    (tmp_dir / "lexicon.txt").write_text(LEXICON, encoding="utf-8")
    return prepare_lang(tmp_dir / "lexicon.txt", tmp_dir / "lang", num_states=2, num_sil_states=1,
                        self_loop_prob=0.6, sil_prob=0.3)


def pdf_sequence(lang: Lang, words: list[str], frames_per_state: int = 3, silence: bool = True) -> list[int]:
    """Per-frame pdf ids of ``words`` (first pronunciations), optional SIL at both ends."""
    phones = ([lang.config.sil_phone] if silence else []) + [p for w in words for p in lang.lexicon[w][0]] \
        + ([lang.config.sil_phone] if silence else [])
    return [pdf for p in phones for pdf in lang.pdf_ids(p) for _ in range(frames_per_state)]


def one_hot_loglikes(lang: Lang, pdfs: list[int], low: float = -8.0) -> np.ndarray:
    """(T, num_pdfs) float32: 0 at each frame's pdf, ``low`` elsewhere."""
    matrix = np.full((len(pdfs), lang.num_pdfs), low, dtype=np.float32)
    matrix[np.arange(len(pdfs)), pdfs] = 0.0
    return matrix
