"""The decoding graph HCLG (HMM o lexicon o n-gram LM) of a lang directory, built with kaldifst + kaldilm.

Usage:
    from asr_kd.decode.graph import build_decoding_graph
    graph = build_decoding_graph("data/lang", transcripts, order=3)   # cached in data/lang/HCLG-<key>.fst
    path, info = ensure_decoding_graph("data/lang", transcripts, tree=tree, transitions=transitions)
    extra_pdfs = graph_label_pdfs(info)                               # triphone pdfs: the key has the tree

The steps (Kaldi's mkgraph.sh):

1. ``train_ngram_lm``: a Kneser-Ney ARPA LM (kaldingram) on the LM text (out-of-vocabulary words mapped
   to ``lang.config.oov_word``).
2. ``make_g``: G = kaldilm.arpa2fst with ``#0`` on the input side of back-off arcs, ``<s>``/``</s>`` as
   epsilon, symbols from words.txt.
3. LG = L_disambig o G (L arc-sorted on output labels, G on input labels), then ``determinize_star``
   (possible thanks to the disambiguation symbols) and ``minimize_encoded``.
   With a context tree (``context_width`` N > 1, central position P): CLG = ``kaldifst.compose_context``
   (Kaldi's fstcomposecontext) of LG, whose input label i is the phone window ``ilabel_info[i]`` (N phone
   ids, 0 = no phone at the utterance's start or end), ``[-d]`` the disambiguation symbol d and ``[0]``
   the start-of-utterance symbol (Kaldi's ``#-1``, kept as one more disambiguation symbol). A monophone
   tree skips this: LG's phone ``p`` is the window ``(p,)``.
4. H expansion, no self-loops yet (Kaldi's make-h-transducer, applied by substitution): every window arc
   ``w:o/c`` becomes the chain of the HMM states of its central phone
   ``l_0:o/c, l_1:0/-f_0, ..., 0:0/-f_{n-1}`` (``l_i`` the label of pdf ``tree.pdf(w, i)`` with the
   state's self-loop cost, :class:`~asr_kd.decode.context.HmmLabels`; ``f_i`` the forward log-probs of
   the transition model); a disambiguation symbol ``#k`` becomes the private input label
   ``num_labels + 1 + k`` so that it keeps the graph determinizable; then ``determinize_star`` and
   ``minimize_encoded`` again (Kaldi's H o CLG, determinize, minimize).
5. Remove the disambiguation symbols and add self-loops, in one rebuild with ``add_arc`` (never mutating
   labels in place): ``#k`` input labels become epsilon; every state is split by the input label of its
   incoming arcs (the start state counts as reached by epsilon) and a copy reached by label ``l`` gets
   the self-loop ``l:0/-loop_l``, as Kaldi's add-self-loops without reordering.
   Input labels are pdf id + 1 (0 = epsilon; labels above num_pdfs score ``extra_label_pdfs``), as
   kaldi-decoder's ``DecodableCtc`` wants; output labels are word ids (words.txt); costs in nats
   (tropical semiring).

Without a tree (or with a monophone tree whose pdfs are the lang's, and the lang's transitions) the graph
is the monophone one: labels pdf id + 1, no extra labels.

``build_decoding_graph`` caches the result in the lang dir under a name keyed by what it was built from,
so that decodes with different LMs can share one lang dir, even at the same time::

    HCLG-<key>.fst     the graph; <key>: the first 16 hex digits of the sha256 of its build info
    HCLG-<key>.json    the build info (format version, LM order, sha256 of the LM transcripts, of the
                       lexicon and of the lang (asr_kd.hmm.system.lang_sha256), the context dependency:
                       "monophone", or N, P and the sha256 of the tree and transitions files,
                       :func:`context_dependency`), the HMM transition costs' scale (``self_loop_scale``,
                       :func:`make_hclg`), sizes, the graph file's byte size, the pdfs of the extra input
                       labels; written after the graph
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

from asr_kd.decode.context import (
    ContextTree,
    HmmChain,
    HmmLabels,
    LangTransitions,
    MonophoneTree,
    ScaledTransitions,
    Transitions,
    hmm_labels,
    is_monophone,
    saved_sha256,
)
from asr_kd.utils import atomic_output, write_json, write_text

GRAPH_KEY_DIGITS = 16
CONTEXT_DEPENDENCY = "monophone"  # no decision tree: each state of each phone is its own pdf (lang topology)

if TYPE_CHECKING:
    import kaldifst

    from asr_kd.data.lang import Lang

GRAPH_FORMAT_VERSION = 1
#: the HMM transition costs' scale in HCLG (Kaldi's mkgraph.sh default, for GMMs and cross-entropy hybrids)
DEFAULT_SELF_LOOP_SCALE = 0.1


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


def _input_labels(lang: Lang, fst: kaldifst.StdVectorFst, tree: ContextTree, transitions: Transitions
                  ) -> tuple[kaldifst.StdVectorFst, HmmLabels, dict[int, HmmChain | int]]:
    """The FST whose input labels are expanded into HMMs (LG, or CLG for a context tree) and what each of
    its input labels becomes: an HMM chain, or a private disambiguation label (0 for epsilon)."""
    kaldifst = _kaldifst()
    disambig_ids = lang.disambig_ids
    if is_monophone(tree):
        windows = {lang.phone_to_id[p]: (lang.phone_to_id[p],) for p in lang.phones}
        disambig = {pid: k for k, pid in enumerate(disambig_ids)}
    else:
        # C o LG (Kaldi's fstcomposecontext): input label i is the phone window ilabel_info[i]; [] is
        # epsilon, [-d] the disambiguation symbol d, [0] the start-of-utterance symbol (Kaldi's #-1, a
        # disambiguation symbol of its own); a 0 inside a window is "no phone" (utterance start or end)
        fst, ilabel_info = kaldifst.compose_context(disambig_ids, tree.context_width, tree.central_position, fst)
        windows, disambig = {}, {}
        for ilabel, info in enumerate(ilabel_info):
            if len(info) == tree.context_width and (len(info) > 1 or info[0] > 0):
                windows[ilabel] = tuple(info)
            elif len(info) == 1 and info[0] == 0:
                disambig[ilabel] = len(disambig_ids)
            elif len(info) == 1 and -info[0] in disambig_ids:
                disambig[ilabel] = disambig_ids.index(-info[0])
            elif info:  # pragma: no cover - compose_context writes only these
                raise GraphError(f"compose_context gave input label {ilabel} the unknown meaning {list(info)}")
    labels, chains = hmm_labels(lang, tree, transitions, [windows[i] for i in sorted(windows)])
    kinds: dict[int, HmmChain | int] = {i: chains[w] for i, w in windows.items()}
    kinds.update({i: labels.num_labels + 1 + k for i, k in disambig.items()})
    kinds[0] = 0
    return fst, labels, kinds


def _expand_hmms(lang: Lang, fst: kaldifst.StdVectorFst, kinds: dict[int, HmmChain | int]) -> kaldifst.StdVectorFst:
    """Step 4: input labels -> left-to-right HMM chains without self-loops (``kinds``, from
    :func:`_input_labels`); disambiguation symbols -> their private labels; ``#0`` outputs -> epsilon."""
    kaldifst = _kaldifst()
    word_disambig = lang.word_to_id["#0"]
    h = kaldifst.StdVectorFst()
    for _ in range(fst.num_states):
        h.add_state()
    h.start = fst.start
    for state in range(fst.num_states):
        final = fst.final(state).value
        if math.isfinite(final):
            h.set_final(state, final)
        for arc in kaldifst.ArcIterator(fst, state):
            olabel = 0 if arc.olabel == word_disambig else arc.olabel
            cost = arc.weight.value
            kind = kinds.get(arc.ilabel)
            if isinstance(kind, HmmChain):
                src = state
                for i, label in enumerate(kind.labels):
                    nxt = h.add_state()
                    h.add_arc(src, kaldifst.StdArc(label, olabel if i == 0 else 0,
                                                   cost if i == 0 else kind.forward[i - 1], nxt))
                    src = nxt
                h.add_arc(src, kaldifst.StdArc(0, 0, kind.forward[-1], arc.nextstate))
            elif kind is not None:
                h.add_arc(state, kaldifst.StdArc(kind, olabel, cost, arc.nextstate))
            else:  # pragma: no cover - L_disambig has phones and #k only
                raise GraphError(f"LG has an unknown input label {arc.ilabel}")
    return h


def _remove_disambig_add_self_loops(h: kaldifst.StdVectorFst, labels: HmmLabels) -> kaldifst.StdVectorFst:
    """Step 5: ``#k`` -> epsilon and HMM self-loops, splitting states by incoming input label."""
    kaldifst = _kaldifst()
    num_labels = labels.num_labels

    def mapped(ilabel: int) -> int:
        return ilabel if ilabel <= num_labels else 0

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
                out.add_arc(copy, kaldifst.StdArc(label, 0, labels.self_loop[label], copy))
            for ilabel, olabel, cost, nxt in arcs:
                out.add_arc(copy, kaldifst.StdArc(ilabel, olabel, cost, copies[nxt][ilabel]))
    kaldifst.connect(out)
    kaldifst.arcsort(out, sort_type="ilabel")
    return out


def make_hclg(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree | None = None,
              transitions: Transitions | None = None, self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE
              ) -> tuple[kaldifst.StdVectorFst, HmmLabels]:
    """HCLG from a lang and G (steps 3-5 of the module docstring), and its input labels.

    Args:
        tree: the context tree of the acoustic model's pdfs (None: the lang's monophone pdfs).
        transitions: its transition model (None: the lang topology's fixed probabilities).
        self_loop_scale: multiplies the HMM transition costs (self-loops and forward transitions), not
            the lexicon's and the LM's: Kaldi's ``mkgraph.sh --self-loop-scale`` (0.1 by default there,
            for GMM and cross-entropy hybrid models decoded at an acoustic scale near 0.1).

    Returns:
        ``(hclg, labels)``: hclg a ``kaldifst.StdVectorFst`` with input labels 1..``labels.num_labels``
        (pdf id + 1, plus the extra labels of :class:`~asr_kd.decode.context.HmmLabels`; 0 = epsilon),
        output labels word ids, costs ``-self_loop_scale * ln P(HMM transitions) - ln P(optional silence,
        words)`` in nats; arc-sorted on input labels.
    """
    tree = tree if tree is not None else MonophoneTree(lang)
    transitions = transitions if transitions is not None else LangTransitions(lang)
    if self_loop_scale != 1.0:
        transitions = ScaledTransitions(transitions, self_loop_scale)
    lg = _compose_lg(lang, g)
    lg_states = lg.num_states
    fst, labels, kinds = _input_labels(lang, lg, tree, transitions)
    h = _expand_hmms(lang, fst, kinds)
    _determinize_minimize(h, "H o CLG" if not is_monophone(tree) else "H o LG")
    hclg = _remove_disambig_add_self_loops(h, labels)
    if hclg.num_states == 0:
        raise GraphError("the decoding graph is empty (does the LM share any word with the lexicon?)")
    logging.info(f"HCLG (context width {tree.context_width}): LG {lg_states} states -> HCLG {hclg.num_states} "
                 f"states, {sum(hclg.num_arcs(s) for s in range(hclg.num_states))} arcs, "
                 f"{labels.num_labels} input labels")  # fmt: skip
    return hclg, labels


def make_decoding_graph(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree | None = None,
                        transitions: Transitions | None = None, self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE
                        ) -> kaldifst.StdVectorFst:
    """HCLG alone (:func:`make_hclg`)."""
    return make_hclg(lang, g, tree, transitions, self_loop_scale)[0]


def map_oov(transcripts: Iterable[str], lang: Lang) -> list[str]:
    """The transcripts with words outside the lexicon replaced by ``lang.config.oov_word``."""
    oov, vocab = lang.config.oov_word, set(lang.lexicon)
    return [" ".join(w if w in vocab else oov for w in line.split()) for line in transcripts]


def context_dependency(lang: Lang, tree: ContextTree | None, transitions: Transitions | None) -> str:
    """The graph's context dependency, as its cache key holds it: ``"monophone"`` for the lang's own pdfs
    and transitions (no tree; or a monophone tree with the lang's pdfs and transitions equal to the
    topology's: the same graph), else ``"N=<N> P=<P> tree=<sha256> transitions=<sha256 or lang>"``, the
    sha256 of what their ``save`` writes."""
    states = [(lang.phone_to_id[p], s) for p in lang.phones for s in range(lang.num_states(p))]
    same_tree = tree is None or (is_monophone(tree) and tree.num_pdfs == lang.num_pdfs and all(
        tree.pdf((p,), s) == lang.pdf_ids(lang.phone_symbols[p])[s] for p, s in states))  # fmt: skip
    same_transitions = transitions is None or all(
        np.allclose(transitions.log_probs(p, s), lang.transition_logprobs(lang.phone_symbols[p])[s], rtol=0,
                    atol=1e-9) for p, s in states)  # fmt: skip
    if same_tree and same_transitions:
        return CONTEXT_DEPENDENCY
    tree = tree if tree is not None else MonophoneTree(lang)
    tree_sha = "lang" if same_tree else saved_sha256(tree)
    transitions_sha = "lang" if same_transitions else saved_sha256(transitions)
    return f"N={tree.context_width} P={tree.central_position} tree={tree_sha} transitions={transitions_sha}"


def graph_build_info(lang: Lang, texts: Sequence[str], order: int, tree: ContextTree | None = None,
                     transitions: Transitions | None = None, self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE) -> dict:
    """What a decoding graph is built from (its cache key is the sha256 of this dict): ``texts`` are the
    LM transcripts after :func:`map_oov`; ``tree``, ``transitions`` those of :func:`make_hclg`. The lang
    enters by the GMM systems' ``asr_kd.hmm.system.lang_sha256`` (phones, topology, lexicon, config: the
    words and pdfs follow from them, and the config holds the optional-silence probability of L)."""
    from asr_kd.hmm.system import lang_sha256

    return {"format_version": GRAPH_FORMAT_VERSION, "lm_order": int(order), "transcripts_sha256": transcripts_sha256(texts),
            "lexicon_sha256": lang.lexicon_sha256, "lang_sha256": lang_sha256(lang),
            "context_dependency": context_dependency(lang, tree, transitions),
            "self_loop_scale": float(self_loop_scale)}  # fmt: skip


def graph_key(info: dict) -> str:
    """The cache key of a graph's build info: the first 16 hex digits of the sha256 of its canonical JSON."""
    fields = {k: info[k] for k in ("format_version", "lm_order", "transcripts_sha256", "lexicon_sha256",
                                   "lang_sha256", "context_dependency")}  # fmt: skip
    if info.get("self_loop_scale", 1.0) != 1.0:  # graphs of scale 1 keep the key they had before the scale
        fields["self_loop_scale"] = info["self_loop_scale"]
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
                          force: bool = False, tree: ContextTree | None = None,
                          transitions: Transitions | None = None,
                          self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE) -> tuple[Path, dict]:  # fmt: skip
    """The path and info of the ``order``-gram HCLG of ``lang_dir`` on ``transcripts``: the cached
    ``HCLG-<key>.fst`` when it verifies (:func:`read_graph_info`), else built and cached (module docstring).

    ``tree``, ``transitions``: the acoustic model's HMMs (:func:`make_hclg`; None: the lang's monophones);
    ``self_loop_scale``: the scale of their transition costs in the graph (:func:`make_hclg`).
    The info also holds ``num_pdfs`` and ``extra_label_pdfs`` (the pdf of each input label above
    num_pdfs, :class:`~asr_kd.decode.context.HmmLabels`; read by :func:`graph_label_pdfs`)."""
    from asr_kd.data.lang import Lang

    lang_dir = Path(lang_dir)
    lang = Lang.load(lang_dir)
    texts = map_oov(transcripts, lang)
    info = graph_build_info(lang, texts, order, tree, transitions, self_loop_scale)
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
    hclg, labels = make_hclg(lang, make_g(arpa, lang, lang_dir), tree, transitions, self_loop_scale)
    with atomic_output(graph_path) as tmp:
        if not hclg.write(str(tmp)):
            raise OSError(f"could not write {graph_path}")
    info.update(key=key, num_states=hclg.num_states, num_arcs=sum(hclg.num_arcs(s) for s in range(hclg.num_states)),
                num_transcripts=len(texts), num_bytes=graph_path.stat().st_size, num_pdfs=labels.num_pdfs,
                extra_label_pdfs=labels.extra_pdfs)  # fmt: skip
    write_json(info_path, info)
    return graph_path, info


def graph_label_pdfs(info: dict) -> list[int]:
    """The pdf of each HCLG input label above ``num_pdfs`` (none for a monophone graph; an older graph's
    info has no such field: none)."""
    return [int(p) for p in info.get("extra_label_pdfs") or []]


def build_decoding_graph(lang_dir: Path | str, transcripts: Sequence[str], order: int = 3, force: bool = False,
                         tree: ContextTree | None = None, transitions: Transitions | None = None,
                         self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE) -> kaldifst.StdVectorFst:  # fmt: skip
    """The ``order``-gram HCLG of ``lang_dir`` on ``transcripts``, read if cached, else built
    (:func:`ensure_decoding_graph`; also writes ``lm-<key>.arpa`` and its G, ``lm-<key>.G.fst``)."""
    graph_path, _ = ensure_decoding_graph(lang_dir, transcripts, order, force, tree, transitions, self_loop_scale)
    return _kaldifst().StdVectorFst.read(str(graph_path))
