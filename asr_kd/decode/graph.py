"""The decoding graph HCLG (HMM o lexicon o n-gram LM) of a lang directory, built with kaldifst + kaldilm.

Usage:
    from asr_kd.decode.graph import build_decoding_graph
    graph = build_decoding_graph("data/lang", transcripts, order=3)   # cached in data/lang/HCLG.fst

The steps (Kaldi's mkgraph.sh without context dependency; each phone state is its own pdf):

1. ``train_ngram_lm``: a Kneser-Ney ARPA LM (kaldingram) on the training transcripts (out-of-vocabulary
   words mapped to ``lang.config.oov_word``).
2. ``make_g``: G = kaldilm.arpa2fst with ``#0`` on the input side of back-off arcs, ``<s>``/``</s>`` as
   epsilon, symbols from words.txt.
3. LG = L_disambig o G (L arc-sorted on output labels, G on input labels), then ``determinize_star``
   (possible thanks to the disambiguation symbols) and ``minimize_encoded``.
4. H expansion, no self-loops yet: every phone arc ``p:w/c`` of LG becomes the chain of its HMM states
   ``d_0+1:w/c, d_1+1:0/-f_0, ..., 0:0/-f_{n-1}`` (``d_i`` the pdf ids, ``f_i`` the forward log-probs);
   a disambiguation symbol ``#k`` becomes the private input label ``num_pdfs + 1 + k`` so that it keeps
   the graph determinizable; then ``determinize_star`` and ``minimize_encoded`` again (Kaldi's
   H o CLG, determinize, minimize).
5. Remove the disambiguation symbols and add self-loops, in one rebuild with ``add_arc`` (never mutating
   labels in place): ``#k`` input labels become epsilon; every state is split by the input label of its
   incoming arcs (the start state counts as reached by epsilon) and a copy reached by pdf ``d`` gets the
   self-loop ``d+1:0/-l_d`` (``l_d`` the self-loop log-prob), as Kaldi's add-self-loops without reordering.
   Input labels are pdf id + 1 (0 = epsilon), as kaldi-decoder's ``DecodableCtc`` wants; output labels
   are word ids (words.txt); costs in nats (tropical semiring).

``build_decoding_graph`` caches the result in the lang dir under a name keyed by what it was built from,
so that decodes with different LMs can share one lang dir, even at the same time::

    HCLG-<key>.fst     the graph; <key>: the first 16 hex digits of the sha256 of its build info
    HCLG-<key>.json    the build info (format version, LM order, sha256 of the LM transcripts, of the
                       lexicon and of the lang's phones/words/pdfs/topology, the context dependency
                       "monophone": no tree), sizes, and the graph file's byte size; written after the graph
    lm-<key>.arpa, lm-<key>.G.fst   its LM and G

Every file is written to a temporary name and renamed; two runs building the same key write the same
bytes. A cached graph is used only when its json holds the expected info, the key of its name is the key
of that info, and the graph file has the recorded size; otherwise it is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from asr_kd.utils import atomic_output, write_json, write_text

GRAPH_KEY_DIGITS = 16
CONTEXT_DEPENDENCY = "monophone"  # no decision tree: each state of each phone is its own pdf

if TYPE_CHECKING:
    import kaldifst

    from asr_kd.data.lang import Lang

GRAPH_FORMAT_VERSION = 1


class GraphError(ValueError):
    """The decoding graph cannot be built (empty LM text, failed determinization, ...)."""


def _kaldifst():
    import kaldifst  # imported late: the import order of the kaldi* modules matters to some processes

    return kaldifst


def transcripts_sha256(transcripts: Iterable[str]) -> str:
    """sha256 of the transcripts, one normalized line each (whitespace collapsed)."""
    digest = hashlib.sha256()
    for line in transcripts:
        digest.update((" ".join(line.split()) + "\n").encode("utf-8"))
    return digest.hexdigest()


def train_ngram_lm(transcripts: Iterable[str], order: int, out_arpa: Path | str) -> Path:
    """Train a Kneser-Ney n-gram LM (kaldingram, SRILM's ``-ukndiscount``) and write it as ARPA, atomically.

    Args:
        transcripts: one sentence per item, words separated by whitespace (empty items are skipped).
        order: n-gram order, 1..5.
        out_arpa: the ARPA file to write.
    """
    from kaldingram.train import NgramCounts

    if not 1 <= order <= 5:
        raise GraphError(f"LM order must be in 1..5, got {order}")
    counts = NgramCounts(order)
    num_lines = 0
    for line in transcripts:
        line = " ".join(line.split())
        if line:
            counts.add_raw_counts_from_line(line)
            num_lines += 1
    if num_lines == 0:
        raise GraphError("no non-empty transcript to train the LM on")
    try:
        counts.cal_discounting_constants()
        counts.cal_f()
        counts.cal_bow()
    except ZeroDivisionError as e:
        raise GraphError(f"{num_lines} transcripts are too few to estimate a Kneser-Ney {order}-gram "
                         f"(counts of counts are zero: {e}); use a lower order or more text") from e
    text = io.StringIO()
    counts.print_as_arpa(fout=text)
    write_text(out_arpa, text.getvalue())
    return Path(out_arpa)


def make_g(arpa: Path | str, lang: Lang, lang_dir: Path | str | None = None) -> kaldifst.StdVectorFst:
    """G from an ARPA LM: kaldilm.arpa2fst with ``#0`` on back-off arcs, word ids of words.txt.

    Also written beside the ARPA file as ``<arpa stem>.G.fst``. Tropical semiring: the back-off arcs are
    always open, so a word costs the cheaper of its n-gram and back-off paths (as Kaldi's G).

    Args:
        arpa: the ARPA file (words must be in ``lang.word_symbols``; others are skipped by arpa2fst).
        lang: the lang; its words.txt is written next to ``arpa`` when ``lang_dir`` is not given.
        lang_dir: the directory holding words.txt.
    """
    import kaldilm

    kaldifst = _kaldifst()
    arpa = Path(arpa)
    words_txt = Path(lang_dir) / "words.txt" if lang_dir is not None else arpa.with_suffix(".words.txt")
    if lang_dir is None:
        write_text(words_txt, "".join(f"{s} {i}\n" for i, s in enumerate(lang.word_symbols)))
    with atomic_output(arpa.with_suffix(".G.fst")) as tmp:
        kaldilm.arpa2fst(str(arpa), str(tmp), disambig_symbol="#0", read_symbol_table=str(words_txt),
                         max_arpa_warnings=-1)
        g = kaldifst.StdVectorFst.read(str(tmp))
    kaldifst.arcsort(g, sort_type="ilabel")
    return g


def _transition_costs(lang: Lang) -> tuple[np.ndarray, np.ndarray]:
    """Per pdf: (self-loop cost, forward cost) in nats, ``-ln p`` and ``-ln (1 - p)``."""
    self_loop, forward = np.zeros(lang.num_pdfs), np.zeros(lang.num_pdfs)
    for phone in lang.phones:
        for pdf, (loop_lp, fwd_lp) in zip(lang.pdf_ids(phone), lang.transition_logprobs(phone)):
            self_loop[pdf], forward[pdf] = -loop_lp, -fwd_lp
    return self_loop, forward


def _determinize_minimize(fst: kaldifst.StdVectorFst, what: str) -> None:
    kaldifst = _kaldifst()
    # returns True when stopped early (max_states), False when it completed
    if kaldifst.determinize_star(fst):  # pragma: no cover - no max_states limit is set
        raise GraphError(f"determinization of {what} stopped early")
    kaldifst.minimize_encoded(fst)


def _compose_lg(lang: Lang, g: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """Step 3: det(min(L_disambig o G)), phone ids -> word ids (``#0`` on back-off input arcs kept)."""
    from asr_kd.data.lexicon_fst import make_lexicon_fst

    kaldifst = _kaldifst()
    lex = make_lexicon_fst(lang, disambig=True)  # arc-sorted on output labels
    kaldifst.arcsort(g, sort_type="ilabel")
    lg = kaldifst.compose(lex, g)
    _determinize_minimize(lg, "LG")
    return lg


def _expand_hmms(lang: Lang, lg: kaldifst.StdVectorFst, forward: np.ndarray) -> kaldifst.StdVectorFst:
    """Step 4: phones -> left-to-right HMM chains without self-loops; ``#k`` -> ``num_pdfs + 1 + k``."""
    kaldifst = _kaldifst()
    disambig_label = {pid: lang.num_pdfs + 1 + k for k, pid in enumerate(lang.disambig_ids)}
    word_disambig = lang.word_to_id["#0"]
    phone_pdfs = {lang.phone_to_id[p]: lang.pdf_ids(p) for p in lang.phones}
    h = kaldifst.StdVectorFst()
    for _ in range(lg.num_states):
        h.add_state()
    h.start = lg.start
    for state in range(lg.num_states):
        final = lg.final(state).value
        if math.isfinite(final):
            h.set_final(state, final)
        for arc in kaldifst.ArcIterator(lg, state):
            olabel = 0 if arc.olabel == word_disambig else arc.olabel
            cost = arc.weight.value
            if arc.ilabel in phone_pdfs:
                pdfs, src = phone_pdfs[arc.ilabel], state
                for i, pdf in enumerate(pdfs):
                    nxt = h.add_state()
                    h.add_arc(src, kaldifst.StdArc(pdf + 1, olabel if i == 0 else 0,
                                                   cost if i == 0 else float(forward[pdfs[i - 1]]), nxt))
                    src = nxt
                h.add_arc(src, kaldifst.StdArc(0, 0, float(forward[pdfs[-1]]), arc.nextstate))
            elif arc.ilabel in disambig_label or arc.ilabel == 0:
                h.add_arc(state, kaldifst.StdArc(disambig_label.get(arc.ilabel, 0), olabel, cost,
                                                 arc.nextstate))
            else:  # pragma: no cover - L_disambig has phones and #k only
                raise GraphError(f"LG has an unknown input label {arc.ilabel}")
    return h


def _remove_disambig_add_self_loops(lang: Lang, h: kaldifst.StdVectorFst,
                                    self_loop: np.ndarray) -> kaldifst.StdVectorFst:
    """Step 5: ``#k`` -> epsilon and HMM self-loops, splitting states by incoming input label."""
    kaldifst = _kaldifst()
    num_pdfs = lang.num_pdfs

    def mapped(ilabel: int) -> int:
        return ilabel if ilabel <= num_pdfs else 0

    incoming: list[set[int]] = [set() for _ in range(h.num_states)]
    incoming[h.start].add(0)
    for state in range(h.num_states):
        for arc in kaldifst.ArcIterator(h, state):
            incoming[arc.nextstate].add(mapped(arc.ilabel))
    out = kaldifst.StdVectorFst()
    copies: list[dict[int, int]] = []
    for state in range(h.num_states):
        copies.append({label: out.add_state() for label in sorted(incoming[state] or {0})})
    out.start = copies[h.start][0]
    for state in range(h.num_states):
        final = h.final(state).value
        arcs = [(mapped(a.ilabel), a.olabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(h, state)]
        for label, copy in copies[state].items():
            if math.isfinite(final):
                out.set_final(copy, final)
            if label > 0:
                out.add_arc(copy, kaldifst.StdArc(label, 0, float(self_loop[label - 1]), copy))
            for ilabel, olabel, cost, nxt in arcs:
                out.add_arc(copy, kaldifst.StdArc(ilabel, olabel, cost, copies[nxt][ilabel]))
    kaldifst.connect(out)
    kaldifst.arcsort(out, sort_type="ilabel")
    return out


def make_decoding_graph(lang: Lang, g: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """HCLG from a lang and G (steps 3-5 of the module docstring).

    Returns:
        ``kaldifst.StdVectorFst``: input labels pdf id + 1 (0 = epsilon), output labels word ids, costs
        -ln P(HMM transitions, optional silence, words) in nats; arc-sorted on input labels.
    """
    self_loop, forward = _transition_costs(lang)
    lg = _compose_lg(lang, g)
    h = _expand_hmms(lang, lg, forward)
    _determinize_minimize(h, "H o LG")
    hclg = _remove_disambig_add_self_loops(lang, h, self_loop)
    if hclg.num_states == 0:
        raise GraphError("the decoding graph is empty (does the LM share any word with the lexicon?)")
    logging.info(f"HCLG: LG {lg.num_states} states -> HCLG {hclg.num_states} states, "
                 f"{sum(hclg.num_arcs(s) for s in range(hclg.num_states))} arcs")
    return hclg


def map_oov(transcripts: Iterable[str], lang: Lang) -> list[str]:
    """The transcripts with words outside the lexicon replaced by ``lang.config.oov_word``."""
    oov, vocab = lang.config.oov_word, set(lang.lexicon)
    return [" ".join(w if w in vocab else oov for w in line.split()) for line in transcripts]


def lang_sha256(lang: Lang) -> str:
    """sha256 of what the graph takes from a lang besides the lexicon: phones, words, pdfs, topology."""
    text = json.dumps({"phones": lang.phone_symbols, "words": lang.word_symbols, "pdfs": lang.pdfs_text(),
                       "topology": lang.topo_json()}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def graph_build_info(lang: Lang, texts: Sequence[str], order: int) -> dict:
    """What a decoding graph is built from (its cache key is the sha256 of this dict): ``texts`` are the
    LM transcripts after :func:`map_oov`."""
    return {"format_version": GRAPH_FORMAT_VERSION, "lm_order": int(order), "transcripts_sha256": transcripts_sha256(texts),
            "lexicon_sha256": lang.lexicon_sha256, "lang_sha256": lang_sha256(lang),
            "context_dependency": CONTEXT_DEPENDENCY}  # fmt: skip


def graph_key(info: dict) -> str:
    """The cache key of a graph's build info: the first 16 hex digits of the sha256 of its canonical JSON."""
    fields = {k: info[k] for k in ("format_version", "lm_order", "transcripts_sha256", "lexicon_sha256",
                                   "lang_sha256", "context_dependency")}  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:GRAPH_KEY_DIGITS]


def graph_paths(lang_dir: Path | str, key: str) -> tuple[Path, Path]:
    """``(HCLG-<key>.fst, HCLG-<key>.json)`` in ``lang_dir``."""
    lang_dir = Path(lang_dir)
    return lang_dir / f"HCLG-{key}.fst", lang_dir / f"HCLG-{key}.json"


def read_graph_info(graph_path: Path | str) -> tuple[dict | None, str]:
    """``(info, "")`` of a cached graph that is complete and consistent, else ``(None, why not)``: its json
    is readable, its name's key is the key of its info, and the graph file has the recorded size."""
    graph_path = Path(graph_path)
    info_path = graph_path.with_suffix(".json")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        key = graph_key(info)
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{info_path} is missing or unreadable"
    if graph_path.name != f"HCLG-{key}.fst":
        return None, f"{info_path} describes a graph with key {key}, not {graph_path.name}"
    if not graph_path.is_file() or graph_path.stat().st_size != info.get("num_bytes"):
        return None, f"{graph_path} is missing or does not have the {info.get('num_bytes')} bytes recorded"
    return info, ""


def cached_graphs(lang_dir: Path | str) -> list[tuple[Path, dict]]:
    """The complete cached graphs of ``lang_dir``, ``(graph path, info)``, sorted by file name."""
    out = []
    for path in sorted(Path(lang_dir).glob("HCLG-*.fst")):
        info, _ = read_graph_info(path)
        if info is not None:
            out.append((path, info))
    return out


def ensure_decoding_graph(lang_dir: Path | str, transcripts: Sequence[str], order: int = 3,
                          force: bool = False) -> tuple[Path, dict]:  # fmt: skip
    """The path and info of the ``order``-gram HCLG of ``lang_dir`` on ``transcripts``: the cached
    ``HCLG-<key>.fst`` when it verifies (:func:`read_graph_info`), else built and cached (module docstring)."""
    from asr_kd.data.lang import Lang

    lang_dir = Path(lang_dir)
    lang = Lang.load(lang_dir)
    texts = map_oov(transcripts, lang)
    info = graph_build_info(lang, texts, order)
    key = graph_key(info)
    graph_path, info_path = graph_paths(lang_dir, key)
    if not force:
        cached, why = read_graph_info(graph_path)
        if cached is not None and all(cached.get(k) == v for k, v in info.items()):
            logging.info(f"{graph_path} already done ({order}-gram LM)")
            return graph_path, cached
        if graph_path.exists() or info_path.exists():
            logging.warning(f"{graph_path} cannot be reused ({why or 'other build info'}): rebuilding")
    arpa = train_ngram_lm(texts, order, lang_dir / f"lm-{key}.arpa")
    hclg = make_decoding_graph(lang, make_g(arpa, lang, lang_dir))
    with atomic_output(graph_path) as tmp:
        if not hclg.write(str(tmp)):
            raise OSError(f"could not write {graph_path}")
    info.update(key=key, num_states=hclg.num_states, num_arcs=sum(hclg.num_arcs(s) for s in range(hclg.num_states)),
                num_transcripts=len(texts), num_bytes=graph_path.stat().st_size)  # fmt: skip
    write_json(info_path, info)
    return graph_path, info


def build_decoding_graph(lang_dir: Path | str, transcripts: Sequence[str], order: int = 3,
                         force: bool = False) -> kaldifst.StdVectorFst:
    """The ``order``-gram HCLG of ``lang_dir`` on ``transcripts``, read if cached, else built
    (:func:`ensure_decoding_graph`; also writes ``lm-<key>.arpa`` and its G, ``lm-<key>.G.fst``)."""
    graph_path, _ = ensure_decoding_graph(lang_dir, transcripts, order, force)
    return _kaldifst().StdVectorFst.read(str(graph_path))
