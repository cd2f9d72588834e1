"""The lexicon transducer L (phones -> words) of a lang directory, built with kaldifst."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asr_kd.data.lang import Lang


def make_lexicon_fst(lang: Lang, disambig: bool = False):
    """L (phones -> words) with optional silence between words, as Kaldi's make_lexicon_fst.py.

    States: loop (final; words start and end here), start, silence (reached with probability ``sil_prob``
    after a word or at the start, left through ``sil_phone``); ``sil_prob=0``: the loop state alone, no
    optional silence. Costs are -ln(prob).
    With ``disambig``: pronunciations from lexicon_disambig.txt, ``#N`` after the optional silence
    and ``#0:#0`` self-loops (Kaldi's fstaddselfloops). Arc-sorted on output labels.

    Returns:
        ``kaldifst.StdVectorFst``.
    """
    import kaldifst  # imported here: the import order of the kaldi* modules matters to some processes

    phone_id, word_id, sil_prob = lang.phone_to_id, lang.word_to_id, lang.config.sil_prob
    fst = kaldifst.StdVectorFst()
    loop = fst.add_state()
    fst.start = loop
    fst.set_final(loop, 0.0)
    ends = [(loop, 0.0)]  # (state, cost) where a word ends
    if sil_prob > 0:
        start, sil = fst.add_state(), fst.add_state()
        fst.start = start
        ends = [(loop, -math.log1p(-sil_prob)), (sil, -math.log(sil_prob))]
        for end, cost in ends:
            fst.add_arc(start, kaldifst.StdArc(0, 0, cost, end))
        sil_end = fst.add_state() if disambig else loop
        fst.add_arc(sil, kaldifst.StdArc(phone_id[lang.config.sil_phone], 0, 0.0, sil_end))
        if disambig:
            fst.add_arc(sil_end, kaldifst.StdArc(phone_id[lang.sil_disambig], 0, 0.0, loop))
    lexicon = lang.lexicon_disambig if disambig else lang.lexicon
    for word in sorted(lexicon):
        for pron in lexicon[word]:
            state = loop
            for i, phone in enumerate(pron[:-1]):
                nxt = fst.add_state()
                fst.add_arc(state, kaldifst.StdArc(phone_id[phone], word_id[word] if i == 0 else 0, 0.0, nxt))
                state = nxt
            olabel = word_id[word] if len(pron) == 1 else 0
            for end, cost in ends:
                fst.add_arc(state, kaldifst.StdArc(phone_id[pron[-1]], olabel, cost, end))
    if disambig:
        kaldifst.add_self_loops(fst, [phone_id["#0"]], [word_id["#0"]])
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst
