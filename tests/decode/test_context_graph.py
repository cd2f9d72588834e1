"""Tests of the context-dependent decoding graph: C o LG (kaldifst.compose_context) and H from a tree.

The toy tree gives every (left, centre, right, HMM state) its own pdf, so a path scores 0 on a one-hot
matrix only if the graph puts each phone in the right context, cross-word and at the utterance's ends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import kaldi_decoder
import kaldifst
import numpy as np
import pytest
from decode_fixtures import LM_TEXT, make_lang, one_hot_loglikes, pdf_sequence

from asr_kd.data.lang import Lang
from asr_kd.decode.context import HmmLabels, LangTransitions, MonophoneTree, hmm_labels, label_columns
from asr_kd.decode.decoder import search_utterance
from asr_kd.decode.graph import build_decoding_graph, ensure_decoding_graph, make_hclg

MAX_STATES = 2  #: most HMM states of a phone in the fixture lang


class FullTriphoneTree:
    """N=3, P=1: pdf = index of (left, centre, right, state), every context its own pdf."""

    context_width, central_position = 3, 1

    def __init__(self, lang: Lang) -> None:
        self.num_phones = max(lang.phone_to_id[p] for p in lang.phones) + 1  # 0 = no phone
        self.num_pdfs = self.num_phones**3 * MAX_STATES

    def pdf(self, window, hmm_state: int) -> int:
        left, centre, right = window
        return ((left * self.num_phones + centre) * self.num_phones + right) * MAX_STATES + hmm_state

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"kind": "full-triphone", "num_phones": self.num_phones}))


class TiedTree:
    """N=1 tree that ties the states of two phones (one pdf for both): the transitions then decide labels."""

    context_width, central_position = 1, 0

    def __init__(self, lang: Lang, a: str, b: str) -> None:
        self.lang, self.a, self.b = lang, lang.phone_to_id[a], lang.phone_to_id[b]
        self.num_pdfs = lang.num_pdfs

    def pdf(self, window, hmm_state: int) -> int:
        phone = self.a if window[0] == self.b else window[0]
        return self.lang.pdf_ids(self.lang.phone_symbols[phone])[hmm_state]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"kind": "tied", "a": self.a, "b": self.b}))


class LoopTransitions(LangTransitions):
    """The lang's transitions, but self-loop probability ``p`` for one phone."""

    def __init__(self, lang: Lang, phone: str, p: float) -> None:
        super().__init__(lang)
        self.phone, self.p = lang.phone_to_id[phone], p

    def log_probs(self, phone: int, hmm_state: int) -> tuple[float, float]:
        if phone == self.phone:
            return math.log(self.p), math.log1p(-self.p)
        return super().log_probs(phone, hmm_state)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"phone": self.phone, "p": self.p}))


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("context_graph")
    make_lang(tmp)
    return tmp / "lang"


@pytest.fixture(scope="module")
def lang(lang_dir: Path) -> Lang:
    return Lang.load(lang_dir)


@pytest.fixture(scope="module")
def tree(lang: Lang) -> FullTriphoneTree:
    return FullTriphoneTree(lang)


@pytest.fixture(scope="module")
def tri_graph(lang_dir: Path, tree: FullTriphoneTree) -> tuple[Path, dict]:
    return ensure_decoding_graph(lang_dir, LM_TEXT, order=2, tree=tree)


def triphone_pdfs(lang: Lang, tree, words: list[str], silence: bool, frames_per_state: int = 2,
                  shift: int = 0) -> list[int]:
    """Per-frame pdfs of ``words`` (first pronunciations), each phone in its context (0 at the ends);
    ``shift`` rotates the right contexts (a wrong-context control)."""
    sil = [lang.config.sil_phone] if silence else []
    phones = [lang.phone_to_id[p] for p in sil + [p for w in words for p in lang.lexicon[w][0]] + sil]
    padded = [0, *phones, 0]
    rights = padded[2:]
    rights = rights[shift:] + rights[:shift]
    out = []
    for i, phone in enumerate(phones):
        for state in range(lang.num_states(lang.phone_symbols[phone])):
            out += [tree.pdf((padded[i], phone, rights[i]), state)] * frames_per_state
    return out


def best_path(graph, loglikes: np.ndarray) -> tuple[list[int], float, float]:
    """(word ids, graph cost, acoustic cost) of the best path."""
    decoder = kaldi_decoder.FasterDecoder(graph, kaldi_decoder.FasterDecoderOptions(beam=500, max_active=100000))
    decoder.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(loglikes, dtype=np.float32)))
    assert decoder.reached_final()
    ok, lattice = decoder.get_best_path()
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
    assert ok
    return [w for w in olabels if w], weight.value1, weight.value2


def lang_of(lang_dir: Path) -> Lang:
    return Lang.load(lang_dir)


def one_hot(num_columns: int, pdfs: list[int], low: float = -100.0) -> np.ndarray:
    matrix = np.full((len(pdfs), num_columns), low, dtype=np.float32)
    matrix[np.arange(len(pdfs)), pdfs] = 0.0
    return matrix


@pytest.mark.parametrize("words", [["one", "two", "three"], ["ten"], ["three", "ten", "two", "one"]])
@pytest.mark.parametrize("silence", [True, False])
def test_triphone_graph_decodes_contexts(lang: Lang, lang_dir: Path, tri_graph, tree, words, silence) -> None:
    """The CD graph finds the words on a zero-cost acoustic path, with the graph cost of the monophone graph."""
    path, info = tri_graph
    hclg = kaldifst.StdVectorFst.read(str(path))
    assert info["context_dependency"].startswith("N=3 P=1 tree=") and info["extra_label_pdfs"] == []
    word_ids, graph_cost, acoustic = best_path(hclg, one_hot(tree.num_pdfs, triphone_pdfs(lang, tree, words, silence)))
    assert word_ids == [lang.word_to_id[w] for w in words]
    assert acoustic == pytest.approx(0.0, abs=1e-3)  # every frame on its own context's pdf
    mono = build_decoding_graph(lang_dir, LM_TEXT, order=2)
    mono_ids, mono_cost, _ = best_path(mono, one_hot_loglikes(lang, pdf_sequence(lang, words, 2, silence), -100.0))
    assert mono_ids == word_ids
    assert graph_cost == pytest.approx(mono_cost, abs=1e-2)  # same transitions, silences and LM


def test_wrong_contexts_cost(lang: Lang, tri_graph, tree) -> None:
    """Right contexts rotated by one: no path of the graph scores those pdfs, so the acoustic cost is large."""
    hclg = kaldifst.StdVectorFst.read(str(tri_graph[0]))
    pdfs = triphone_pdfs(lang, tree, ["one", "two", "three"], True, shift=1)
    _, _, acoustic = best_path(hclg, one_hot(tree.num_pdfs, pdfs))
    assert acoustic > 100.0  # at least one frame off its pdf (each costs 100)


def test_graph_labels_and_cache(lang_dir: Path, tri_graph, tree) -> None:
    path, info = tri_graph
    hclg = kaldifst.StdVectorFst.read(str(path))
    ilabels = {a.ilabel for s in range(hclg.num_states) for a in kaldifst.ArcIterator(hclg, s)}
    assert max(ilabels) <= tree.num_pdfs  # no disambiguation label left
    centres = {((label - 1) // MAX_STATES) % tree.num_phones ** 2 // tree.num_phones for label in ilabels if label}
    assert 0 not in centres  # no window without a central phone
    mtime = path.stat().st_mtime_ns
    assert ensure_decoding_graph(lang_dir, LM_TEXT, order=2, tree=tree)[0] == path
    assert path.stat().st_mtime_ns == mtime  # cached: same tree hash
    mono_path, mono = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    assert mono_path != path and mono["context_dependency"] == "monophone"  # one lang dir, two graphs
    other_path, other = ensure_decoding_graph(lang_dir, LM_TEXT, order=2, tree=tree,
                                              transitions=LoopTransitions(lang_of(lang_dir), "ah", 0.8))
    assert other_path not in (path, mono_path)  # re-estimated transitions: another graph
    assert "transitions=lang" in info["context_dependency"] and "transitions=lang" not in other["context_dependency"]


def test_monophone_tree_is_the_monophone_graph(lang: Lang, lang_dir: Path, tmp_path: Path) -> None:
    """A monophone tree with the lang's pdfs and transitions builds the very graph of no tree, same key."""
    from asr_kd.decode.graph import make_decoding_graph, make_g, train_ngram_lm

    plain_path, plain = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    same_path, same = ensure_decoding_graph(lang_dir, LM_TEXT, order=2, tree=MonophoneTree(lang),
                                            transitions=LangTransitions(lang))  # fmt: skip
    assert same_path == plain_path and same["context_dependency"] == "monophone"
    g = make_g(train_ngram_lm(LM_TEXT, 2, tmp_path / "lm.arpa"), lang)
    assert str(make_decoding_graph(lang, g, MonophoneTree(lang), LangTransitions(lang))) == str(
        kaldifst.StdVectorFst.read(str(plain_path)))


def test_tied_pdfs_with_other_transitions_get_extra_labels(lang: Lang, tmp_path: Path) -> None:
    """'uw' and 'iy' share pdfs; with another self-loop for 'iy' its states need labels of their own."""
    from asr_kd.decode.graph import make_g, train_ngram_lm

    tree, transitions = TiedTree(lang, "uw", "iy"), LoopTransitions(lang, "iy", 0.9)
    g = make_g(train_ngram_lm(LM_TEXT, 2, tmp_path / "lm.arpa"), lang)
    hclg, labels = make_hclg(lang, g, tree, transitions, self_loop_scale=1.0)
    uw = lang.pdf_ids("uw")
    assert labels.extra_pdfs == uw and labels.num_labels == lang.num_pdfs + 2
    loops = {a.ilabel: a.weight.value for s in range(hclg.num_states) for a in kaldifst.ArcIterator(hclg, s)
             if a.nextstate == s}  # fmt: skip
    # uw's first state: label uw[0] + 1 for the first of (uw, iy) in phone-id order, the other one extra
    first, second = sorted([(lang.phone_to_id["uw"], 0.6), (lang.phone_to_id["iy"], 0.9)])
    assert loops[uw[0] + 1] == pytest.approx(-math.log(first[1]), abs=1e-3)
    assert loops[lang.num_pdfs + 1] == pytest.approx(-math.log(second[1]), abs=1e-3)
    assert lang.pdf_ids("iy")[0] + 1 not in loops  # iy's own pdfs are unused
    # "three" (th r iy) on iy-frames scored through the extra labels, which read uw's columns
    pdfs = pdf_sequence(lang, ["three"], 3, True)
    pdfs = [uw[lang.pdf_ids("iy").index(p)] if p in lang.pdf_ids("iy") else p for p in pdfs]
    loglikes = one_hot_loglikes(lang, pdfs, -100.0)
    matrix = label_columns(loglikes, labels.extra_pdfs)
    assert matrix.shape == (len(pdfs), lang.num_pdfs + 2)
    word_ids, _, acoustic = best_path(hclg, matrix)
    assert word_ids == [lang.word_to_id["three"]] and acoustic == pytest.approx(0.0, abs=1e-3)
    # the decode stage's search widens the matrix the same way (from the graph info's extra pdfs)
    hyp = search_utterance(hclg, loglikes, acoustic_scale=1.0, extra_pdfs=labels.extra_pdfs)
    assert hyp.word_ids == [lang.word_to_id["three"]] and hyp.reached_final


def test_label_columns_by_hand() -> None:
    loglikes = np.array([[0.0, -1.0, -2.0], [-3.0, -4.0, -5.0]])
    assert label_columns(loglikes, []) is loglikes  # no extra labels: the matrix as it is
    # labels 4 and 5 (num_pdfs + 1 + j) score pdfs 2 and 0: columns 3 and 4
    expected = [[0.0, -1.0, -2.0, -2.0, 0.0], [-3.0, -4.0, -5.0, -5.0, -3.0]]
    assert label_columns(loglikes, [2, 0]).tolist() == expected
    with pytest.raises(ValueError, match=r"extra label pdfs \[3\] out of range for a matrix of 3 pdfs"):
        label_columns(loglikes, [1, 3])


def test_hmm_labels_monophone_is_identity(lang: Lang) -> None:
    windows = [(lang.phone_to_id[p],) for p in lang.phones]
    labels, chains = hmm_labels(lang, MonophoneTree(lang), LangTransitions(lang), windows)
    assert labels.extra_pdfs == [] and labels.num_labels == lang.num_pdfs
    assert chains[windows[-1]].labels == [d + 1 for d in lang.pdf_ids(lang.phones[-1])]
    assert chains[windows[-1]].forward == pytest.approx([-math.log(0.4)] * 2)
    with pytest.raises(ValueError, match="context width"):
        hmm_labels(lang, MonophoneTree(lang), LangTransitions(lang), [(1, 2, 3)])
    with pytest.raises(ValueError, match="out of range"):
        HmmLabels(3).label(3, 0.5)


def test_align_stage_files_give_the_monophone_graph(lang: Lang, lang_dir: Path, tmp_path: Path) -> None:
    """tree.json / transitions.json of a monophone align stage (asr_kd.hmm) select the monophone graph."""
    from asr_kd.decode.run import decoding_graph, load_hmms
    from asr_kd.hmm.transitions import TransitionModel
    from asr_kd.hmm.tree import ContextDependency

    ContextDependency.monophone(lang).save(tmp_path / "tree.json")
    TransitionModel.from_lang(lang).save(tmp_path / "transitions.json")
    (tmp_path / "lm.txt").write_text("\n".join(LM_TEXT) + "\n")
    _, tree, transitions = load_hmms(lang_dir, tmp_path / "tree.json", tmp_path / "transitions.json")
    path, info = decoding_graph(lang_dir, None, 2, tmp_path / "lm.txt", tree, transitions)
    assert info["context_dependency"] == "monophone"
    assert path == ensure_decoding_graph(lang_dir, LM_TEXT, order=2)[0]
    # without an LM text: the one cached 2-gram graph of that context dependency
    assert decoding_graph(lang_dir, None, 2, None, tree, transitions)[0] == path
