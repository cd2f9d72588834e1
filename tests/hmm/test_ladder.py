"""End-to-end GMM ladder on a constructed corpus whose acoustics depend on the phonetic context.

Each frame is drawn around a mean of its (phone, HMM state), shifted by the left neighbour's value on
the first state and the right neighbour's on the last (coarticulation). A monophone model with one
Gaussian per state cannot fit those shifts; the triphone passes (tied by the tree) can, so their
alignments must agree more with the true segmentation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_kd.align.graph import utterance_graph
from asr_kd.align.train_mono import MonoConfig, TrainingUtterance, train_mono
from asr_kd.align.train_tri import TriConfig, train_tri
from asr_kd.data.lang import prepare_lang
from asr_kd.hmm.system import GmmSystem, lang_sha256
from asr_kd.hmm.transitions import TransitionModel
from asr_kd.hmm.tree import ContextDependency

PHONES = ["a", "b", "c", "d", "e"]
WORDS = {"ab": "a b", "ba": "b a", "cde": "c d e", "eda": "e d a", "bc": "b c", "dd": "d b d", "ace": "a c e"}
DIM = 39
SHIFT = 1.0  # context shift (sd) against phone-state means (sd 1.5) and noise (sd 1)


def make_corpus(tmp_path, num_utts: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    (tmp_path / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()), encoding="utf-8")
    lang = prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang", sil_prob=0.5)
    ids = {p: lang.phone_to_id[p] for p in lang.phones}
    base = {(p, s): rng.normal(0, 1.5, DIM) for p in ids.values() for s in range(3)}
    shift = {p: rng.normal(0, SHIFT, DIM) for p in list(ids.values()) + [0]}
    sil = ids["SIL"]
    utts, truths = [], []
    for k in range(num_utts):
        words = list(rng.choice(list(WORDS), size=rng.integers(2, 5)))
        phones = [sil] if rng.random() < 0.7 else []
        for w in words:
            phones += [ids[p] for p in WORDS[w].split()]
            if rng.random() < 0.3:
                phones.append(sil)
        if phones[-1] != sil:
            phones.append(sil)
        frames, truth = [], []
        for i, p in enumerate(phones):
            left = phones[i - 1] if i else 0
            right = phones[i + 1] if i + 1 < len(phones) else 0
            for s in range(3):
                mean = base[(p, s)] + shift[left] + 0 * right
                n = int(rng.integers(2, 7))
                frames.append(mean + rng.normal(0, 1.0, (n, DIM)))
                truth += [p] * n
        feats = torch.from_numpy(np.concatenate(frames)).float()
        utts.append(TrainingUtterance(f"u{k}", words, utterance_graph(lang, words), feats))
        truths.append(np.array(truth))
    return lang, utts, truths


def agreement(utts, truths, pdf_phone) -> float:
    pdf_phone = np.asarray(pdf_phone)
    agree = sum(int((pdf_phone[u.labels] == t).sum()) for u, t in zip(utts, truths))
    return agree / sum(len(t) for t in truths)


@pytest.mark.slow
def test_triphone_passes_beat_the_monophone_alignment(tmp_path) -> None:
    lang, utts, truths = make_corpus(tmp_path, 120)
    torch.manual_seed(0)
    dev = torch.device("cpu")
    mono_cfg = MonoConfig(num_iters=10, realign_iters=(1, 2, 3, 4, 5, 6, 8), total_gauss=lang.num_pdfs)
    gmm = train_mono(utts, lang, mono_cfg, dev)
    mono = GmmSystem("mono", gmm, {"kind": "deltas"}, ContextDependency.monophone(lang),
                     TransitionModel.from_lang(lang), lang_sha256(lang))
    truths = [truths[int(u.id[1:])] for u in utts]  # train_mono may drop too-short utterances
    mono_agree = agreement(utts, truths, mono.tree.pdf_phone)
    tri_cfg = TriConfig(num_leaves=120, total_gauss=120, num_iters=8, realign_iters=(2, 4, 6), min_leaf_count=20)
    tri1 = train_tri(utts, mono, lang, tri_cfg, dev, name="tri1")
    tri1_agree = agreement(utts, truths, tri1.tree.pdf_phone)
    assert tri1.tree.context_width == 3 and lang.num_pdfs < tri1.num_pdfs <= 120
    assert tri1_agree > mono_agree + 0.01, (mono_agree, tri1_agree)
    lda_cfg = TriConfig(kind="lda_mllt", num_leaves=120, total_gauss=120, num_iters=8, realign_iters=(2, 4, 6),
                        mllt_iters=(1, 3), min_leaf_count=20, lda_dim=20, splice_context=1)
    tri2 = train_tri(utts, tri1, lang, lda_cfg, dev, name="tri2")
    tri2_agree = agreement(utts, truths, tri2.tree.pdf_phone)
    assert tri2.transform["matrix"].shape == (20, 39)
    assert tri2_agree > mono_agree + 0.01, (mono_agree, tri1_agree, tri2_agree)
    # the saved system (its own transform: LDA with MLLT composed in) reproduces the training alignment
    from asr_kd.align.train_tri import align_system
    from asr_kd.hmm.graph import alignment_graph
    from asr_kd.hmm.system import transform_gmm_features

    graphs = [alignment_graph(lang, u.words, tri2.tree) for u in utts[:20]]
    alis = align_system(tri2, graphs, [transform_gmm_features(tri2.transform, u.feats) for u in utts[:20]],
                        lang, lda_cfg, dev, 1)
    assert all(a.pdf_ids.tolist() == u.labels.tolist() for a, u in zip(alis, utts[:20]))
    # transitions were re-estimated: the true state durations are 2..6 frames (self-loop 0.5..0.8)
    p = tri2.transitions.self_loop[(lang.phone_to_id["a"], 1)]
    assert 0.5 < p < 0.85
