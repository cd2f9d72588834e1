"""Tests of the decoding graph (asr_kd.decode.graph): LM training, G, HCLG labels, costs and the cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import kaldi_decoder
import kaldifst
import pytest
from decode_fixtures import LM_TEXT, make_lang, one_hot_loglikes, pdf_sequence

from asr_kd.align.graph import utterance_graph
from asr_kd.data.lang import Lang, prepare_lang
from asr_kd.decode.graph import (
    GraphError,
    DEFAULT_SELF_LOOP_SCALE,
    build_decoding_graph,
    ensure_decoding_graph,
    graph_build_info,
    graph_key,
    make_decoding_graph,
    make_g,
    map_oov,
    read_graph_info,
    train_ngram_lm,
    transcripts_sha256,
)


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("decode_graph")
    make_lang(tmp)
    return tmp / "lang"


@pytest.fixture(scope="module")
def lang(lang_dir: Path) -> Lang:
    return Lang.load(lang_dir)


@pytest.fixture(scope="module")
def hclg(lang_dir: Path) -> kaldifst.StdVectorFst:
    return build_decoding_graph(lang_dir, LM_TEXT, order=2)


def read_arpa(path: Path) -> dict[tuple[str, ...], tuple[float, float]]:
    """n-gram -> (log10 prob, log10 back-off weight)."""
    ngrams = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and not line.startswith("ngram"):
            ngrams[tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return ngrams


def lm_cost(ngrams: dict, words: list[str]) -> float:
    """The cost of ``<s> words </s>`` in G of a back-off bigram, in nats.

    G is in the tropical semiring and its back-off arcs are always open, so each word costs the cheaper
    of the bigram and back-off + unigram (Kaldi's G; negative back-off costs make this matter here).
    """
    total, history = 0.0, "<s>"
    for word in words + ["</s>"]:
        backoff = ngrams[(history,)][1] + ngrams[(word,)][0]
        total += max(ngrams[(history, word)][0], backoff) if (history, word) in ngrams else backoff
        history = word
    return -total * math.log(10)


def test_train_ngram_lm(tmp_path: Path) -> None:
    arpa = train_ngram_lm(["a b", "b a b", "", "a"], 2, tmp_path / "lm.arpa")
    text = arpa.read_text()
    assert "ngram 1=4" in text and "ngram 2=6" in text  # <s> </s> a b; <s>a <s>b ab ba a</s> b</s>
    ngrams = read_arpa(arpa)
    assert 10 ** ngrams[("a", "b")][0] > 10 ** ngrams[("a", "</s>")][0]
    with pytest.raises(GraphError, match="order"):
        train_ngram_lm(["a"], 6, tmp_path / "x.arpa")
    with pytest.raises(GraphError, match="no non-empty"):
        train_ngram_lm(["", "  "], 2, tmp_path / "x.arpa")


def test_map_oov(lang: Lang) -> None:
    assert map_oov(["one eleven  two"], lang) == ["one <UNK> two"]


def test_g_has_backoff_disambig(lang: Lang, lang_dir: Path, tmp_path: Path) -> None:
    g = make_g(train_ngram_lm(LM_TEXT, 2, tmp_path / "lm.arpa"), lang, lang_dir)
    ilabels = {a.ilabel for s in range(g.num_states) for a in kaldifst.ArcIterator(g, s)}
    assert lang.word_to_id["#0"] in ilabels
    assert lang.word_to_id["<s>"] not in ilabels and lang.word_to_id["</s>"] not in ilabels


def test_hclg_labels(lang: Lang, hclg: kaldifst.StdVectorFst) -> None:
    arcs = [(s, a) for s in range(hclg.num_states) for a in kaldifst.ArcIterator(hclg, s)]
    assert {a.ilabel for _, a in arcs} <= set(range(lang.num_pdfs + 1))  # pdf + 1, no #k left
    words = {lang.word_to_id[w] for w in ("one", "two", "three", "ten")}
    assert {a.olabel for _, a in arcs} - {0} == words  # "to" is not in the LM; no #0
    self_loops = {a.ilabel - 1: a.weight.value for s, a in arcs if a.nextstate == s}
    assert set(self_loops) == set(range(lang.num_pdfs)) - {lang.pdf_ids("SPN")[0]}  # <UNK> not in the LM
    # Kaldi's mkgraph.sh --self-loop-scale 0.1: the HMM's costs are scaled, not the LM's
    assert DEFAULT_SELF_LOOP_SCALE == 0.1
    assert all(v == pytest.approx(-0.1 * math.log(0.6), abs=1e-3) for v in self_loops.values())
    assert hclg.is_ilabel_sorted


@pytest.mark.parametrize("words", [["one", "two", "three"], ["ten"], ["three", "three", "one"]])
@pytest.mark.parametrize("silence", [True, False])
def test_path_cost_is_hmm_plus_lm(lang: Lang, lang_dir: Path, hclg, words: list[str], silence: bool) -> None:
    """HCLG's best-path cost = the alignment graph's cost (transitions, silences) + the LM cost."""
    loglikes = one_hot_loglikes(lang, pdf_sequence(lang, words, 2, silence), low=-100.0)

    def best_cost(graph) -> tuple[float, list[int]]:
        decoder = kaldi_decoder.FasterDecoder(graph, kaldi_decoder.FasterDecoderOptions(beam=200))
        decoder.decode(kaldi_decoder.DecodableCtc(loglikes))
        ok, lattice = decoder.get_best_path()
        ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
        assert ok and weight.value2 == pytest.approx(0.0, abs=1e-4)  # on the one-hot path
        return weight.value1, [w for w in olabels if w]

    cost, word_ids = best_cost(hclg)
    assert word_ids == [lang.word_to_id[w] for w in words]
    hmm_and_silence = best_cost(utterance_graph(lang, words, self_loop_scale=DEFAULT_SELF_LOOP_SCALE))[0]
    expected = hmm_and_silence + lm_cost(read_arpa(arpa_of(lang_dir, 2)), words)
    # minimize_encoded quantizes weights to 1/1024 (Kaldi's fstminimizeencoded): a few 1e-3 on a path
    assert cost == pytest.approx(expected, abs=1e-2)


def arpa_of(lang_dir: Path, order: int) -> Path:
    return lang_dir / f"lm-{ensure_decoding_graph(lang_dir, LM_TEXT, order)[1]['key']}.arpa"


def test_cache(lang_dir: Path, hclg) -> None:
    path, info = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    assert info["lm_order"] == 2 and info["transcripts_sha256"] == transcripts_sha256(LM_TEXT)
    assert info["num_states"] == hclg.num_states and path.name == f"HCLG-{info['key']}.fst"
    mtime = path.stat().st_mtime_ns
    again = build_decoding_graph(lang_dir, LM_TEXT, order=2)
    assert path.stat().st_mtime_ns == mtime and again.num_states == hclg.num_states
    assert not list(lang_dir.glob(".tmp.*"))


def test_the_key_changes_with_the_lang_config(lang_dir: Path, lang: Lang, tmp_path: Path) -> None:
    """A lang that differs only in L's optional-silence probability gets another graph (the old key,
    phones/words/pdfs/topology, missed it and reused the graph of the other L); the key's lang hash is
    the GMM systems' one."""
    from asr_kd.hmm.system import lang_sha256

    other = prepare_lang(lang_dir.parent / "lexicon.txt", tmp_path / "lang", num_states=2, num_sil_states=1,
                         self_loop_prob=0.6, sil_prob=0.5)  # fmt: skip
    assert other.config.sil_prob != lang.config.sil_prob and other.word_symbols == lang.word_symbols
    info, other_info = graph_build_info(lang, LM_TEXT, 2), graph_build_info(other, LM_TEXT, 2)
    assert info["lang_sha256"] == lang_sha256(lang) and other_info["lang_sha256"] == lang_sha256(other)
    assert graph_key(info) != graph_key(other_info)
    assert graph_key(info) == graph_key(graph_build_info(Lang.load(lang_dir), LM_TEXT, 2))  # stable


def _arcs(fst: kaldifst.StdVectorFst) -> list[tuple]:
    return [(s, a.ilabel, a.olabel, round(a.weight.value, 4), a.nextstate)
            for s in range(fst.num_states) for a in kaldifst.ArcIterator(fst, s)]  # fmt: skip


def test_graphs_of_two_lm_orders_share_one_lang_dir(lang_dir: Path, lang: Lang, hclg, tmp_path: Path) -> None:
    """A 1-gram build no longer replaces the 2-gram graph a concurrent decode reads: each has its own
    file, keyed by its build info, and each reads back as the graph built from scratch."""
    bigram_path, bigram = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    unigram_path, unigram = ensure_decoding_graph(lang_dir, LM_TEXT, order=1)
    assert unigram_path != bigram_path and bigram_path.is_file() and unigram_path.is_file()
    assert (unigram["lm_order"], bigram["lm_order"]) == (1, 2) and unigram["key"] != bigram["key"]
    for order, path in ((2, bigram_path), (1, unigram_path)):
        fresh = make_decoding_graph(lang, make_g(train_ngram_lm(map_oov(LM_TEXT, lang), order, tmp_path / f"{order}.arpa"),
                                                 lang, lang_dir))  # fmt: skip
        assert _arcs(kaldifst.StdVectorFst.read(str(path))) == _arcs(fresh)
    assert _arcs(kaldifst.StdVectorFst.read(str(bigram_path))) != _arcs(kaldifst.StdVectorFst.read(str(unigram_path)))
    other_text = ensure_decoding_graph(lang_dir, [*LM_TEXT, "ten ten"], order=2)[1]
    assert other_text["key"] not in (bigram["key"], unigram["key"])  # the LM text is part of the key


def test_damaged_or_mislabelled_graph_is_rebuilt(lang_dir: Path, hclg) -> None:
    path, info = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: the recorded size differs
    assert read_graph_info(path)[0] is None
    rebuilt_path, _ = ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    assert rebuilt_path == path and path.read_bytes() == good
    # a json whose info belongs to another key is not trusted
    json_path = path.with_suffix(".json")
    saved = json_path.read_text()
    json_path.write_text(json.dumps({**info, "lm_order": 3}))
    assert "key" in read_graph_info(path)[1]
    ensure_decoding_graph(lang_dir, LM_TEXT, order=2)
    assert json.loads(json_path.read_text())["lm_order"] == 2 and path.read_bytes() == good
    assert json.loads(saved)["num_bytes"] == len(good)


def test_make_decoding_graph_from_g(lang: Lang, lang_dir: Path, tmp_path: Path) -> None:
    g = make_g(train_ngram_lm(["two two", "two"], 2, tmp_path / "lm.arpa"), lang, lang_dir)
    graph = make_decoding_graph(lang, g)
    olabels = {a.olabel for s in range(graph.num_states) for a in kaldifst.ArcIterator(graph, s)}
    assert olabels == {0, lang.word_to_id["two"]}


def test_self_loop_scale_scales_the_hmm_costs_only(lang: Lang, lang_dir: Path) -> None:
    """Graphs of two self-loop scales are cached apart; on the same one-hot path (no silence taken) the
    scale multiplies the HMM transition costs and leaves the skipped silences' and the LM's costs."""
    words = ["one", "two"]
    loglikes = one_hot_loglikes(lang, pdf_sequence(lang, words, 2, False), low=-100.0)

    def cost(graph) -> float:
        decoder = kaldi_decoder.FasterDecoder(graph, kaldi_decoder.FasterDecoderOptions(beam=200))
        decoder.decode(kaldi_decoder.DecodableCtc(loglikes))
        ok, lattice = decoder.get_best_path()
        assert ok
        return kaldifst.get_linear_symbol_sequence(lattice)[3].value1

    path_01, info_01 = ensure_decoding_graph(lang_dir, LM_TEXT, order=2, self_loop_scale=0.1)
    path_1, info_1 = ensure_decoding_graph(lang_dir, LM_TEXT, order=2, self_loop_scale=1.0)
    assert path_01 != path_1 and (info_01["self_loop_scale"], info_1["self_loop_scale"]) == (0.1, 1.0)
    skips = (len(words) + 1) * -math.log1p(-lang.config.sil_prob)  # optional silences not taken
    ali_1, ali_01 = (cost(utterance_graph(lang, words, self_loop_scale=x)) for x in (1.0, 0.1))
    assert ali_01 - skips == pytest.approx(0.1 * (ali_1 - skips), abs=1e-4) and ali_1 - skips > 1.0
    hclg_1, hclg_01 = (cost(kaldifst.StdVectorFst.read(str(p))) for p in (path_1, path_01))
    # minimize_encoded quantizes weights to 1/1024 (a few 1e-3 on a path)
    assert hclg_1 - hclg_01 == pytest.approx(ali_1 - ali_01, abs=1e-2)
